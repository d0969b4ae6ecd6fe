//! `POST /seats/courses/{course_id}/assign` (api.md §4.6.6, rules.md §4.10): request-level
//! checks, per-student provisioning and compensation, and the concurrency invariants.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{self, ActiveCourse, students_body};
use crate::helpers::{
    ReplyExt, TestApp, assert_error_body, assert_keys, exec, fetch_row, fetch_scalar, json,
};

/// `n` students `{prefix}-1..` with e-mails `{prefix}-i@uni.org`.
fn cohort(prefix: &str, n: usize) -> Value {
    let students: Vec<Value> = (1..=n)
        .map(|i| json!({"student_id": format!("{prefix}-{i}"), "email": format!("{prefix}-{i}@uni.org")}))
        .collect();
    json!({ "students": students })
}

/// Assigns `body` as faculty and expects a 409 with this code and message; returns the body.
async fn assign_conflict(
    app: &TestApp,
    course_id: Uuid,
    body: &Value,
    code: &str,
    message: &str,
) -> Value {
    app.as_faculty()
        .post_assign(course_id, body)
        .await
        .error_with(StatusCode::CONFLICT, code, message)
}

/// One more student finds no available seat.
async fn assert_no_seat_left(app: &TestApp, course_id: Uuid) {
    assign_conflict(
        app,
        course_id,
        &cohort("x", 1),
        "ENTITY_NOT_FOUND",
        "Not enough available seats: requested 1, found 0",
    )
    .await;
}

fn results(body: &Value) -> &Vec<Value> {
    body["results"].as_array().expect("results")
}

