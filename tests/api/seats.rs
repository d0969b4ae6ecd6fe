//! Seat provisioning, batches, transfer and a course's seat list (api.md §4.6.1–§4.6.5).

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::fixtures::{self, ActiveCourse};
use crate::helpers::{
    ReplyExt, TestApp, assert_error_body, assert_keys, exec, fetch_scalar, keys_of,
};

fn ids(seats: &Value) -> Vec<String> {
    seats
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
}

fn instant(value: &Value) -> DateTime<Utc> {
    value.as_str().expect("datetime").parse().expect("rfc3339")
}

/// Moves the course's last drop date into the past (so it can be a transfer source).
async fn past_last_drop(app: &TestApp, course_id: Uuid) {
    exec(
        &app.db,
        "UPDATE course SET last_drop_date = now() - interval '1 hour' WHERE id = $1",
        course_id,
    )
    .await;
}

#[sqlx::test]
async fn provision_creates_one_batch_of_available_seats(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::create_active_course(&app, "Neuro 101").await;
    let before = Utc::now();
    let body = app.as_admin().provision(&json!({"course_id": course.course_id.to_string().to_uppercase(), "number_of_seats": "3"}))
    .await.ok_body();
    assert_eq!(body["message"], "Successfully provisioned 3 seats");
    let seats = body["data"]["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 3);
    let mut sorted = ids(&body["data"]["seats"]);
    sorted.sort();
    assert_eq!(ids(&body["data"]["seats"]), sorted, "ordered by id");
    assert_keys(
        &seats[0],
        &[
            "id",
            "course_id",
            "institution_id",
            "batch_id",
            "is_consumed",
            "previously_dropped",
            "enrolment_id",
            "credit_value",
            "expiry_date",
            "created_at",
        ],
    );
    for seat in seats {
        assert_eq!(seat["course_id"], course.course_id.to_string());
        assert_eq!(seat["institution_id"], course.institution_id.to_string());
        assert_eq!(seat["batch_id"], seats[0]["batch_id"]);
        assert_eq!(seat["created_at"], seats[0]["created_at"]);
        assert_eq!(seat["expiry_date"], seats[0]["expiry_date"]);
        assert_eq!(seat["is_consumed"], false);
        assert_eq!(seat["previously_dropped"], false);
        assert_eq!(seat["enrolment_id"], Value::Null);
        assert_eq!(seat["credit_value"], 200);
    }
    let created = instant(&seats[0]["created_at"]);
    assert!(created >= before - Duration::seconds(1) && created <= Utc::now());
    assert_eq!(
        instant(&seats[0]["expiry_date"]) - created,
        Duration::days(365)
    );

    let stored: i64 = fetch_scalar(&db, "SELECT count(*) FROM seat WHERE course_id = $1 AND reservation_id IS NULL AND NOT is_consumed", course.course_id).await;
    assert_eq!(stored, 3);
}

#[sqlx::test]
async fn provision_checks_tier_body_course_and_status_in_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.admin_token();
    let body = json!({"course_id": Uuid::new_v4(), "number_of_seats": 1});

    app.anonymous()
        .provision(&body.clone())
        .await
        .unauthenticated();
    // A non-admin learns nothing about the body.
    app.as_faculty().provision(&json!({})).await.error_with(
        StatusCode::FORBIDDEN,
        "AUTHORIZATION_ERROR",
        "Access denied",
    );

    for (bad, field, message) in [
        (json!({"number_of_seats": 1}), "course_id", "Field required"),
        (
            json!({"course_id": "nope", "number_of_seats": 1}),
            "course_id",
            "Must be a UUID",
        ),
        (
            json!({"course_id": Uuid::new_v4(), "number_of_seats": 0}),
            "number_of_seats",
            "Must be between 1 and 100",
        ),
        (
            json!({"course_id": Uuid::new_v4(), "number_of_seats": 101}),
            "number_of_seats",
            "Must be between 1 and 100",
        ),
        (
            json!({"course_id": Uuid::new_v4(), "number_of_seats": true}),
            "number_of_seats",
            "Must be an integer",
        ),
        (
            json!({"course_id": Uuid::new_v4(), "number_of_seats": null}),
            "number_of_seats",
            "Must not be null",
        ),
    ] {
        let err = app
            .with_token(&admin)
            .provision(&bad.clone())
            .await
            .invalid();
        assert_eq!(err["details"][field], message, "{bad}");
    }

    let missing = Uuid::new_v4();
    let err = app
        .with_token(&admin)
        .provision(&json!({"course_id": missing, "number_of_seats": 1}))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Course {missing} not found. Cannot provision seats without a valid course."),
        );
    assert_eq!(err["details"], Value::Null);

    let draft = fixtures::create_draft_course(&app, "Draft lab", None, None, None).await;
    let (status, err) = app
        .with_token(&admin)
        .provision(&json!({"course_id": draft.course_id, "number_of_seats": 1}))
        .await;
    assert_error_body(&err, status, StatusCode::CONFLICT, "INVALID_REQUEST");
    assert_eq!(
        err["message"],
        format!(
            "Course {} is in 'draft' status. Seats can only be provisioned for active courses.",
            draft.course_id
        )
    );
    let seats: i64 = sqlx::query_scalar("SELECT count(*) FROM seat")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(seats, 0);
}

