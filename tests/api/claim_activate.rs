//! `POST /courses/claim`, `POST /courses/activate-enrolments` and
//! `GET /courses/{course_id}/enrolments` (api.md §4.5.8–§4.5.10, rules.md §4.12–§4.13).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{self, ActiveCourse, Assigned};
use crate::helpers::{
    ReplyExt, TestApp, assert_error_body, assert_keys, exec, fetch_row, fetch_scalar, json,
    one_wins,
};

/// A course with faculty as lab admin and `n` assigned students.
async fn enrolled(app: &TestApp, name: &str, n: usize) -> (ActiveCourse, Vec<Assigned>) {
    let course = fixtures::course_with_faculty(app, name).await;
    fixtures::provision(app, course.course_id, n).await;
    let assigned = fixtures::assign(app, course.course_id, n).await;
    (course, assigned)
}

/// A drop of the enrolment has started (a `depleting` drop record, as D1 writes it).
async fn start_drop(app: &TestApp, course: &ActiveCourse, student: &Assigned) {
    sqlx::query(
        "INSERT INTO enrolment_drop (enrolment_id, seat_id, course_id, project_id, reason,
             requested_at, is_early, state, deplete_in_doubt, lease_id, lease_until)
         VALUES ($1, $2, $3, $4, 'faculty', now(), true, 'depleting', true, gen_random_uuid(),
             now() + interval '5 minutes')",
    )
    .bind(student.enrolment_id)
    .bind(student.seat_id)
    .bind(course.course_id)
    .bind(student.project_id)
    .execute(&app.db)
    .await
    .unwrap();
}

async fn activated_at(app: &TestApp, enrolment_id: Uuid) -> Option<DateTime<Utc>> {
    fetch_scalar(
        &app.db,
        "SELECT activated_at FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await
}

#[sqlx::test]
async fn a_claim_binds_the_enrolment_to_the_caller(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = enrolled(&app, "Neuro 101", 1).await;
    let student = app.users.students[0].clone();
    let body = app
        .as_user(&student)
        .claim(assigned[0].enrolment_id)
        .await
        .ok_body();
    assert_eq!(body["message"], "Enrolment claimed successfully");
    let dates: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = fetch_row(
        &app.db,
        "SELECT start_date, end_date FROM course WHERE id = $1",
        course.course_id,
    )
    .await;
    let fmt = |d: Option<DateTime<Utc>>| {
        let d = d.unwrap();
        if d.timestamp_subsec_micros() == 0 {
            d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        } else {
            d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        }
    };
    let expected = json!({
        "id": assigned[0].enrolment_id, "course_id": course.course_id,
        "project_id": assigned[0].project_id, "contact_email": "stu-1@uni.org",
        "student_id": "stu-1", "claimed_by": student.id,
        "course": {
            "id": course.course_id, "virtual_lab_id": course.vlab_id,
            "virtual_lab_name": "Neuro 101", "institution_name": "Open Brain Institute",
            "start_date": fmt(dates.0), "end_date": fmt(dates.1)
        }
    });
    assert_eq!(body["data"], expected);
    assert_keys(
        &body["data"],
        &[
            "id",
            "course_id",
            "project_id",
            "contact_email",
            "student_id",
            "claimed_by",
            "course",
        ],
    );
    let claimed_by: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claimed_by FROM course_enrolment WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    assert_eq!(claimed_by, Some(student.id));
}

#[sqlx::test]
async fn the_claim_body_is_validated(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let token = app.student_token(0);
    for (body, message) in [
        (json!({}), "Field required"),
        (json!({"enrolment_id": "nope"}), "Must be a UUID"),
        (json!({"enrolment_id": null}), "Must not be null"),
    ] {
        let err = app
            .with_token(&token)
            .post("/courses/claim", &body)
            .await
            .invalid();
        assert_eq!(err["details"]["enrolment_id"], message);
    }
    app.anonymous()
        .post("/courses/claim", &json!({"enrolment_id": Uuid::new_v4()}))
        .await
        .unauthenticated();
    app.with_token(&token)
        .post("/courses/claim", &json!({"enrolment_id": Uuid::new_v4()}))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            "Enrolment not found",
        );
}