async fn count(app: &TestApp, sql: &str, course_id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(course_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Row counts of one course, read in one query.
#[derive(Debug, sqlx::FromRow)]
struct CourseCounts {
    enrolments: i64,
    /// Seats holding an enrolment.
    enrolled_seats: i64,
    /// Seats still held by a reservation.
    reserved_seats: i64,
}

async fn counts(app: &TestApp, course_id: Uuid) -> CourseCounts {
    fetch_row(
        &app.db,
        "SELECT (SELECT count(*) FROM course_enrolment WHERE course_id = $1) AS enrolments,
                (SELECT count(*) FROM seat WHERE course_id = $1 AND enrolment_id IS NOT NULL)
                    AS enrolled_seats,
                (SELECT count(*) FROM seat WHERE course_id = $1 AND reservation_id IS NOT NULL)
                    AS reserved_seats",
        course_id,
    )
    .await
}

/// The Keycloak groups of the lab's projects (the template's two included).
fn project_groups(app: &TestApp, vlab_id: Uuid) -> usize {
    let prefix = format!("proj/{vlab_id}/");
    app.keycloak
        .groups()
        .iter()
        .filter(|g| g.name.starts_with(&prefix))
        .count()
}

/// The accounting accounts of the lab's projects (the template's included).
fn project_accounts(app: &TestApp, vlab_id: Uuid) -> usize {
    app.accounting
        .accounts()
        .iter()
        .filter(|a| a.kind == "project" && a.vlab_id == Some(vlab_id))
        .count()
}

/// Nothing of a failed student is left: no project row, enrolment or e-mail, no credits on
/// any account of that name, and its seat is available again.
async fn assert_nothing_left(
    app: &TestApp,
    course: &ActiveCourse,
    student_id: &str,
    seat_id: &str,
) {
    let projects: i64 = fetch_scalar(
        &app.db,
        "SELECT count(*) FROM project WHERE name = $1",
        student_id,
    )
    .await;
    assert_eq!(projects, 0, "project of {student_id}");
    let enrolments: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM course_enrolment WHERE course_id = $1 AND student_id = $2",
    )
    .bind(course.course_id)
    .bind(student_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(enrolments, 0, "enrolment of {student_id}");
    let seat: (Option<Uuid>, Option<Uuid>, Option<String>) = fetch_row(
        &app.db,
        "SELECT enrolment_id, reservation_id, reserved_student_id FROM seat WHERE id = $1::uuid",
        seat_id,
    )
    .await;
    assert_eq!(
        seat,
        (None, None, None),
        "seat {seat_id} is available again"
    );
    for account in app.accounting.accounts() {
        if account.name == student_id {
            assert_eq!(
                account.balance,
                Decimal::ZERO,
                "credits left on {account:?}"
            );
        }
    }
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct EnrolmentRow {
    course_id: Uuid,
    project_id: Uuid,
    contact_email: String,
    student_id: String,
    claimed_by: Option<Uuid>,
    is_dropped: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct ProjectRow {
    virtual_lab_id: Uuid,
    name: String,
    description: Option<String>,
    owner_id: Uuid,
    admin_group_id: String,
    member_group_id: String,
}

#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    kind: String,
    recipient: String,
    status: String,
    attempts: i32,
    payload: Value,
    lease_id: Option<Uuid>,
}

#[sqlx::test]
async fn assign_enrols_each_student_with_a_funded_project_and_a_claim_email(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    let seats = fixtures::provision(&app, course.course_id, 3).await;
    let mut sorted_seats = seats.clone();
    sorted_seats.sort();

    let (status, body) = app
        .as_faculty()
        .post_assign(
            course.course_id,
            &students_body(&[(" stu-001 ", " Ada@Uni.org "), ("stu-002", "bob@uni.org")]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = results(&body);
    assert_eq!(items.len(), 2);
    assert_keys(
        &items[0],
        &[
            "student_id",
            "email",
            "assignment_successful",
            "seat_id",
            "enrolment_id",
            "project_id",
            "credit_transferred_amount",
            "email_sent",
            "error",
        ],
    );
    for (i, (student_id, email)) in [("stu-001", "Ada@Uni.org"), ("stu-002", "bob@uni.org")]
        .into_iter()
        .enumerate()
    {
        let item = &items[i];
        assert_eq!(item["student_id"], student_id);
        assert_eq!(item["email"], email);
        assert_eq!(item["assignment_successful"], true);
        // Student i gets the i-th seat in (expiry, id) order.
        assert_eq!(item["seat_id"], sorted_seats[i].to_string());
        assert_eq!(item["credit_transferred_amount"], json!(200.0));
        assert_eq!(item["email_sent"], true);
        assert_eq!(item["error"], Value::Null);

        let enrolment_id: Uuid = item["enrolment_id"].as_str().unwrap().parse().unwrap();
        let project_id: Uuid = item["project_id"].as_str().unwrap().parse().unwrap();
        let row: EnrolmentRow = fetch_row(
            &db,
            "SELECT course_id, project_id, contact_email, student_id, claimed_by, is_dropped
             FROM course_enrolment WHERE id = $1",
            enrolment_id,
        )
        .await;
        assert_eq!(
            row,
            EnrolmentRow {
                course_id: course.course_id,
                project_id,
                contact_email: email.to_owned(),
                student_id: student_id.to_owned(),
                claimed_by: None,
                is_dropped: false,
            }
        );
        let project: ProjectRow = fetch_row(
            &db,
            "SELECT virtual_lab_id, name, description, owner_id, admin_group_id, member_group_id
             FROM project WHERE id = $1",
            project_id,
        )
        .await;
        assert_eq!(project.virtual_lab_id, course.vlab_id);
        assert_eq!(project.name, student_id);
        assert_eq!(project.description, None);
        assert_eq!(project.owner_id, app.users.faculty.id);
        let admin_group = app
            .keycloak
            .group_by_name(&format!("proj/{}/{project_id}/admin", course.vlab_id))
            .expect("project admin group");
        assert_eq!(admin_group.id, project.admin_group_id);
        // The caller and every other lab admin (the lab's creator) administer it.
        let mut expected = vec![app.users.admin.id, app.users.faculty.id];
        expected.sort();
        let mut members = admin_group.members.clone();
        members.sort();
        assert_eq!(members, expected);
        let member_group = app
            .keycloak
            .group_by_name(&format!("proj/{}/{project_id}/member", course.vlab_id))
            .expect("project member group");
        assert_eq!(member_group.id, project.member_group_id);
        assert!(member_group.members.is_empty());
        assert_eq!(app.accounting.balance(project_id), Some(Decimal::from(200)));

        let seat: (Option<Uuid>, Option<Uuid>, Option<String>, bool) = fetch_row(&db, "SELECT enrolment_id, reservation_id, reserved_email, is_consumed FROM seat WHERE id = $1", sorted_seats[i]).await;
        assert_eq!(seat, (Some(enrolment_id), None, None, false));

        let outbox: OutboxRow = fetch_row(
            &db,
            "SELECT kind, recipient, status, attempts, payload, lease_id FROM email_outbox
             WHERE enrolment_id = $1",
            enrolment_id,
        )
        .await;
        assert_eq!(outbox.kind, "enrolment_claim");
        assert_eq!(outbox.recipient, email);
        assert_eq!((outbox.status.as_str(), outbox.attempts), ("sent", 1));
        assert_eq!(
            outbox.payload,
            json!({
                "course_name": "Neuro 101",
                "claim_link": format!("http://localhost:3000/course-enrolment?enrolment_id={enrolment_id}"),
                "discover_link": "https://openbraininstitute.org"
            })
        );
        assert_eq!(outbox.lease_id, None, "the lease is cleared");
    }
    let messages = app.smtp.wait_for_messages(2, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 2);
    let mut recipients: Vec<String> = messages.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["Ada@Uni.org", "bob@uni.org"]);
    let ada = messages
        .iter()
        .find(|m| m.rcpt_to == ["Ada@Uni.org"])
        .unwrap();
    assert_eq!(
        ada.subject.as_deref(),
        Some("You've been enrolled in a course \u{2014} Open Brain Platform")
    );
    assert!(ada.text().unwrap().contains("Course: Neuro 101"));
    assert!(ada.links.iter().any(|l| l
        == &format!(
            "http://localhost:3000/course-enrolment?enrolment_id={}",
            items[0]["enrolment_id"].as_str().unwrap()
        )));
    // One admin listing per request; 2 group creations per student.
    assert_eq!(app.keycloak.call_count("kc_create_group") - 4, 4);
    let unused: i64 = count(
        &app,
        "SELECT count(*) FROM seat WHERE course_id = $1 AND enrolment_id IS NULL AND reservation_id IS NULL",
        course.course_id,
    )
    .await;
    assert_eq!(unused, 1);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    for line in [
        "vlab_seats_provisioned_total",
        "vlab_seats_assigned_total",
        "vlab_emails_total{kind=\"enrolment_claim\",outcome=\"sent\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}

#[sqlx::test]
async fn the_assign_body_is_validated_after_the_tier(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"student_id": format!("s{i}"), "email": format!("s{i}@uni.org")}))
        .collect();
    for (body, message) in [
        (json!({}), "Field required"),
        (json!({"students": null}), "Must not be null"),
        (json!({"students": []}), "Must contain at least 1 item"),
        (
            json!({ "students": many }),
            "Must contain at most 1000 items",
        ),
        (
            json!({"students": [{"student_id": "a", "email": "a@uni.org"}, {"student_id": "b", "email": "not-an-email"}]}),
            "students[1].email: Must be a valid e-mail address",
        ),
        (
            json!({"students": [{"student_id": "  ", "email": "a@uni.org"}]}),
            "students[0].student_id: Must not be empty",
        ),
        (
            json!({"students": [{"student_id": "x".repeat(251), "email": "a@uni.org"}]}),
            "students[0].student_id: Must be at most 250 characters",
        ),
        (
            json!({"students": [{"student_id": 7, "email": "a@uni.org"}]}),
            "students[0].student_id: Must be a string",
        ),
        (
            json!({"students": [{"student_id": "a"}]}),
            "students[0].email: Field required",
        ),
        // Duplicate student ids are reported before duplicate e-mails.
        (
            students_body(&[("a", "X@uni.org"), ("b", "x@UNI.org"), (" a ", "c@uni.org")]),
            "Duplicate student_id in request: a",
        ),
        (
            students_body(&[("a", "X@uni.org"), ("b", " x@UNI.org ")]),
            "Duplicate email in request: x@UNI.org",
        ),
    ] {
        let err = app
            .as_faculty()
            .post_assign(course.course_id, &body)
            .await
            .invalid();
        assert_eq!(err["details"]["students"], message, "{body}");
    }
    let err = app
        .as_faculty()
        .post_empty(&format!("/seats/courses/{}/assign", course.course_id))
        .await
        .invalid();
    assert_eq!(err["details"]["body"], "Field required");
    // Only the template project's creation listed the lab admins.
    assert_eq!(app.keycloak.call_count("kc_list_members"), 1);
}

#[sqlx::test]
async fn assign_is_for_course_admins_only(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::create_active_course(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 1).await;
    let bad_body = json!({"students": "nope"});
    for (path, token) in [
        // Faculty is not (yet) a lab admin; a malformed or unknown course is denied alike.
        (
            format!("/seats/courses/{}/assign", course.course_id),
            app.faculty_token(),
        ),
        (
            format!("/seats/courses/{}/assign", course.course_id),
            app.student_token(0),
        ),
        (
            format!("/seats/courses/{}/assign", Uuid::new_v4()),
            app.admin_token(),
        ),
        ("/seats/courses/nope/assign".to_owned(), app.admin_token()),
    ] {
        let err = app
            .with_token(&token)
            .post(&path, &bad_body)
            .await
            .not_allowed();
        assert_eq!(err["details"], Value::Null);
    }
    app.anonymous()
        .post_assign(course.course_id, &bad_body)
        .await
        .unauthenticated();
    assert_eq!(
        app.keycloak.call_count("kc_create_group"),
        4,
        "only the lab and template"
    );
}

#[sqlx::test]
async fn request_level_conflicts_come_in_order_and_leave_nothing_behind(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 2).await;
    let first = app
        .as_faculty()
        .post_assign(
            course.course_id,
            &students_body(&[("stu-1", "Ada@uni.org")]),
        )
        .await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    // A live reservation of another request, for stu-9.
    sqlx::query(
        "UPDATE seat SET reservation_id = gen_random_uuid(), reserved_until = now() + interval '10 minutes',
             reserved_student_id = 'stu-9', reserved_email = 'Nine@uni.org'
         WHERE course_id = $1 AND enrolment_id IS NULL",
    )
    .bind(course.course_id)
    .execute(&db)
    .await
    .unwrap();
    let groups_before = app.keycloak.call_count("kc_create_group");

    // Duplicates: the enrolment by e-mail (case-insensitive) and the in-flight reservation by id.
    let err = assign_conflict(
        &app,
        course.course_id,
        &students_body(&[
            ("stu-9", "other@uni.org"),
            ("new", "ADA@UNI.ORG"),
            ("fresh", "f@uni.org"),
        ]),
        "ENTITY_ALREADY_EXISTS",
        "Students already enrolled in this course: stu-1 (Ada@uni.org). \
         Students being enrolled by a request in progress: stu-9 (Nine@uni.org)",
    )
    .await;
    assert_eq!(err["details"], Value::Null);

    // The reserved seat is not available either; the lapsed reservation frees it again.
    assert_no_seat_left(&app, course.course_id).await;
    sqlx::query("UPDATE seat SET reserved_until = now() - interval '1 second' WHERE reservation_id IS NOT NULL")
        .execute(&db)
        .await
        .unwrap();
    // An expired seat does not count.
    exec(&db, "UPDATE seat SET expiry_date = now() - interval '1 second' WHERE course_id = $1 AND enrolment_id IS NULL", course.course_id).await;
    assert_no_seat_left(&app, course.course_id).await;

    // The lab deleted comes before duplicates and seats; the last drop date before the lab.
    for (sql, id, message) in [
        (
            "UPDATE virtual_lab SET deleted = true WHERE id = $1",
            course.vlab_id,
            "Cannot assign seats: the course's virtual lab has been deleted",
        ),
        (
            "UPDATE course SET last_drop_date = now() - interval '1 second' WHERE id = $1",
            course.course_id,
            "Cannot assign seats after the course last drop date",
        ),
    ] {
        exec(&db, sql, id).await;
        let body = students_body(&[("stu-1", "a@uni.org")]);
        assign_conflict(&app, course.course_id, &body, "INVALID_REQUEST", message).await;
    }

    assert_eq!(
        app.keycloak.call_count("kc_create_group"),
        groups_before,
        "no side effects"
    );
    let reserved = count(
        &app,
        "SELECT count(*) FROM seat WHERE course_id = $1 AND reserved_until > now()",
        course.course_id,
    )
    .await;
    assert_eq!(reserved, 0);
    assert_eq!(counts(&app, course.course_id).await.enrolments, 1);
}

#[sqlx::test]
async fn assign_into_a_course_that_is_not_active_is_refused_first(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let draft = fixtures::create_draft_course(&app, "Draft lab", None, None, None).await;
    fixtures::make_lab_admin(&app, draft.vlab_id, &app.users.faculty);
    let (status, err) = app
        .as_faculty()
        .post_assign(draft.course_id, &cohort("stu", 2))
        .await;
    assert_error_body(&err, status, StatusCode::CONFLICT, "INVALID_REQUEST");
    assert_eq!(
        err["message"],
        "Cannot assign seats: course is in 'draft' status"
    );
}

#[sqlx::test]
async fn a_student_id_that_names_an_existing_project_fails_only_that_student(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 2).await;
    let body = app
        .as_faculty()
        .post_assign(
            course.course_id,
            &students_body(&[("Template", "bob@uni.org"), ("stu-2", "s2@uni.org")]),
        )
        .await
        .ok_body();
    let failed = &results(&body)[0];
    assert_eq!(
        failed,
        &json!({
            "student_id": "Template", "email": "bob@uni.org", "assignment_successful": false,
            "seat_id": failed["seat_id"], "enrolment_id": null, "project_id": null,
            "credit_transferred_amount": 0.0, "email_sent": false,
            "error": "A project named 'Template' already exists in this virtual lab"
        })
    );
    assert!(failed["seat_id"].is_string());
    assert_eq!(results(&body)[1]["assignment_successful"], true);
    // Only the successful student reached Keycloak.
    assert_eq!(project_groups(&app, course.vlab_id), 4);
    let seat: (Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("SELECT enrolment_id, reservation_id FROM seat WHERE id = $1::uuid")
            .bind(failed["seat_id"].as_str().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(seat, (None, None));
}

/// One step of the first student fails (concurrency 1 makes the order deterministic); the
/// second student succeeds and the first leaves nothing behind.
async fn one_student_fails_at(db: PgPool, emulator: &str, fault: Fault, sentence: &str) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("EXTERNAL_CONCURRENCY".to_owned(), "1".to_owned());
    })
    .await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 2).await;
    let token = app.faculty_token();
    // Authenticate once first, so the faults only meet the assign's own calls.
    let warm = app
        .get(
            &format!("/seats/courses/{}", course.course_id),
            Some(&token),
        )
        .await;
    assert_eq!(warm.status(), StatusCode::OK);
    match emulator {
        "keycloak" => app.keycloak.inject(fault),
        _ => app.accounting.inject(fault),
    }
    let body = app
        .with_token(&token)
        .post_assign(
            course.course_id,
            &students_body(&[("stu-1", "s1@uni.org"), ("stu-2", "s2@uni.org")]),
        )
        .await
        .ok_body();
    let (failed, ok) = (&results(&body)[0], &results(&body)[1]);
    assert_eq!(failed["assignment_successful"], false, "{body}");
    assert_eq!(failed["error"], sentence);
    assert_eq!(failed["enrolment_id"], Value::Null);
    assert_eq!(failed["project_id"], Value::Null);
    assert_eq!(failed["credit_transferred_amount"], json!(0.0));
    assert_eq!(failed["email_sent"], false);
    assert_eq!(ok["assignment_successful"], true, "{body}");

    assert_nothing_left(&app, &course, "stu-1", failed["seat_id"].as_str().unwrap()).await;
    // Template and stu-2 only: the failed student's groups (and their memberships) are gone.
    assert_eq!(project_groups(&app, course.vlab_id), 4);
    let faculty_projects: Vec<String> = app
        .keycloak
        .user_group_paths(app.users.faculty.id)
        .into_iter()
        .filter(|p| p.starts_with("/proj/"))
        .collect();
    assert_eq!(
        faculty_projects,
        [format!(
            "/proj/{}/{}/admin",
            course.vlab_id,
            ok["project_id"].as_str().unwrap()
        )]
    );
    assert_eq!(counts(&app, course.course_id).await.enrolments, 1);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(outbox, 1);
    let ok_project: Uuid = ok["project_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.accounting.balance(ok_project), Some(Decimal::from(200)));
}