#[sqlx::test]
async fn provision_accepts_an_ended_course(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::create_active_course(&app, "Ended lab").await;
    exec(
        &app.db,
        "UPDATE course SET end_date = now() - interval '1 minute' WHERE id = $1",
        course.course_id,
    )
    .await;
    assert_eq!(
        fixtures::provision(&app, course.course_id, 2).await.len(),
        2
    );
}

#[sqlx::test]
async fn a_batch_is_returned_with_its_institution_and_course(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::create_active_course(&app, "Neuro 101").await;
    let seats = fixtures::provision(&app, course.course_id, 2).await;
    let batch_id: String = fetch_scalar(
        &app.db,
        "SELECT batch_id::text FROM seat WHERE id = $1",
        seats[0],
    )
    .await;

    let (status, body) = app.as_admin().get_batch(&batch_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_keys(&body, &["institution", "course", "batches"]);
    assert_eq!(body["institution"]["id"], course.institution_id.to_string());
    assert_eq!(body["institution"]["name"], "Open Brain Institute");
    let c = &body["course"];
    assert_eq!(c["id"], course.course_id.to_string());
    assert_eq!(c["virtual_lab_id"], course.vlab_id.to_string());
    assert_eq!(c["virtual_lab_name"], "Neuro 101");
    assert_eq!(
        c["template_project_id"],
        course.template_project_id.to_string()
    );
    assert_eq!(c["status"], "active");
    for key in ["start_date", "end_date", "last_drop_date"] {
        assert!(c[key].is_string(), "{key}: {c}");
    }
    let batches = body["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch["batch_id"], batch_id);
    assert_eq!(batch["number_of_seats"], 2);
    assert_eq!(batch["course_ids"], json!([course.course_id]));
    assert_eq!(batch["created_at"], batch["seats"][0]["created_at"]);
    assert_eq!(batch["expiry_date"], batch["seats"][0]["expiry_date"]);
    let mut expected: Vec<String> = seats.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(ids(&batch["seats"]), expected);

    let missing = Uuid::new_v4();
    app.as_admin().get_batch(missing).await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        &format!("Seat batch {missing} not found"),
    );

    let err = app.as_admin().get("/seats/batches/xyz").await.invalid();
    assert_eq!(err["details"]["batch_id"], "Must be a UUID");
    app.as_faculty().get("/seats/batches/xyz").await.denied();
}

#[sqlx::test]
async fn batch_search_filters_and_groups_matching_seats(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let neuro = fixtures::create_active_course(&app, "Neuro 101").await;
    let other = fixtures::create_active_course(&app, "Physics 50%").await;
    let first = fixtures::provision(&app, neuro.course_id, 2).await;
    let second = fixtures::provision(&app, neuro.course_id, 1).await;
    let third = fixtures::provision(&app, other.course_id, 1).await;
    let search = |query: String| {
        let app = &app;
        async move { app.as_admin().get(&format!("/seats/batches{query}")).await }
    };

    // No filter: every seat, batches by their first seat's creation.
    let all = search(String::new()).await.ok_body();
    let counts: Vec<i64> = all["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["number_of_seats"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [2, 1, 1]);
    assert_eq!(all["course"]["id"], neuro.course_id.to_string());
    assert_eq!(all["batches"][2]["seats"][0]["id"], third[0].to_string());

    let (_, by_course) = search(format!("?course_id={}", other.course_id)).await;
    assert_eq!(by_course["batches"].as_array().unwrap().len(), 1);
    assert_eq!(by_course["course"]["virtual_lab_name"], "Physics 50%");

    // Lab names match as case-insensitive literals: `%` is not a wildcard.
    let (_, by_lab) = search("?vlab_name=neuro".to_owned()).await;
    assert_eq!(by_lab["batches"].as_array().unwrap().len(), 2);
    let (_, literal) = search("?vlab_name=S%2050%25".to_owned()).await;
    assert_eq!(literal["batches"].as_array().unwrap().len(), 1);
    let (_, by_institution) = search(format!(
        "?institution_name=brain&institution_id={}",
        neuro.institution_id
    ))
    .await;
    assert_eq!(by_institution["batches"].as_array().unwrap().len(), 3);

    let created_second: DateTime<Utc> = fetch_scalar(
        &app.db,
        "SELECT created_at FROM seat WHERE id = $1",
        second[0],
    )
    .await;
    let at = created_second.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, after) = search(format!("?created_after={at}&course_id={}", neuro.course_id)).await;
    assert_eq!(after["batches"].as_array().unwrap().len(), 1);
    assert_eq!(after["batches"][0]["seats"][0]["id"], second[0].to_string());
    let (_, before) = search(format!(
        "?created_before={at}&course_id={}",
        neuro.course_id
    ))
    .await;
    let before_ids: Vec<String> = before["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| ids(&b["seats"]))
        .collect();
    assert_eq!(before_ids.len(), 3, "both bounds are inclusive");
    assert!(before_ids.contains(&first[0].to_string()));

    search("?vlab_name=nothing-like-this".to_owned())
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            "No seat batches found matching the given filters",
        );
    let err = search("?course_id=1&created_after=soon".to_owned())
        .await
        .invalid();
    assert_eq!(err["details"]["course_id"], "Must be a UUID");
    assert_eq!(err["details"]["created_after"], "Must be a valid date-time");
}

/// Two active courses of the same institution; the source is past its last drop date.
async fn transfer_pair(app: &TestApp) -> (ActiveCourse, ActiveCourse) {
    let source = fixtures::create_active_course(app, "Source lab").await;
    let target = fixtures::create_active_course(app, "Target lab").await;
    past_last_drop(app, source.course_id).await;
    (source, target)
}

#[sqlx::test]
async fn transfer_moves_available_seats_in_expiry_order(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (source, target) = transfer_pair(&app).await;
    let first = fixtures::provision(&app, source.course_id, 2).await;
    let later = fixtures::provision(&app, source.course_id, 2).await;
    // The later batch expires sooner, so it goes first; a stale reservation is cleared.
    exec(
        &db,
        "UPDATE seat SET expiry_date = expiry_date - interval '1 day' WHERE id = ANY($1)",
        &later,
    )
    .await;
    sqlx::query(
        "UPDATE seat SET reservation_id = gen_random_uuid(), reserved_until = now() - interval '1 minute',
             reserved_student_id = 'old', reserved_email = 'old@uni.org' WHERE id = $1",
    )
    .bind(later[0])
    .execute(&db)
    .await
    .unwrap();
    // A live reservation and an expired seat are not transferable.
    let expired = fixtures::provision(&app, source.course_id, 1).await;
    exec(
        &db,
        "UPDATE seat SET expiry_date = now() - interval '1 minute' WHERE id = $1",
        expired[0],
    )
    .await;
    sqlx::query(
        "UPDATE seat SET reservation_id = gen_random_uuid(), reserved_until = now() + interval '10 minutes'
         WHERE id = $1",
    )
    .bind(first[1])
    .execute(&db)
    .await
    .unwrap();

    let body = app.as_admin().transfer(&json!({"source_course_id": source.course_id, "target_course_id": target.course_id, "amount": 3}))
    .await.ok_body();
    assert_eq!(body["message"], "Successfully transferred seats");
    assert_eq!(body["data"]["transferred_count"], 3);
    let mut expected_later: Vec<String> = later.iter().map(Uuid::to_string).collect();
    expected_later.sort();
    let moved = ids(&body["data"]["transferred_seats"]);
    assert_eq!(moved[..2], expected_later[..]);
    assert_eq!(moved[2], first[0].to_string());
    for seat in body["data"]["transferred_seats"].as_array().unwrap() {
        assert_eq!(seat["course_id"], target.course_id.to_string());
        assert_eq!(seat["institution_id"], source.institution_id.to_string());
    }
    let stale: Option<Uuid> = fetch_scalar(
        &db,
        "SELECT reservation_id FROM seat WHERE id = $1",
        later[0],
    )
    .await;
    assert_eq!(stale, None);
    let left: Uuid = fetch_scalar(&db, "SELECT course_id FROM seat WHERE id = $1", first[1]).await;
    assert_eq!(left, source.course_id, "the reserved seat stayed");

    // Only the reserved and the expired seat are left: neither moves.
    app.as_admin().transfer(&json!({"source_course_id": source.course_id, "target_course_id": target.course_id, "amount": 1}))
    .await.error_with(StatusCode::CONFLICT, "INVALID_REQUEST", "Requested 1 seats but only 0 available");
    app.as_admin().transfer(&json!({"source_course_id": source.course_id, "target_course_id": target.course_id, "amount": "all"}))
    .await.error_with(StatusCode::CONFLICT, "INVALID_REQUEST", "No transferable seats available");
}

#[sqlx::test]
async fn transfer_all_moves_every_transferable_seat(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (source, target) = transfer_pair(&app).await;
    fixtures::provision(&app, source.course_id, 3).await;
    let body = app.as_admin().transfer(&json!({"source_course_id": source.course_id, "target_course_id": target.course_id, "amount": "all"}))
    .await.ok_body();
    assert_eq!(body["data"]["transferred_count"], 3);
    let in_target: i64 = fetch_scalar(
        &app.db,
        "SELECT count(*) FROM seat WHERE course_id = $1",
        target.course_id,
    )
    .await;
    assert_eq!(in_target, 3);
    // After a transfer a batch spans the target course.
    let (_, batches) = app
        .as_admin()
        .get(&format!("/seats/batches?course_id={}", target.course_id))
        .await;
    assert_eq!(
        batches["batches"][0]["course_ids"],
        json!([target.course_id])
    );
}

#[sqlx::test]
async fn transfer_rejects_bad_bodies_and_checks_courses_in_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let same = Uuid::new_v4();
    for (bad, field, message) in [
        (
            json!({"source_course_id": same, "target_course_id": same, "amount": 1}),
            "target_course_id",
            "source_course_id and target_course_id must be different",
        ),
        (
            json!({"source_course_id": same, "target_course_id": Uuid::new_v4(), "amount": "ALL"}),
            "amount",
            "Must be a positive integer or \"all\"",
        ),
        (
            json!({"source_course_id": same, "target_course_id": Uuid::new_v4(), "amount": 0}),
            "amount",
            "Must be a positive integer or \"all\"",
        ),
        (
            json!({"source_course_id": same, "target_course_id": Uuid::new_v4()}),
            "amount",
            "Field required",
        ),
        (
            json!({"target_course_id": Uuid::new_v4(), "amount": 1}),
            "source_course_id",
            "Field required",
        ),
    ] {
        let err = app.as_admin().transfer(&bad.clone()).await.invalid();
        assert_eq!(err["details"][field], message, "{bad}");
    }
    app.as_faculty().transfer(&json!({})).await.denied();

    let (source, target) = transfer_pair(&app).await;
    fixtures::provision(&app, source.course_id, 1).await;
    let body =
        |s: Uuid, t: Uuid| json!({"source_course_id": s, "target_course_id": t, "amount": 1});

    app.as_admin()
        .transfer(&body(source.course_id, Uuid::new_v4()))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            "One or both courses were not found",
        );

    // Another institution (set while the course is a draft, then activated).
    let (_, institution) = app
        .as_admin()
        .post_institution(&json!({"name": "EPFL", "contact_email": "a@epfl.ch"}))
        .await;
    let now = Utc::now();
    let elsewhere = fixtures::create_draft_course(
        &app,
        "Elsewhere lab",
        Some(now - Duration::days(1)),
        Some(now + Duration::days(7)),
        Some(now + Duration::days(90)),
    )
    .await;
    app.as_admin()
        .patch_course(
            elsewhere.course_id,
            &json!({"institution_id": institution["data"]["id"]}),
        )
        .await
        .ok_body();
    fixtures::activate_course(&app, elsewhere.course_id).await;
    app.as_admin()
        .transfer(&body(source.course_id, elsewhere.course_id))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Both courses must belong to the same institution",
        );

    let draft = fixtures::create_draft_course(&app, "Draft target", None, None, None).await;
    app.as_admin()
        .transfer(&body(source.course_id, draft.course_id))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Both courses must be active",
        );

    // The target is still in its drop window, so it cannot be a source.
    app.as_admin()
        .transfer(&body(target.course_id, source.course_id))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Source course must be past its last drop date",
        );

    let late = fixtures::create_active_course(&app, "Late target").await;
    past_last_drop(&app, late.course_id).await;
    app.as_admin()
        .transfer(&body(source.course_id, late.course_id))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Target course must be before its last drop date",
        );

    app.as_admin().transfer(&json!({"source_course_id": source.course_id, "target_course_id": target.course_id, "amount": 2})).await.error_with(StatusCode::CONFLICT, "INVALID_REQUEST", "Requested 2 seats but only 1 available");
    let unmoved: i64 = fetch_scalar(
        &app.db,
        "SELECT count(*) FROM seat WHERE course_id = $1",
        source.course_id,
    )
    .await;
    assert_eq!(unmoved, 1);
}

