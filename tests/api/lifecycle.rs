//! The seed's whole course lifecycle through HTTP only (plus emulator inspection): lab,
//! template, course, dates, activation, the faculty invite through its real e-mail, seats,
//! assignment, the claim link from the captured e-mail, claim, activation, drop, void, delete.

use std::str::FromStr;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::CapturedMessage;

use crate::helpers::{TestApp, json};

fn id(value: &Value) -> Uuid {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not an id: {value}"))
        .parse()
        .unwrap()
}

async fn ok(response: reqwest::Response, step: &str) -> Value {
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::OK, "{step}: {body}");
    body
}

/// The value of `key` in the query of the first link of `message` that has it.
fn link_param(message: &CapturedMessage, key: &str) -> String {
    message
        .links
        .iter()
        .filter_map(|link| url::Url::parse(link).ok())
        .find_map(|url| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| panic!("no {key} link in {:?}", message.links))
}

async fn message_to(app: &TestApp, recipient: &str, total: usize) -> CapturedMessage {
    app.smtp
        .wait_for_messages(total, Duration::from_secs(10))
        .await
        .into_iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == recipient))
        .unwrap_or_else(|| panic!("no e-mail to {recipient}"))
}

#[sqlx::test]
async fn a_course_runs_from_creation_to_deletion(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.admin_token();
    let faculty = &app.users.faculty;
    let (ada, bob) = (&app.users.students[0], &app.users.students[1]);

    // The service admin sets up the course lab, its template and the course.
    let lab = ok(
        app.post(
            "/virtual-labs",
            Some(&admin),
            &json!({"name": "Neuro 101", "description": "Course lab", "entity": "EPFL", "is_course": true}),
        )
        .await,
        "create lab",
    )
    .await;
    let vlab_id = id(&lab["id"]);
    let template = ok(
        app.post(
            &format!("/virtual-labs/{vlab_id}/projects"),
            Some(&admin),
            &json!({"name": "Template"}),
        )
        .await,
        "create template",
    )
    .await;
    let institutions = ok(
        app.get("/institutions/_search?q=Open", Some(&admin)).await,
        "institutions",
    )
    .await;
    let course = ok(
        app.post(
            "/courses",
            Some(&admin),
            &json!({"virtual_lab_id": vlab_id, "template_project_id": template["id"],
                    "institution_id": institutions["data"][0]["id"]}),
        )
        .await,
        "create course",
    )
    .await;
    let course_id = id(&course["data"]["id"]);
    assert_eq!(course["data"]["status"], "draft");
    let now = Utc::now();
    ok(
        app.request(
            Method::PATCH,
            &format!("/courses/{course_id}"),
            Some(&admin),
            Some(&json!({"start_date": now - TimeDelta::days(1),
                         "last_drop_date": now + TimeDelta::days(7),
                         "end_date": now + TimeDelta::days(90)})),
        )
        .await,
        "set dates",
    )
    .await;
    let active = ok(
        app.post(
            &format!("/courses/{course_id}/activate"),
            Some(&admin),
            &json!({}),
        )
        .await,
        "activate course",
    )
    .await;
    assert_eq!(active["data"]["status"], "active");

    // Faculty joins through the real invite e-mail.
    ok(
        app.post(
            &format!("/virtual-labs/{vlab_id}/invites"),
            Some(&admin),
            &json!({"email": faculty.email, "role": "admin"}),
        )
        .await,
        "invite faculty",
    )
    .await;
    let invite = message_to(&app, &faculty.email, 1).await;
    let invite_token = link_param(&invite, "token");
    let faculty_token = app.token(faculty);
    let accepted = ok(
        app.post(
            &format!("/invites?token={invite_token}"),
            Some(&faculty_token),
            &json!({}),
        )
        .await,
        "accept invite",
    )
    .await;
    assert_eq!(accepted["data"]["status"], "accepted");
    assert!(
        app.keycloak
            .user_group_paths(faculty.id)
            .contains(&format!("/vlab/{vlab_id}/admin"))
    );

    // Seats, then two students; the claim links arrive by e-mail.
    ok(
        app.post(
            "/seats/provision",
            Some(&admin),
            &json!({"course_id": course_id, "number_of_seats": 2}),
        )
        .await,
        "provision",
    )
    .await;
    let assigned = ok(
        app.post(
            &format!("/seats/courses/{course_id}/assign"),
            Some(&faculty_token),
            &json!({"students": [{"student_id": "ada", "email": ada.email},
                                 {"student_id": "bob", "email": bob.email}]}),
        )
        .await,
        "assign",
    )
    .await;
    let results = assigned["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .all(|r| r["assignment_successful"] == true && r["email_sent"] == true),
        "{assigned}"
    );
    let ada_project = id(&results[0]["project_id"]);
    let ada_seat = id(&results[0]["seat_id"]);
    let bob_project = id(&results[1]["project_id"]);
    assert_eq!(
        app.accounting.balance(ada_project),
        Some(Decimal::from(200))
    );
    let claim_mail = message_to(&app, &ada.email, 3).await;
    let enrolment_id: Uuid = link_param(&claim_mail, "enrolment_id").parse().unwrap();
    assert_eq!(enrolment_id, id(&results[0]["enrolment_id"]));

    // Ada claims and is activated: she can use her project and the lab.
    let ada_token = app.token(ada);
    ok(
        app.post(
            "/courses/claim",
            Some(&ada_token),
            &json!({"enrolment_id": enrolment_id}),
        )
        .await,
        "claim",
    )
    .await;
    let activated = ok(
        app.post("/courses/activate-enrolments", Some(&ada_token), &json!({}))
            .await,
        "activate enrolments",
    )
    .await;
    assert_eq!(activated["results"][0]["activated"], true, "{activated}");
    let access = [
        format!("/proj/{vlab_id}/{ada_project}/member"),
        format!("/vlab/{vlab_id}/member"),
    ];
    let ada_groups = app.keycloak.user_group_paths(ada.id);
    assert!(
        access.iter().all(|g| ada_groups.contains(g)),
        "{ada_groups:?}"
    );
    ok(
        app.get(
            &format!("/virtual-labs/{vlab_id}/projects/{ada_project}"),
            Some(&app.token(ada)),
        )
        .await,
        "ada opens her project",
    )
    .await;

    // Ada uses 30 credits, then faculty drops her within the window: the seat comes back.
    app.accounting
        .spend(ada_project, Decimal::from_str("30").unwrap())
        .unwrap();
    let dropped = ok(
        app.post(
            &format!("/seats/courses/{course_id}/drop"),
            Some(&faculty_token),
            &json!({"seat_ids": [ada_seat]}),
        )
        .await,
        "drop",
    )
    .await;
    assert_eq!(
        dropped,
        json!({"results": [{"seat_id": ada_seat, "is_dropped": true, "error": null,
                            "seat_recovered": true, "access_removed": true}]})
    );
    let ada_groups = app.keycloak.user_group_paths(ada.id);
    assert!(
        !access.iter().any(|g| ada_groups.contains(g)),
        "{ada_groups:?}"
    );
    assert_eq!(app.accounting.balance(ada_project), Some(Decimal::ZERO));
    let enrolments = ok(
        app.get(
            &format!("/courses/{course_id}/enrolments"),
            Some(&faculty_token),
        )
        .await,
        "enrolments",
    )
    .await;
    // Both students were assigned in one request, so they share `created_at`; find Ada by id.
    let ada_enrolment = enrolments["enrolments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == enrolment_id.to_string())
        .expect("Ada's enrolment is listed");
    assert_eq!(ada_enrolment["is_dropped"], true);
    assert_eq!(ada_enrolment["drop_state"], "done");
    assert_eq!(ada_enrolment["seat"], Value::Null);
    let seats = ok(
        app.get(&format!("/seats/courses/{course_id}"), Some(&faculty_token))
            .await,
        "seats",
    )
    .await;
    let seat = seats["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == ada_seat.to_string())
        .unwrap();
    assert_eq!(
        (&seat["enrolment_id"], &seat["previously_dropped"]),
        (&Value::Null, &json!(true))
    );
    // Faculty keeps the course lab and the projects.
    assert!(
        app.keycloak
            .user_group_paths(faculty.id)
            .contains(&format!("/proj/{vlab_id}/{ada_project}/admin"))
    );

    // The course is voided (Bob is dropped, the lab emptied), then deleted.
    let voided = ok(
        app.post(
            &format!("/courses/{course_id}/void"),
            Some(&admin),
            &json!({}),
        )
        .await,
        "void",
    )
    .await;
    assert_eq!(
        voided["data"]["void_summary"],
        json!({"enrolments_dropped": 1, "enrolments_failed": 0,
               "access_removals_pending": 0, "budget_depleted": true})
    );
    assert_eq!(app.accounting.balance(bob_project), Some(Decimal::ZERO));
    assert_eq!(app.accounting.balance(vlab_id), Some(Decimal::ZERO));
    let deleted = ok(
        app.request(
            Method::DELETE,
            &format!("/courses/{course_id}"),
            Some(&admin),
            None,
        )
        .await,
        "delete",
    )
    .await;
    assert_eq!(
        deleted,
        json!({"message": "Course deleted successfully", "data": null})
    );
    let (status, _) = app.with_token(&admin).get_course(course_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The lab stays, and may get a new course.
    ok(
        app.get(&format!("/virtual-labs/{vlab_id}"), Some(&admin))
            .await,
        "the lab is kept",
    )
    .await;
}