#[sqlx::test]
async fn claim_checks_drop_claim_course_and_uniqueness_in_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = enrolled(&app, "Neuro 101", 5).await;
    let [ada, bob] = [app.users.students[0].clone(), app.users.students[1].clone()];
    let conflict = |body: &Value, status: StatusCode, message: &str| {
        assert_error_body(body, status, StatusCode::CONFLICT, "INVALID_REQUEST");
        assert_eq!(body["message"], message);
        assert_eq!(body["details"], Value::Null);
    };

    // Dropped, by the flag or by a drop that has started.
    exec(
        &app.db,
        "UPDATE course_enrolment SET is_dropped = true WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    let (status, err) = app.as_user(&ada).claim(assigned[0].enrolment_id).await;
    conflict(&err, status, "This enrolment has been dropped");
    start_drop(&app, &course, &assigned[1]).await;
    let (status, err) = app.as_user(&ada).claim(assigned[1].enrolment_id).await;
    conflict(&err, status, "This enrolment has been dropped");

    // Claimed already: by another user, or by the caller.
    let (status, _) = app.as_user(&ada).claim(assigned[2].enrolment_id).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = app.as_user(&bob).claim(assigned[2].enrolment_id).await;
    conflict(&err, status, "This enrolment has already been claimed");
    let (status, err) = app.as_user(&ada).claim(assigned[2].enrolment_id).await;
    conflict(&err, status, "This enrolment has already been claimed");

    // One claimed, undropped enrolment per user and course.
    let (status, err) = app.as_user(&ada).claim(assigned[3].enrolment_id).await;
    conflict(
        &err,
        status,
        "You have already claimed another enrolment in this course",
    );
    exec(
        &app.db,
        "UPDATE course_enrolment SET is_dropped = true WHERE id = $1",
        assigned[2].enrolment_id,
    )
    .await;
    let (status, body) = app.as_user(&ada).claim(assigned[3].enrolment_id).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a dropped claim no longer counts: {body}"
    );

    // The course: ended, then not active (status is checked first).
    exec(
        &app.db,
        "UPDATE course SET end_date = now() - interval '1 second' WHERE id = $1",
        course.course_id,
    )
    .await;
    let (status, err) = app.as_user(&bob).claim(assigned[4].enrolment_id).await;
    conflict(&err, status, "Cannot claim enrolment: course has ended");
    exec(
        &app.db,
        "UPDATE course SET status = 'voided' WHERE id = $1",
        course.course_id,
    )
    .await;
    let (status, err) = app.as_user(&bob).claim(assigned[4].enrolment_id).await;
    conflict(
        &err,
        status,
        "Cannot claim enrolment: course is in 'voided' status",
    );
    // A claimed enrolment says so before the course status.
    let (status, err) = app.as_user(&bob).claim(assigned[3].enrolment_id).await;
    conflict(&err, status, "This enrolment has already been claimed");
}

#[sqlx::test]
async fn one_user_racing_two_claims_in_a_course_wins_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, assigned) = enrolled(&app, "Neuro 101", 6).await;
    for (round, pair) in assigned.chunks(2).enumerate() {
        let user = app.users.students[round].clone();
        let (first, second) = (app.as_user(&user), app.as_user(&user));
        let (a, b) = tokio::join!(
            first.claim(pair[0].enrolment_id),
            second.claim(pair[1].enrolment_id)
        );
        let (_, (_, loser)) = one_wins(&a, &b, StatusCode::CONFLICT);
        assert_eq!(
            loser["message"],
            "You have already claimed another enrolment in this course"
        );
        let claimed: i64 = fetch_scalar(
            &app.db,
            "SELECT count(*) FROM course_enrolment WHERE claimed_by = $1",
            user.id,
        )
        .await;
        assert_eq!(claimed, 1);
    }
}