const GROUPS: &str = "Could not create the student's project groups in the identity provider";
const GRANT: &str = "Failed to fund the student's project with 200 credits";

/// One test per row: the named step of the second student fails with the fault, and the
/// student's answer carries the sentence (see [`one_student_fails_at`]).
macro_rules! one_student_fails {
    ($($name:ident: $emulator:literal, $operation:literal, $action:expr, $sentence:expr;)*) => {$(
        #[sqlx::test]
        async fn $name(db: PgPool) {
            let fault = Fault::new($operation, $action);
            one_student_fails_at(db, $emulator, fault, $sentence).await;
        }
    )*};
}

const UNANSWERED: FaultAction = FaultAction::TimeoutAfter(Duration::from_millis(300));

one_student_fails! {
    a_failed_group_creation_is_compensated:
        "keycloak", "kc_create_group", FaultAction::Status(500), GROUPS;
    a_group_creation_of_unknown_outcome_is_compensated_by_name:
        "keycloak", "kc_create_group", UNANSWERED, GROUPS;
    a_failed_admin_membership_is_compensated:
        "keycloak", "kc_add_member", FaultAction::Status(500),
        "Could not give the course administrators access to the student's project";
    a_failed_account_creation_is_compensated:
        "accounting", "acc_create_project_account", FaultAction::Status(500),
        "Could not create the accounting account for the student's project";
    a_failed_grant_is_compensated:
        "accounting", "acc_grant", FaultAction::Status(500), GRANT;
    a_grant_of_unknown_outcome_is_depleted_again:
        "accounting", "acc_grant", UNANSWERED, GRANT;
}

