//! `POST /seats/courses/{course_id}/resend-claim-emails`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{age_claims, mark_dropped, outbox_rows};
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp, exec};

fn results(body: &Value) -> &Vec<Value> {
    body["results"].as_array().unwrap()
}

#[sqlx::test]
async fn resend_all_queues_only_unclaimed_undropped_and_reports_skips(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 4).await;
    app.smtp.wait_for_messages(4, Duration::from_secs(5)).await;
    app.smtp.clear_messages();
    // stu-1 claimed, stu-2 dropped, stu-3 e-mailed 4 minutes ago, stu-4 eligible.
    app.as_user(&app.users.students[0])
        .claim(students[0].enrolment_id)
        .await
        .ok_body();
    mark_dropped(&app, students[1].enrolment_id).await;
    for s in &students {
        age_claims(&app, s.enrolment_id, 60).await;
    }
    exec(
        &app.db,
        "UPDATE email_outbox SET created_at = now() - interval '4 minutes' WHERE enrolment_id = $1",
        students[2].enrolment_id,
    )
    .await;

    // Without a list: only unclaimed, undropped enrolments are candidates.
    let body = app
        .as_faculty()
        .resend_claim_emails(course.course_id, None)
        .await
        .ok_body();
    crate::helpers::assert_keys(&body, &["results", "queued_count", "skipped_count", "more"]);
    let items = results(&body);
    assert_eq!(items.len(), 2, "{body}");
    // Candidates come in `created_at`, `id` order (one assign shares its `created_at`).
    let mut expected = [students[2].enrolment_id, students[3].enrolment_id];
    expected.sort();
    let ids: Vec<String> = items
        .iter()
        .map(|i| i["enrolment_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        expected.iter().map(|id| id.to_string()).collect::<Vec<_>>()
    );
    let item = |s: &fixtures::Assigned| {
        items
            .iter()
            .find(|i| i["enrolment_id"] == s.enrolment_id.to_string())
            .unwrap()
    };
    let limited = item(&students[2]);
    assert_eq!(limited["queued"], false);
    assert_eq!(
        limited["error"],
        "A claim e-mail to this student was queued less than 10 minutes ago"
    );
    let queued = item(&students[3]);
    assert_eq!(queued["student_id"], "stu-4");
    assert_eq!(queued["recipient"], "stu-4@uni.org");
    assert_eq!(queued["queued"], true);
    assert_eq!(queued["error"], Value::Null);
    assert!(queued["next_resend_allowed_at"].is_string());
    assert_eq!(
        (
            body["queued_count"].as_u64(),
            body["skipped_count"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(body["more"], false);

    for (s, expected) in students.iter().zip([1, 1, 1, 2]) {
        assert_eq!(outbox_rows(&app, s.enrolment_id).await.len(), expected);
    }
    let queued = outbox_rows(&app, students[3].enrolment_id).await.remove(1);
    assert_eq!(queued.origin, "resend_all");
    assert_eq!(queued.requested_by, Some(app.users.faculty.id));
    // Queued without a lease; the woken worker sends it at once.
    let messages = app.smtp.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["stu-4@uni.org"]);
}

#[sqlx::test]
async fn resend_selection_reports_per_item_errors_in_request_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 3).await;
    app.as_user(&app.users.students[0])
        .claim(students[0].enrolment_id)
        .await
        .ok_body();
    mark_dropped(&app, students[1].enrolment_id).await;
    for s in &students {
        age_claims(&app, s.enrolment_id, 60).await;
    }
    let unknown = Uuid::new_v4();
    let order = [
        students[2].enrolment_id,
        unknown,
        students[1].enrolment_id,
        students[0].enrolment_id,
    ];
    let body = app
        .as_admin()
        .resend_claim_emails(course.course_id, Some(&json!({ "enrolment_ids": order })))
        .await
        .ok_body();
    let items = results(&body);
    let got: Vec<(String, Value)> = items
        .iter()
        .map(|i| {
            (
                i["enrolment_id"].as_str().unwrap().to_owned(),
                i["error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (order[0].to_string(), Value::Null),
            (
                unknown.to_string(),
                json!("Enrolment not found in this course")
            ),
            (
                order[2].to_string(),
                json!("This enrolment has been dropped")
            ),
            (
                order[3].to_string(),
                json!("This enrolment has already been claimed")
            ),
        ]
    );
    assert_eq!(items[1]["student_id"], Value::Null);
    assert_eq!(items[1]["recipient"], Value::Null);
    assert_eq!(items[1]["next_resend_allowed_at"], Value::Null);
    assert_eq!(body["queued_count"], 1);
    assert_eq!(body["skipped_count"], 3);
    assert_eq!(
        outbox_rows(&app, order[0]).await[1].requested_by,
        Some(app.users.admin.id)
    );
}

#[sqlx::test]
async fn resend_selection_bodies_are_validated(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let id = students[0].enrolment_id;
    let faculty = app.as_faculty();
    let upper = id.to_string().to_uppercase();
    let cases = [
        (
            json!({"enrolment_ids": [id, upper]}),
            format!("Duplicate enrolment_id in request: {id}"),
        ),
        (json!({"enrolment_ids": "x"}), "Must be a list".to_owned()),
        (
            json!({"enrolment_ids": []}),
            "Must contain at least 1 item".to_owned(),
        ),
        (
            json!({"enrolment_ids": [id, "nope"]}),
            "enrolment_ids[1]: Must be a UUID".to_owned(),
        ),
    ];
    for (body, message) in cases {
        let answer = faculty
            .resend_claim_emails(course.course_id, Some(&body))
            .await
            .invalid();
        assert_eq!(
            answer["details"]["enrolment_ids"],
            message.as_str(),
            "{body}"
        );
    }
    let answer = faculty
        .resend_claim_emails(course.course_id, Some(&json!([id])))
        .await
        .invalid();
    assert_eq!(
        answer["details"]["body"],
        "Request body must be a JSON object"
    );
    // An empty object and `null` mean "every unclaimed enrolment" (here: rate-limited).
    for body in [json!({}), Value::Null] {
        let answer = faculty
            .resend_claim_emails(course.course_id, Some(&body))
            .await
            .ok_body();
        assert_eq!(answer["skipped_count"], 1, "{body}");
    }
    assert_eq!(outbox_rows(&app, id).await.len(), 1);
}

#[sqlx::test]
async fn resend_all_in_an_ended_or_voided_course(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 2).await;
    app.as_user(&app.users.students[0])
        .claim(students[0].enrolment_id)
        .await
        .ok_body();
    exec(
        &app.db,
        "UPDATE course SET end_date = now() - interval '1 minute',
             last_drop_date = now() - interval '2 minutes' WHERE id = $1",
        course.course_id,
    )
    .await;
    let ids = [students[0].enrolment_id, students[1].enrolment_id];
    let body = app
        .as_faculty()
        .resend_claim_emails(course.course_id, Some(&json!({ "enrolment_ids": ids })))
        .await
        .ok_body();
    let errors: Vec<&Value> = results(&body).iter().map(|i| &i["error"]).collect();
    assert_eq!(
        errors,
        [
            &json!("This enrolment has already been claimed"),
            &json!("The student's access has ended")
        ]
    );
    let body = app
        .as_faculty()
        .resend_claim_emails(course.course_id, None)
        .await
        .ok_body();
    let errors: Vec<&Value> = results(&body).iter().map(|i| &i["error"]).collect();
    assert_eq!(errors, [&json!("The student's access has ended")]);
    exec(
        &app.db,
        "UPDATE course SET status = 'voided' WHERE id = $1",
        course.course_id,
    )
    .await;
    app.as_faculty()
        .resend_claim_emails(course.course_id, None)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Cannot resend claim e-mails: course is in 'voided' status",
        );
    let missing = Uuid::new_v4();
    app.as_admin()
        .resend_claim_emails(missing, None)
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Course {missing} not found"),
        );
    app.as_user(&app.users.students[1])
        .resend_claim_emails(course.course_id, None)
        .await
        .not_allowed();
}