#[sqlx::test]
async fn a_course_admin_lists_every_seat_with_its_enrolment(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    let seats = fixtures::provision(&app, course.course_id, 3).await;
    let path = format!("/seats/courses/{}", course.course_id);

    let empty = app.as_faculty().get(&path).await.ok_body();
    assert_eq!(
        empty["pagination"],
        json!({"page": 1, "page_size": 3, "total_items": 3})
    );
    assert!(
        empty["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["enrolment"].is_null())
    );

    let assigned = fixtures::assign(&app, course.course_id, 1).await;
    let listed = app.as_faculty().get(&path).await.ok_body();
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let mut expected: Vec<String> = seats.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(ids(&listed["data"]), expected, "created_at, then id");
    let with = data
        .iter()
        .find(|s| s["id"] == assigned[0].seat_id.to_string())
        .unwrap();
    assert_eq!(with["enrolment_id"], assigned[0].enrolment_id.to_string());
    assert_eq!(
        with["enrolment"],
        json!({
            "id": assigned[0].enrolment_id, "course_id": course.course_id,
            "project_id": assigned[0].project_id, "contact_email": "stu-1@uni.org",
            "student_id": "stu-1", "claimed_by": null, "is_dropped": false
        })
    );
    assert_eq!(keys_of(with).last(), Some(&"enrolment"));
}

#[sqlx::test]
async fn the_seat_list_is_for_course_admins_only(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::create_active_course(&app, "Neuro 101").await;
    // Faculty is not a lab admin here; a student neither.
    for (path, token) in [
        (
            format!("/seats/courses/{}", course.course_id),
            app.faculty_token(),
        ),
        (
            format!("/seats/courses/{}", course.course_id),
            app.student_token(0),
        ),
        (
            format!("/seats/courses/{}", Uuid::new_v4()),
            app.admin_token(),
        ),
        ("/seats/courses/not-a-uuid".to_owned(), app.admin_token()),
    ] {
        let err = app.with_token(&token).get(&path).await.error_with(
            StatusCode::FORBIDDEN,
            "NOT_ALLOWED_OP",
            "Not authorized to perform this action",
        );
        assert_eq!(err["details"], Value::Null);
    }
    app.anonymous()
        .get_course_seats(course.course_id)
        .await
        .unauthenticated();
    // The lab's own admin (the service admin created it) passes, and sees no seats.
    let body = app
        .as_admin()
        .get_course_seats(course.course_id)
        .await
        .ok_body();
    assert_eq!(
        body,
        json!({"data": [], "pagination": {"page": 1, "page_size": 0, "total_items": 0}})
    );
}