#[sqlx::test]
async fn when_the_lab_admins_cannot_be_read_every_student_fails_cleanly(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 3).await;
    let listings = app.keycloak.call_count("kc_list_members");
    app.keycloak
        .inject(Fault::new("kc_list_members", FaultAction::Status(500)));
    let body = app
        .as_faculty()
        .post_assign(course.course_id, &cohort("stu", 3))
        .await
        .ok_body();
    for item in results(&body) {
        assert_eq!(
            item["error"],
            "Could not read the virtual lab administrators from the identity provider"
        );
        assert_nothing_left(
            &app,
            &course,
            item["student_id"].as_str().unwrap(),
            item["seat_id"].as_str().unwrap(),
        )
        .await;
    }
    assert_eq!(
        app.keycloak.call_count("kc_list_members") - listings,
        1,
        "fetched once per request"
    );
    assert_eq!(project_groups(&app, course.vlab_id), 2);
}

// ---- concurrency invariants (rules.md §9, 1 and 2) -------------------------------------------

/// Sends the same kind of assign to both servers at once.
async fn race(
    app: &TestApp,
    other_base: &str,
    course_id: Uuid,
    a: &Value,
    b: &Value,
) -> [(StatusCode, Value); 2] {
    let path = format!("/seats/courses/{course_id}/assign");
    let token = app.faculty_token();
    let send = |base: String, body: Value| {
        let request = app
            .client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move { json(request.send().await.expect("request")).await }
    };
    let (x, y) = tokio::join!(
        send(app.address.clone(), a.clone()),
        send(other_base.to_owned(), b.clone())
    );
    [x, y]
}