#[sqlx::test]
async fn resend_all_of_1000_enrolments_drains_within_seconds(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    app.smtp.clear_messages();
    // 1000 more unclaimed enrolments of the course, each with its own project, written directly.
    sqlx::query(
        "WITH p AS (
             INSERT INTO project (id, virtual_lab_id, name, owner_id, admin_group_id, member_group_id)
             SELECT gen_random_uuid(), virtual_lab_id, 'bulk-' || n, owner_id,
                    'admin-bulk-' || n, 'member-bulk-' || n
             FROM project, generate_series(1, 1000) AS n WHERE id = $2
             RETURNING id, name)
         INSERT INTO course_enrolment (id, course_id, project_id, contact_email, student_id,
             created_at)
         SELECT gen_random_uuid(), $1, p.id, p.name || '@uni.org', p.name, now()
         FROM p",
    )
    .bind(course.course_id)
    .bind(students[0].project_id)
    .execute(&app.db)
    .await
    .unwrap();
    age_claims(&app, students[0].enrolment_id, 60).await;

    let body = app
        .as_faculty()
        .resend_claim_emails(course.course_id, None)
        .await
        .ok_body();
    assert_eq!(body["queued_count"], 1000);
    assert_eq!(body["more"], true);
    // The oldest candidate (the assigned student) comes first.
    assert_eq!(
        results(&body)[0]["enrolment_id"],
        students[0].enrolment_id.to_string()
    );
    let messages = app
        .smtp
        .wait_for_messages(1000, Duration::from_secs(60))
        .await;
    assert_eq!(messages.len(), 1000);
    let mut recipients: Vec<String> = messages.iter().map(|m| m.rcpt_to[0].clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 1000, "no e-mail twice");

    // The same first 1000 candidates again: each is within its resend interval.
    let body = app
        .as_faculty()
        .resend_claim_emails(course.course_id, None)
        .await
        .ok_body();
    assert_eq!(body["more"], true);
    assert_eq!(
        (
            body["queued_count"].as_u64(),
            body["skipped_count"].as_u64()
        ),
        (Some(0), Some(1000))
    );
}
