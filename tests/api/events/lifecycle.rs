//! A course's whole life, read back from the audit log: every event type of the flows that
//! exist so far, with the actor, ids, amount and before/after each records.

use chrono::{TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{EventRow, EventsApi, stored};
use crate::fixtures::{self, make_lab_admin};
use crate::helpers::{ReplyExt, TestApp, exec, uuid_of};

fn of_type<'e>(events: &'e [EventRow], event_type: &str) -> Vec<&'e EventRow> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

fn one<'e>(events: &'e [EventRow], event_type: &str) -> &'e EventRow {
    let found = of_type(events, event_type);
    assert_eq!(found.len(), 1, "{event_type}: {events:#?}");
    found[0]
}

#[sqlx::test]
async fn lifecycle_writes_every_event_type_so_far(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (admin, faculty, student) = (
        app.users.admin.clone(),
        app.users.faculty.clone(),
        app.users.students[0].clone(),
    );
    let now = Utc::now();

    // A source course whose drop window has passed, with two seats to transfer.
    let source = fixtures::create_active_course(&app, "Audit source").await;
    fixtures::provision(&app, source.course_id, 2).await;
    exec(
        &db,
        "UPDATE course SET last_drop_date = now() - interval '1 minute' WHERE id = $1",
        source.course_id,
    )
    .await;

    // The audited course starts tomorrow: a claim now is waitlisted.
    let course = fixtures::create_draft_course(
        &app,
        "Audit",
        Some(now + TimeDelta::days(1)),
        Some(now + TimeDelta::days(3)),
        Some(now + TimeDelta::days(60)),
    )
    .await;
    let id = course.course_id;
    let end = now + TimeDelta::days(90);
    app.as_admin()
        .patch_course(id, &json!({ "end_date": end }))
        .await
        .ok_body();
    fixtures::activate_course(&app, id).await;
    app.as_admin()
        .transfer(
            &json!({"source_course_id": source.course_id, "target_course_id": id, "amount": 1}),
        )
        .await
        .ok_body();
    fixtures::provision(&app, id, 1).await;
    make_lab_admin(&app, course.vlab_id, &faculty);
    let assigned = fixtures::assign(&app, id, 1).await.remove(0);
    let enrolment = assigned.enrolment_id;

    app.as_user(&student).claim(enrolment).await.ok_body();
    // The course starts: the worker promotes the waitlisted student.
    exec(
        &db,
        "UPDATE course SET start_date = now() - interval '1 minute' WHERE id = $1",
        id,
    )
    .await;
    vlab_courses::jobs::worker::run_pass(&app.services()).await;
    app.as_user(&student)
        .post_empty(&format!("/courses/{id}/enrolment/activate"))
        .await
        .ok_body();

    // One coherent timeline for the student, before the course goes away.
    let timeline = app
        .as_admin()
        .get_timeline(id, enrolment, "")
        .await
        .ok_body();
    let student_types: Vec<&str> = timeline["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        student_types,
        [
            "enrolment_created",
            "email_queued",
            "email_sent",
            "enrolment_claimed",
            "access_granted",
            "access_granted",
            "enrolment_activated",
        ]
    );

    let seat = assigned.seat_id;
    app.as_faculty().post_drop(id, &[seat]).await.ok_body();
    app.as_admin().void_course(id).await.ok_body();
    let deleted = app.as_admin().delete_course(id).await.ok_body();
    assert_eq!(deleted["message"], "Course deleted successfully");

    let events = stored(&db, id).await;
    let all: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        all,
        [
            "course_created",
            "course_updated",
            "course_activated",
            "seats_transferred_in",
            "seats_provisioned",
            "enrolment_created",
            "email_queued",
            "email_sent",
            "enrolment_claimed",
            "access_granted",
            "access_granted",
            "enrolment_activated",
            "enrolment_dropped",
            "access_removed",
            "course_voided",
            "course_budget_depleted",
            "course_deleted",
        ]
    );
    // Every event of a request carries its request id; worker events the worker's run id.
    assert!(events.iter().all(|e| e.request_id.is_some()), "{events:#?}");

    // Service-admin actions.
    for event_type in [
        "course_created",
        "course_updated",
        "course_activated",
        "seats_transferred_in",
        "seats_provisioned",
        "course_voided",
        "course_budget_depleted",
        "course_deleted",
    ] {
        let e = one(&events, event_type);
        assert_eq!(e.actor_role, "service_admin", "{e:?}");
        assert_eq!(e.actor_id, Some(admin.id), "{e:?}");
        assert_eq!(
            e.actor_email.as_deref(),
            Some(admin.email.as_str()),
            "{e:?}"
        );
        assert_eq!(e.enrolment_id, None, "{e:?}");
    }
    let created = one(&events, "course_created");
    assert_eq!(created.amount, Some(Decimal::from(200)));
    assert_eq!(
        created.after_values.as_ref().unwrap()["institution_id"],
        course.institution_id.to_string()
    );
    let updated = one(&events, "course_updated");
    assert_eq!(keys(updated.after_values.as_ref()), ["end_date"]);
    assert_ne!(
        updated.before_values.as_ref().unwrap()["end_date"],
        updated.after_values.as_ref().unwrap()["end_date"]
    );
    let activated = one(&events, "course_activated");
    assert_eq!(activated.before_values, Some(json!({"status": "draft"})));
    assert_eq!(activated.after_values, Some(json!({"status": "active"})));
    let moved_in = one(&events, "seats_transferred_in");
    assert_eq!(moved_in.data["count"], 1);
    assert_eq!(
        moved_in.data["other_course_id"],
        source.course_id.to_string()
    );
    let moved_out = one(
        &stored(&db, source.course_id).await,
        "seats_transferred_out",
    )
    .clone();
    assert_eq!(moved_out.data["seat_ids"], moved_in.data["seat_ids"]);
    assert_eq!(moved_out.data["other_course_id"], id.to_string());
    let provisioned = one(&events, "seats_provisioned");
    assert_eq!(provisioned.data["count"], 1);
    assert_eq!(provisioned.data["credit_value"], 200);
    assert_eq!(
        one(&events, "course_voided").after_values,
        Some(json!({"status": "voided"}))
    );
    let depleted = one(&events, "course_budget_depleted");
    assert_eq!(depleted.data, json!({"reason": "void"}));
    assert!(
        depleted.amount.is_some(),
        "the lab deplete states its total"
    );
    let purge = one(&events, "course_deleted");
    assert_eq!(
        purge.data,
        json!({"seats_purged": 2, "enrolments_purged": 1})
    );

    // The student's events.
    let created = one(&events, "enrolment_created");
    assert_eq!(created.actor_role, "course_admin");
    assert_eq!(created.actor_id, Some(faculty.id));
    assert_eq!(created.enrolment_id, Some(enrolment));
    assert_eq!(created.seat_id, Some(seat));
    assert_eq!(created.project_id, Some(assigned.project_id));
    assert_eq!(created.student_id.as_deref(), Some("stu-1"));
    assert_eq!(created.amount, Some(Decimal::from(200)));
    assert_eq!(created.data["source"], "assign");
    assert_eq!(created.data["waitlisted_group"], true);
    let queued = one(&events, "email_queued");
    assert_eq!(queued.data["recipient"], "stu-1@uni.org");
    assert_eq!(queued.data["kind"], "enrolment_claim");
    assert_eq!(queued.data["origin"], "assign");
    let sent = one(&events, "email_sent");
    assert_eq!(
        sent.actor_role, "course_admin",
        "the first attempt is the caller's"
    );
    assert_eq!(sent.data["attempts"], 1);
    assert_eq!(sent.data["outbox_id"], queued.data["outbox_id"]);
    let claimed = one(&events, "enrolment_claimed");
    assert_eq!(claimed.actor_role, "student");
    assert_eq!(claimed.actor_id, Some(student.id));
    assert_eq!(
        claimed.after_values,
        Some(json!({"claimed_by": student.id, "claimed_by_email": student.email}))
    );
    let granted = of_type(&events, "access_granted");
    assert_eq!(granted[0].actor_role, "student");
    assert_eq!(
        granted[0].before_values,
        Some(json!({"access_level": "none"}))
    );
    assert_eq!(
        granted[0].after_values,
        Some(json!({"access_level": "waitlisted"}))
    );
    assert_eq!(granted[0].data, json!({"trigger": "claim"}));
    assert_eq!(granted[1].actor_role, "system");
    assert_eq!(granted[1].actor_id, None);
    assert_eq!(
        granted[1].before_values,
        Some(json!({"access_level": "waitlisted"}))
    );
    assert_eq!(
        granted[1].after_values,
        Some(json!({"access_level": "member"}))
    );
    assert_eq!(granted[1].data, json!({"trigger": "worker"}));
    assert!(
        granted[1]
            .request_id
            .as_deref()
            .unwrap()
            .starts_with("worker-")
    );
    let activated = one(&events, "enrolment_activated");
    assert_eq!(activated.actor_role, "student");
    assert!(activated.after_values.as_ref().unwrap()["activated_at"].is_string());
    let dropped = one(&events, "enrolment_dropped");
    assert_eq!(dropped.actor_role, "course_admin");
    assert_eq!(dropped.actor_id, Some(faculty.id));
    assert_eq!(dropped.seat_id, Some(seat));
    assert_eq!(dropped.amount, Some(Decimal::from(200)));
    assert_eq!(
        dropped.before_values,
        Some(
            json!({"is_dropped": false, "seat": {"enrolment_id": enrolment, "is_consumed": false, "previously_dropped": false}})
        )
    );
    assert_eq!(
        dropped.after_values,
        Some(
            json!({"is_dropped": true, "seat": {"enrolment_id": null, "is_consumed": false, "previously_dropped": true}})
        )
    );
    assert_eq!(dropped.data["reason"], "faculty");
    assert_eq!(dropped.data["is_early"], true);
    assert_eq!(dropped.data["seat_recovered"], true);
    assert_eq!(dropped.data["prior_in_doubt"], false);
    let removed = one(&events, "access_removed");
    assert_eq!(
        removed.actor_role, "course_admin",
        "the drop's immediate attempt"
    );
    assert_eq!(
        removed.before_values,
        Some(json!({"access_level": "member"}))
    );
    assert_eq!(removed.after_values, Some(json!({"access_level": "none"})));
    assert_eq!(removed.data, json!({"attempts": 1}));

    // The service admin reads the deleted course's log through the API, oldest first.
    let page = app
        .as_admin()
        .get_events(id, "?order_direction=asc&page_size=100")
        .await
        .ok_body();
    let listed: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(listed, all);
    assert_eq!(page["pagination"]["total_items"], all.len());
    let first = &page["data"][0];
    assert_eq!(first["actor"]["role"], "service_admin");
    assert_eq!(first["amount"], 200.0);
    assert_eq!(uuid_of(&first["course_id"]), id);
}

fn keys(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[sqlx::test]
async fn the_expiry_job_records_its_changes_as_the_system(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = fixtures::course_with_students(&app, "Ending", 1).await;
    let id = course.course_id;
    exec(
        &db,
        "UPDATE course SET start_date = now() - interval '10 days',
                last_drop_date = now() - interval '5 days', end_date = now() - interval '1 minute'
         WHERE id = $1",
        id,
    )
    .await;
    let mut lock = db.acquire().await.unwrap();
    vlab_courses::jobs::expiry::run(&app.services(), &mut lock, Utc::now())
        .await
        .unwrap();

    let events = stored(&db, id).await;
    let dropped = one(&events, "enrolment_dropped");
    assert_eq!(dropped.actor_role, "system");
    assert_eq!(dropped.actor_id, None);
    assert_eq!(dropped.enrolment_id, Some(students[0].enrolment_id));
    assert_eq!(dropped.data["reason"], "expiry");
    assert_eq!(dropped.data["is_early"], false);
    let removed = one(&events, "access_removed");
    assert_eq!(removed.actor_role, "system");
    let depleted = one(&events, "course_budget_depleted");
    assert_eq!(depleted.actor_role, "system");
    assert_eq!(depleted.data, json!({"reason": "expiry"}));
}