#[sqlx::test]
async fn two_servers_racing_for_too_few_seats_never_over_assign(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let other = app.spawn_process().await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 5).await;
    app.keycloak.set_latency(Duration::from_millis(10));
    let answers = race(
        &app,
        &other.base_url,
        course.course_id,
        &cohort("a", 4),
        &cohort("b", 4),
    )
    .await;
    app.keycloak.set_latency(Duration::ZERO);

    let (won, lost): (Vec<_>, Vec<_>) = answers.iter().partition(|(s, _)| *s == StatusCode::OK);
    assert_eq!((won.len(), lost.len()), (1, 1), "{answers:?}");
    let (status, err) = lost[0];
    assert_error_body(err, *status, StatusCode::CONFLICT, "ENTITY_NOT_FOUND");
    assert_eq!(
        err["message"],
        "Not enough available seats: requested 4, found 1"
    );
    let successes = results(&won[0].1)
        .iter()
        .filter(|r| r["assignment_successful"] == true)
        .count();
    assert_eq!(successes, 4);

    let assigned = counts(&app, course.course_id).await.enrolled_seats;
    let distinct = count(
        &app,
        "SELECT count(DISTINCT enrolment_id) FROM seat WHERE course_id = $1",
        course.course_id,
    )
    .await;
    assert_eq!((assigned, distinct), (4, 4));
    assert_eq!(counts(&app, course.course_id).await.reserved_seats, 0);
    assert_eq!(counts(&app, course.course_id).await.enrolments, 4);
    assert_eq!(project_groups(&app, course.vlab_id), 2 + 2 * 4);
    assert_eq!(project_accounts(&app, course.vlab_id), 1 + 4);
}