#[sqlx::test]
async fn two_users_racing_for_one_enrolment_claim_it_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, assigned) = enrolled(&app, "Neuro 101", 1).await;
    let (ada, bob) = (app.users.students[0].clone(), app.users.students[1].clone());
    let (as_ada, as_bob) = (app.as_user(&ada), app.as_user(&bob));
    let (a, b) = tokio::join!(
        as_ada.claim(assigned[0].enrolment_id),
        as_bob.claim(assigned[0].enrolment_id)
    );
    let (won, _) = one_wins(&a, &b, StatusCode::CONFLICT);
    let winner = if std::ptr::eq(won, &a) {
        ada.id
    } else {
        bob.id
    };
    let claimed_by: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claimed_by FROM course_enrolment WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    assert_eq!(claimed_by, Some(winner));
}

#[sqlx::test]
async fn activation_grants_access_and_the_caller_sees_it_at_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = enrolled(&app, "Neuro 101", 1).await;
    let student = app.users.students[0].clone();
    let token = app.token(&student);
    let lab = format!("/virtual-labs/{}", course.vlab_id);
    // The same token is refused the lab first (and its groups are now cached).
    assert_eq!(
        app.get(&lab, Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );
    let (status, _) = app.with_token(&token).claim(assigned[0].enrolment_id).await;
    assert_eq!(status, StatusCode::OK);
    // The claim of a started course grants member access and drops the cached groups (W.3.2).
    app.with_token(&token).get(&lab).await.ok_body();

    let body = app.with_token(&token).activate_enrolments().await.ok_body();
    assert_eq!(
        body,
        json!({"results": [{"enrolment_id": assigned[0].enrolment_id, "activated": true,
                            "project_id": assigned[0].project_id, "error": null}]})
    );
    let paths = app.keycloak.user_group_paths(student.id);
    assert!(
        paths.contains(&format!(
            "/proj/{}/{}/member",
            course.vlab_id, assigned[0].project_id
        )),
        "{paths:?}"
    );
    assert!(
        paths.contains(&format!("/vlab/{}/member", course.vlab_id)),
        "{paths:?}"
    );
    assert!(activated_at(&app, assigned[0].enrolment_id).await.is_some());
    app.with_token(&token).get(&lab).await.ok_body();

    // Nothing is pending any more.
    let adds = app.keycloak.call_count("kc_add_member");
    let (status, body) = app.with_token(&token).activate_enrolments().await;
    assert_eq!((status, body), (StatusCode::OK, json!({"results": []})));
    assert_eq!(app.keycloak.call_count("kc_add_member"), adds);
    app.with_token("")
        .activate_enrolments()
        .await
        .unauthenticated();
}

