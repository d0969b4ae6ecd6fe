//! `GET /courses/{course_id}/events`: tier SC, filters, paging and order; deleted courses.

use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::EventsApi;
use crate::fixtures::{self, make_lab_admin};
use crate::helpers::{ReplyExt, TestApp, assert_keys, data_strings};

fn event_types(page: &Value) -> Vec<String> {
    data_strings(page, "event_type")
}

#[sqlx::test]
async fn events_listing_pages_filters_and_orders(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = fixtures::course_with_students(&app, "Listing", 2).await;
    let id = course.course_id;
    let admin = app.as_admin();
    // course_created, course_activated, seats_provisioned, then per student
    // enrolment_created, email_queued, email_sent.
    let all = admin.get_events(id, "?page_size=100").await.ok_body();
    assert_eq!(all["pagination"]["total_items"], 9, "{all}");
    assert_keys(&all, &["data", "pagination"]);
    assert_keys(
        &all["data"][0],
        &[
            "id",
            "course_id",
            "event_type",
            "occurred_at",
            "actor",
            "enrolment_id",
            "seat_id",
            "project_id",
            "student_id",
            "amount",
            "before",
            "after",
            "data",
            "request_id",
        ],
    );
    assert_keys(&all["data"][0]["actor"], &["role", "id", "email"]);
    // Newest first by default, ties by id in the same direction.
    let desc: Vec<i64> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let mut sorted = desc.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(desc, sorted);
    assert_eq!(event_types(&all).last().unwrap(), "course_created");

    let asc = admin
        .get_events(id, "?order_direction=asc&page_size=100")
        .await
        .ok_body();
    let mut reversed = event_types(&all);
    reversed.reverse();
    assert_eq!(event_types(&asc), reversed);
    assert_eq!(
        event_types(&asc)[..3],
        ["course_created", "course_activated", "seats_provisioned"]
    );

    // The page_size quirk: the number of items returned.
    let last = admin.get_events(id, "?page=3&page_size=4").await.ok_body();
    assert_eq!(last["pagination"]["page"], 3);
    assert_eq!(last["pagination"]["page_size"], 1);
    assert_eq!(last["pagination"]["total_items"], 9);
    let beyond = admin.get_events(id, "?page=9&page_size=4").await.ok_body();
    assert_eq!(beyond["data"], Value::Array(Vec::new()));
    assert_eq!(beyond["pagination"]["page_size"], 0);

    // Filters: an enrolment, a seat, a list of types (repeated and comma-separated).
    let e = students[1].enrolment_id;
    let mine = admin
        .get_events(id, &format!("?enrolment_id={e}&order_direction=asc"))
        .await
        .ok_body();
    assert_eq!(
        event_types(&mine),
        ["enrolment_created", "email_queued", "email_sent"]
    );
    let seat = admin
        .get_events(id, &format!("?seat_id={}", students[0].seat_id))
        .await
        .ok_body();
    assert_eq!(event_types(&seat), ["enrolment_created"]);
    let typed = admin
        .get_events(
            id,
            "?event_type=course_created,email_sent&event_type=seats_provisioned",
        )
        .await
        .ok_body();
    assert_eq!(typed["pagination"]["total_items"], 4);

    // Date bounds are inclusive.
    let created_at = asc["data"][0]["occurred_at"].as_str().unwrap().to_owned();
    let encoded = created_at.replace(':', "%3A").replace('+', "%2B");
    let until = admin
        .get_events(id, &format!("?occurred_before={encoded}"))
        .await
        .ok_body();
    assert_eq!(event_types(&until), ["course_created"]);
    let after = admin
        .get_events(id, &format!("?occurred_after={encoded}"))
        .await
        .ok_body();
    assert_eq!(after["pagination"]["total_items"], 9);
    let future = (Utc::now() + TimeDelta::hours(1))
        .to_rfc3339()
        .replace('+', "%2B");
    let none = admin
        .get_events(id, &format!("?occurred_after={future}"))
        .await
        .ok_body();
    assert_eq!(none["pagination"]["total_items"], 0);

    // Bad values.
    let bad = admin
        .get_events(id, "?event_type=course_created,bogus")
        .await
        .invalid();
    assert!(
        bad["details"]["event_type"]
            .as_str()
            .unwrap()
            .starts_with("Must be one of: course_created, course_updated"),
        "{bad}"
    );
    for (query, key) in [
        ("?page=0", "page"),
        ("?page_size=101", "page_size"),
        ("?enrolment_id=x", "enrolment_id"),
        ("?order_direction=up", "order_direction"),
        ("?occurred_after=yesterday", "occurred_after"),
    ] {
        let body = admin.get_events(id, query).await.invalid();
        assert!(body["details"][key].is_string(), "{query}: {body}");
    }
}

#[sqlx::test]
async fn course_admin_reads_their_course_and_others_are_403(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Mine").await;
    let page = app
        .as_faculty()
        .get_events(course.course_id, "")
        .await
        .ok_body();
    assert_eq!(page["pagination"]["total_items"], 2);

    // other_lab_admin_is_403: a lab admin of another course.
    let other = fixtures::create_active_course(&app, "Other").await;
    app.as_faculty()
        .get_events(other.course_id, "")
        .await
        .not_allowed();
    // student_is_403, also for a malformed or unknown id.
    let student = app.as_user(&app.users.students[0]);
    student.get_events(course.course_id, "").await.not_allowed();
    student.get_events("not-a-uuid", "").await.not_allowed();
    student.get_events(Uuid::new_v4(), "").await.not_allowed();
    app.anonymous()
        .get_events(course.course_id, "")
        .await
        .unauthenticated();
    // A service admin gets the 422 of a malformed id after the tier step.
    let bad = app.as_admin().get_events("not-a-uuid", "").await.invalid();
    assert_eq!(bad["details"]["course_id"], "Must be a UUID");
}

#[sqlx::test]
async fn events_survive_course_delete_and_service_admin_can_read_them(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::create_draft_course(&app, "Gone", None, None, None).await;
    make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    let id = course.course_id;
    app.as_admin().delete_course(id).await.ok_body();

    let page = app
        .as_admin()
        .get_events(id, "?order_direction=asc")
        .await
        .ok_body();
    assert_eq!(
        event_types(&page),
        [
            "course_created",
            "course_voided",
            "course_budget_depleted",
            "course_deleted"
        ]
    );
    // course_admin_gets_403_after_delete
    app.as_faculty().get_events(id, "").await.not_allowed();
    // service_admin_unknown_course_without_events_is_404
    let unknown = Uuid::new_v4();
    app.as_admin().get_events(unknown, "").await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        &format!("Course {unknown} not found"),
    );
}