#[sqlx::test]
async fn two_servers_assigning_the_same_student_enrol_it_once(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let other = app.spawn_process().await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 6).await;
    app.keycloak.set_latency(Duration::from_millis(10));
    let a = students_body(&[("x", "x@uni.org"), ("shared", "shared@uni.org")]);
    let b = students_body(&[("SHARED-mail", "Shared@Uni.org"), ("z", "z@uni.org")]);
    let answers = race(&app, &other.base_url, course.course_id, &a, &b).await;
    app.keycloak.set_latency(Duration::ZERO);

    let (won, lost): (Vec<_>, Vec<_>) = answers.iter().partition(|(s, _)| *s == StatusCode::OK);
    assert_eq!((won.len(), lost.len()), (1, 1), "{answers:?}");
    let (status, err) = lost[0];
    assert_error_body(err, *status, StatusCode::CONFLICT, "ENTITY_ALREADY_EXISTS");
    // The winner may still be provisioning (a live reservation) or done (an enrolment).
    let message = err["message"].as_str().unwrap();
    assert!(
        message.starts_with("Students already enrolled in this course: ")
            || message.starts_with("Students being enrolled by a request in progress: "),
        "{err}"
    );
    assert!(
        results(&won[0].1)
            .iter()
            .all(|r| r["assignment_successful"] == true)
    );
    let shared: i64 = fetch_scalar(&db, "SELECT count(*) FROM course_enrolment WHERE course_id = $1 AND lower(contact_email) = 'shared@uni.org'", course.course_id).await;
    assert_eq!(shared, 1);
    assert_eq!(counts(&app, course.course_id).await.reserved_seats, 0);
    assert_eq!(counts(&app, course.course_id).await.enrolled_seats, 2);
    assert_eq!(project_groups(&app, course.vlab_id), 2 + 2 * 2);
    assert_eq!(project_accounts(&app, course.vlab_id), 1 + 2);
}