#[sqlx::test]
async fn activation_waits_for_the_start_and_refuses_ended_or_inactive_courses(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let now = Utc::now();
    let student = app.users.students[0].clone();
    let token = app.token(&student);
    // Three courses, one enrolment each, claimed in this order.
    let future = fixtures::create_draft_course(
        &app,
        "Future lab",
        Some(now + chrono::Duration::days(1)),
        Some(now + chrono::Duration::days(7)),
        Some(now + chrono::Duration::days(90)),
    )
    .await;
    fixtures::activate_course(&app, future.course_id).await;
    fixtures::make_lab_admin(&app, future.vlab_id, &app.users.faculty);
    fixtures::provision(&app, future.course_id, 1).await;
    let later = fixtures::assign(&app, future.course_id, 1).await;
    let (ended, ended_students) = enrolled(&app, "Ended lab", 1).await;
    let (voided, voided_students) = enrolled(&app, "Voided lab", 1).await;
    let ids = [
        later[0].enrolment_id,
        ended_students[0].enrolment_id,
        voided_students[0].enrolment_id,
    ];
    for id in ids {
        let (status, body) = app.as_user(&student).claim(id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    exec(
        &app.db,
        "UPDATE course SET end_date = now() - interval '1 second' WHERE id = $1",
        ended.course_id,
    )
    .await;
    exec(
        &app.db,
        "UPDATE course SET status = 'voided' WHERE id = $1",
        voided.course_id,
    )
    .await;

    let adds = app.keycloak.call_count("kc_add_member");
    let (status, body) = app.with_token(&token).activate_enrolments().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected: Vec<Value> = ids
        .iter()
        .zip([
            "Course has not started yet",
            "Course has ended",
            "Course is in 'voided' status",
        ])
        .map(|(id, error)| json!({"enrolment_id": id, "activated": false, "project_id": null, "error": error}))
        .collect();
    assert_eq!(
        body["results"],
        Value::Array(expected),
        "in enrolment created_at order"
    );
    assert_eq!(
        app.keycloak.call_count("kc_add_member"),
        adds,
        "no Keycloak calls"
    );
    for id in ids {
        assert_eq!(activated_at(&app, id).await, None);
    }
    // They stay pending and come back on the next call.
    let (_, again) = app.with_token(&token).activate_enrolments().await;
    assert_eq!(again["results"].as_array().unwrap().len(), 3);
}

#[sqlx::test]
async fn a_keycloak_failure_leaves_the_enrolment_pending_for_the_next_call(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, assigned) = enrolled(&app, "Neuro 101", 1).await;
    let student = app.users.students[0].clone();
    let token = app.token(&student);
    app.as_user(&student).claim(assigned[0].enrolment_id).await;
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)));
    let body = app.with_token(&token).activate_enrolments().await.ok_body();
    assert_eq!(
        body["results"][0],
        json!({"enrolment_id": assigned[0].enrolment_id, "activated": false, "project_id": null,
               "error": "Failed to grant access \u{2014} please try again later"})
    );
    assert_eq!(activated_at(&app, assigned[0].enrolment_id).await, None);
    let (_, body) = app.with_token(&token).activate_enrolments().await;
    assert_eq!(body["results"][0]["activated"], true, "{body}");
    assert!(activated_at(&app, assigned[0].enrolment_id).await.is_some());
}

#[sqlx::test]
async fn a_drop_that_started_first_keeps_the_enrolment_out_of_activation(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = enrolled(&app, "Neuro 101", 1).await;
    let student = app.users.students[0].clone();
    app.as_user(&student).claim(assigned[0].enrolment_id).await;
    start_drop(&app, &course, &assigned[0]).await;
    let adds = app.keycloak.call_count("kc_add_member");
    let (status, body) = app.as_user(&student).activate_enrolments().await;
    assert_eq!((status, body), (StatusCode::OK, json!({"results": []})));
    assert_eq!(app.keycloak.call_count("kc_add_member"), adds);
}