// ---- timing ---------------------------------------------------------------------------------

/// 200 students with 20 ms on every Keycloak and accounting call and the default concurrency
/// of 16. Only correctness is asserted; the wall time is printed for the record.
#[sqlx::test]
async fn assigning_200_students_with_slow_upstreams(db: PgPool) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("EXTERNAL_CONCURRENCY".to_owned(), "16".to_owned());
    })
    .await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 100).await;
    fixtures::provision(&app, course.course_id, 100).await;
    let token = app.faculty_token();
    let path = format!("/seats/courses/{}/assign", course.course_id);
    // Authenticate first so the timing covers the assign itself.
    let warm = app
        .get(
            &format!("/seats/courses/{}", course.course_id),
            Some(&token),
        )
        .await;
    assert_eq!(warm.status(), StatusCode::OK);
    let listings = app.keycloak.call_count("kc_list_members");
    app.keycloak.set_latency(Duration::from_millis(20));
    app.accounting.set_latency(Duration::from_millis(20));

    let started = Instant::now();
    let (status, body) = app
        .with_token(&token)
        .post(&path, &cohort("stu", 200))
        .await;
    let elapsed = started.elapsed();
    eprintln!("assign of 200 students (20 ms upstream latency, concurrency 16): {elapsed:?}");

    assert_eq!(status, StatusCode::OK, "{body}");
    let items = results(&body);
    assert_eq!(items.len(), 200);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["student_id"], format!("stu-{}", i + 1));
        assert_eq!(item["assignment_successful"], true, "{item}");
        assert_eq!(item["email_sent"], true, "{item}");
    }
    assert_eq!(counts(&app, course.course_id).await.enrolled_seats, 200);
    assert_eq!(app.keycloak.call_count("kc_list_members") - listings, 1);
}