/// The drop record is still `depleting`: the activation undoes nothing (W.5.8), the drop's own
/// D4 runs after it and removes the access.
#[sqlx::test]
async fn a_drop_that_wins_the_race_is_left_to_remove_the_access(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = enrolled(&app, "Neuro 101", 1).await;
    let student = app.users.students[0].clone();
    let token = app.token(&student);
    app.as_user(&student).claim(assigned[0].enrolment_id).await;
    // Authenticate once, so only the activation's own Keycloak calls are slowed below.
    app.get(&format!("/virtual-labs/{}", course.vlab_id), Some(&token))
        .await;

    app.keycloak
        .set_operation_latency("kc_add_member", Duration::from_millis(400));
    let adds = app.keycloak.call_count("kc_add_member");
    let removes = app.keycloak.call_count("kc_remove_member");
    let pending = {
        let (app_url, client, token) = (
            app.url("/courses/activate-enrolments"),
            app.client.clone(),
            token.clone(),
        );
        tokio::spawn(async move {
            json(
                client
                    .post(app_url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    };
    // Once the Keycloak additions are in flight, a drop starts.
    for _ in 0..100 {
        if app.keycloak.call_count("kc_add_member") >= adds + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start_drop(&app, &course, &assigned[0]).await;
    let (status, body) = pending.await.unwrap();
    app.keycloak
        .set_operation_latency("kc_add_member", Duration::ZERO);

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["results"][0],
        json!({"enrolment_id": assigned[0].enrolment_id, "activated": false, "project_id": null,
               "error": "This enrolment has been dropped"})
    );
    assert_eq!(app.keycloak.call_count("kc_remove_member"), removes);
    assert_eq!(activated_at(&app, assigned[0].enrolment_id).await, None);
    let state: String = fetch_scalar(
        &app.db,
        "SELECT state FROM enrolment_drop WHERE enrolment_id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    assert_eq!(state, "depleting");
    let lease: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT access_lease_id FROM course_enrolment WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    assert_eq!(lease, None, "the sync gave its lease back");
}

#[sqlx::test]
async fn a_course_admin_lists_every_enrolment_with_its_seat_and_drop_state(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = enrolled(&app, "Neuro 101", 3).await;
    let student = app.users.students[0].clone();
    fixtures::claim_and_activate(&app, assigned[0].enrolment_id, &student).await;
    start_drop(&app, &course, &assigned[1]).await;
    exec(
        &app.db,
        "UPDATE course_enrolment SET is_dropped = true WHERE id = $1",
        assigned[2].enrolment_id,
    )
    .await;

    let path = format!("/courses/{}/enrolments", course.course_id);
    let body = app.as_faculty().get(&path).await.ok_body();
    let listed = body["enrolments"].as_array().unwrap();
    let ids: Vec<&str> = listed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut expected: Vec<String> = assigned
        .iter()
        .map(|a| a.enrolment_id.to_string())
        .collect();
    // Assigned in one request: same created_at possible, then id order.
    let created: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT created_at FROM course_enrolment WHERE course_id = $1 ORDER BY created_at, id",
    )
    .bind(course.course_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(created.len(), 3);
    let ordered: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM course_enrolment WHERE course_id = $1 ORDER BY created_at, id",
    )
    .bind(course.course_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    expected.sort_by_key(|id| ordered.iter().position(|o| o == id));
    assert_eq!(ids, expected);

    let by_id = |id: Uuid| listed.iter().find(|e| e["id"] == id.to_string()).unwrap();
    let active = by_id(assigned[0].enrolment_id);
    assert_keys(
        active,
        &[
            "id",
            "course_id",
            "project_id",
            "contact_email",
            "student_id",
            "claimed_by",
            "activated_at",
            "is_dropped",
            "created_at",
            "seat",
            "drop_state",
            "access_level",
            "claimed_at",
            "claimed_by_email",
            "claim_email",
            "extra_credits",
        ],
    );
    assert_eq!(active["access_level"], "member");
    assert_eq!(by_id(assigned[1].enrolment_id)["access_level"], "none");
    assert_eq!(active["claimed_by"], student.id.to_string());
    assert!(active["activated_at"].is_string());
    assert_eq!(active["seat"]["id"], assigned[0].seat_id.to_string());
    assert_eq!(
        active["seat"]["enrolment_id"],
        assigned[0].enrolment_id.to_string()
    );
    assert_eq!(active["drop_state"], Value::Null);
    assert_eq!(by_id(assigned[1].enrolment_id)["drop_state"], "depleting");
    assert_eq!(by_id(assigned[1].enrolment_id)["is_dropped"], false);
    assert_eq!(by_id(assigned[2].enrolment_id)["is_dropped"], true);
    assert_eq!(by_id(assigned[2].enrolment_id)["drop_state"], Value::Null);

    for (p, token) in [
        (path.clone(), app.student_token(0)),
        (
            format!("/courses/{}/enrolments", Uuid::new_v4()),
            app.faculty_token(),
        ),
        ("/courses/nope/enrolments".to_owned(), app.faculty_token()),
    ] {
        app.with_token(&token).get(&p).await.not_allowed();
    }
}
