//! Each event is written in the transaction of its change: a test-only trigger refuses the
//! insert of one event type, and the change it records must not commit either.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use super::{allow_event, refuse_event, types};
use crate::fixtures::{self, ActiveCourse, Assigned};
use crate::helpers::{ReplyExt, TestApp, exec, fetch_row, fetch_scalar};

fn database_error(reply: (StatusCode, Value)) -> Value {
    reply.error_body(StatusCode::INTERNAL_SERVER_ERROR, "DATABASE_ERROR")
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct EnrolmentState {
    claimed_by: Option<Uuid>,
    access_level: String,
    activated_at: Option<chrono::DateTime<Utc>>,
    is_dropped: bool,
    access_attempts: i32,
    access_last_error: Option<String>,
}

async fn enrolment(db: &PgPool, id: Uuid) -> EnrolmentState {
    fetch_row(
        db,
        "SELECT claimed_by, access_level, activated_at, is_dropped, access_attempts,
                access_last_error
         FROM course_enrolment WHERE id = $1",
        id,
    )
    .await
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct DropState {
    state: String,
    lease_id: Option<Uuid>,
    last_error: Option<String>,
}

async fn drop_state(db: &PgPool, enrolment_id: Uuid) -> DropState {
    fetch_row(
        db,
        "SELECT state, lease_id, last_error FROM enrolment_drop WHERE enrolment_id = $1",
        enrolment_id,
    )
    .await
}

async fn one_student(app: &TestApp, name: &str) -> (ActiveCourse, Assigned) {
    let (course, mut students) = fixtures::course_with_students(app, name, 1).await;
    (course, students.remove(0))
}

#[sqlx::test]
async fn event_write_failure_rolls_back_the_change(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, stu) = one_student(&app, "Rollback").await;
    let student = app.as_user(&app.users.students[0]);

    // The claim answers 500 and `claimed_by` stays null.
    refuse_event(&db, "enrolment_claimed").await;
    database_error(student.claim(stu.enrolment_id).await);
    assert_eq!(enrolment(&db, stu.enrolment_id).await.claimed_by, None);
    allow_event(&db, "enrolment_claimed").await;
    student.claim(stu.enrolment_id).await.ok_body();

    // The drop settle: the drop stays `depleting` and is retried.
    refuse_event(&db, "enrolment_dropped").await;
    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[stu.seat_id])
        .await
        .ok_body();
    assert_eq!(
        body["results"][0]["error"],
        "The drop could not be recorded; retry the drop"
    );
    assert!(!enrolment(&db, stu.enrolment_id).await.is_dropped);
    let record = drop_state(&db, stu.enrolment_id).await;
    assert_eq!(record.state, "depleting");
    assert_eq!(record.lease_id, None);
    allow_event(&db, "enrolment_dropped").await;
    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[stu.seat_id])
        .await
        .ok_body();
    assert_eq!(body["results"][0]["is_dropped"], true, "{body}");
    let written = types(&db, course.course_id).await;
    let count = |t: &str| written.iter().filter(|w| *w == t).count();
    assert_eq!(count("enrolment_dropped"), 1);
    assert_eq!(count("drop_failed"), 1, "the give-up of the first drop");
}

#[sqlx::test]
async fn course_and_seat_changes_roll_back_with_their_event(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let admin = app.as_admin();

    // course_created: nothing inserted, the template grant undone.
    let lab = fixtures::create_course_lab(&app, "Refused").await;
    let institution = fixtures::obi_institution_id(&app).await;
    refuse_event(&db, "course_created").await;
    database_error(
        admin
            .post_course(&json!({"virtual_lab_id": lab.vlab_id,
                "template_project_id": lab.template_project_id, "institution_id": institution}))
            .await,
    );
    let courses: i64 = fetch_scalar(
        &db,
        "SELECT count(*) FROM course WHERE virtual_lab_id = $1",
        lab.vlab_id,
    )
    .await;
    assert_eq!(courses, 0);
    assert_eq!(
        app.accounting.balance(lab.template_project_id),
        Some(rust_decimal::Decimal::ZERO)
    );
    allow_event(&db, "course_created").await;

    let draft = fixtures::create_draft_course(&app, "Draft", None, None, None).await;
    let id = draft.course_id;
    refuse_event(&db, "course_updated").await;
    database_error(
        admin
            .patch_course(id, &json!({"end_date": "2030-01-01T00:00:00Z"}))
            .await,
    );
    let end: Option<chrono::DateTime<Utc>> =
        fetch_scalar(&db, "SELECT end_date FROM course WHERE id = $1", id).await;
    assert_eq!(end, None);

    let active = fixtures::create_draft_course(
        &app,
        "To activate",
        Some(Utc::now() - chrono::TimeDelta::days(1)),
        Some(Utc::now() + chrono::TimeDelta::days(7)),
        Some(Utc::now() + chrono::TimeDelta::days(90)),
    )
    .await;
    refuse_event(&db, "course_activated").await;
    database_error(admin.activate_course(active.course_id).await);
    let status: String = fetch_scalar(
        &db,
        "SELECT status FROM course WHERE id = $1",
        active.course_id,
    )
    .await;
    assert_eq!(status, "draft");
    allow_event(&db, "course_activated").await;
    fixtures::activate_course(&app, active.course_id).await;

    refuse_event(&db, "seats_provisioned").await;
    database_error(
        admin
            .provision(&json!({"course_id": active.course_id, "number_of_seats": 2}))
            .await,
    );
    let seats: i64 = fetch_scalar(
        &db,
        "SELECT count(*) FROM seat WHERE course_id = $1",
        active.course_id,
    )
    .await;
    assert_eq!(seats, 0);
    allow_event(&db, "seats_provisioned").await;

    // A transfer: the seats stay in the source whichever of its two events fails.
    let source = fixtures::create_active_course(&app, "Source").await;
    fixtures::provision(&app, source.course_id, 1).await;
    exec(
        &db,
        "UPDATE course SET last_drop_date = now() - interval '1 minute' WHERE id = $1",
        source.course_id,
    )
    .await;
    for refused in ["seats_transferred_out", "seats_transferred_in"] {
        refuse_event(&db, refused).await;
        database_error(
            admin
                .transfer(&json!({"source_course_id": source.course_id,
                    "target_course_id": active.course_id, "amount": 1}))
                .await,
        );
        let in_source: i64 = fetch_scalar(
            &db,
            "SELECT count(*) FROM seat WHERE course_id = $1",
            source.course_id,
        )
        .await;
        assert_eq!(in_source, 1, "{refused}");
        let written = [
            types(&db, source.course_id).await,
            types(&db, active.course_id).await,
        ]
        .concat();
        assert!(
            written.iter().all(|t| !t.starts_with("seats_transferred")),
            "{refused}"
        );
        allow_event(&db, refused).await;
    }

    // course_voided: the status stays.
    refuse_event(&db, "course_voided").await;
    database_error(admin.void_course(active.course_id).await);
    let status: String = fetch_scalar(
        &db,
        "SELECT status FROM course WHERE id = $1",
        active.course_id,
    )
    .await;
    assert_eq!(status, "active");
    allow_event(&db, "course_voided").await;

    // course_budget_depleted: the flag stays false, so the next call depletes again.
    refuse_event(&db, "course_budget_depleted").await;
    database_error(admin.void_course(active.course_id).await);
    let flag: bool = fetch_scalar(
        &db,
        "SELECT budget_depleted FROM course WHERE id = $1",
        active.course_id,
    )
    .await;
    assert!(!flag);
    allow_event(&db, "course_budget_depleted").await;
    let voided = admin.void_course(active.course_id).await.ok_body();
    assert_eq!(voided["data"]["void_summary"]["budget_depleted"], true);

    // course_deleted: the rows stay.
    refuse_event(&db, "course_deleted").await;
    database_error(admin.delete_course(active.course_id).await);
    let exists: bool = fetch_scalar(
        &db,
        "SELECT EXISTS (SELECT 1 FROM course WHERE id = $1)",
        active.course_id,
    )
    .await;
    assert!(exists);
    allow_event(&db, "course_deleted").await;
    admin.delete_course(active.course_id).await.ok_body();
}

#[sqlx::test]
async fn an_assignment_whose_events_fail_is_not_saved(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Assign").await;
    fixtures::provision(&app, course.course_id, 1).await;
    for refused in ["enrolment_created", "email_queued"] {
        refuse_event(&db, refused).await;
        let body = app
            .as_faculty()
            .post_assign(
                course.course_id,
                &json!({"students": [{"student_id": "stu-1", "email": "stu-1@uni.org"}]}),
            )
            .await
            .ok_body();
        let result = &body["results"][0];
        assert_eq!(result["assignment_successful"], false, "{result}");
        assert_eq!(result["error"], "The enrolment could not be saved");
        let enrolments: i64 = fetch_scalar(
            &db,
            "SELECT count(*) FROM course_enrolment WHERE course_id = $1",
            course.course_id,
        )
        .await;
        assert_eq!(enrolments, 0, "{refused}");
        let free: i64 = fetch_scalar(
            &db,
            "SELECT count(*) FROM seat WHERE course_id = $1 AND enrolment_id IS NULL
                 AND reservation_id IS NULL",
            course.course_id,
        )
        .await;
        assert_eq!(free, 1, "{refused}: the seat is released");
        allow_event(&db, refused).await;
    }
}

#[sqlx::test]
async fn access_changes_roll_back_with_their_event(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, stu) = one_student(&app, "Access").await;
    let user = app.users.students[0].clone();

    // access_granted: the claim stands (the sync never changes its answer), the access is
    // not recorded, and the worker converges it later.
    refuse_event(&db, "access_granted").await;
    app.as_user(&user).claim(stu.enrolment_id).await.ok_body();
    let state = enrolment(&db, stu.enrolment_id).await;
    assert_eq!(state.claimed_by, Some(user.id));
    assert_eq!(state.access_level, "none");
    allow_event(&db, "access_granted").await;
    // The lapsed lease of the failed record: the worker may take it after 5 minutes.
    exec(
        &db,
        "UPDATE course_enrolment SET access_lease_until = now() - interval '1 second'
         WHERE id = $1",
        stu.enrolment_id,
    )
    .await;
    vlab_courses::jobs::worker::run_pass(&app.services()).await;
    assert_eq!(
        enrolment(&db, stu.enrolment_id).await.access_level,
        "member"
    );

    // enrolment_activated: `activated_at` stays null.
    refuse_event(&db, "enrolment_activated").await;
    let reply = app
        .as_user(&user)
        .post_empty(&format!("/courses/{}/enrolment/activate", course.course_id))
        .await;
    assert_ne!(reply.0, StatusCode::OK, "{reply:?}");
    assert_eq!(enrolment(&db, stu.enrolment_id).await.activated_at, None);
    allow_event(&db, "enrolment_activated").await;

    // access_removed: the drop settles, but access removal stays pending.
    refuse_event(&db, "access_removed").await;
    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[stu.seat_id])
        .await
        .ok_body();
    assert_eq!(body["results"][0]["is_dropped"], true);
    assert_eq!(drop_state(&db, stu.enrolment_id).await.state, "revoking");
    assert_eq!(
        enrolment(&db, stu.enrolment_id).await.access_level,
        "member"
    );
    allow_event(&db, "access_removed").await;
}

#[sqlx::test]
async fn a_failure_streak_event_rolls_back_with_the_failure_record(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (_course, stu) = one_student(&app, "Streak").await;
    refuse_event(&db, "access_update_failed").await;
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)));
    app.as_user(&app.users.students[0])
        .claim(stu.enrolment_id)
        .await
        .ok_body();
    let state = enrolment(&db, stu.enrolment_id).await;
    assert_eq!(state.access_attempts, 0);
    assert_eq!(state.access_last_error, None);
}

#[sqlx::test]
async fn a_drop_failure_event_rolls_back_with_the_lease_release(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, stu) = one_student(&app, "Drop failure").await;
    refuse_event(&db, "drop_failed").await;
    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)));
    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[stu.seat_id])
        .await
        .ok_body();
    assert!(
        body["results"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("Failed to deplete credits"),
        "{body}"
    );
    // The release did not commit: the lease stays until it lapses, with no error recorded.
    let record = drop_state(&db, stu.enrolment_id).await;
    assert!(record.lease_id.is_some());
    assert_eq!(record.last_error, None);
    assert!(
        types(&db, course.course_id)
            .await
            .iter()
            .all(|t| t != "drop_failed")
    );
}

#[sqlx::test]
async fn email_outcomes_roll_back_with_their_event(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Mail").await;
    fixtures::provision(&app, course.course_id, 1).await;

    // email_sent: SMTP accepted it, but the row is not recorded as sent.
    refuse_event(&db, "email_sent").await;
    let stu = fixtures::assign(&app, course.course_id, 1).await.remove(0);
    #[derive(Debug, PartialEq, sqlx::FromRow)]
    struct Outbox {
        status: String,
        attempts: i32,
    }
    let row = |db: PgPool| async move {
        fetch_row::<Outbox, _>(
            &db,
            "SELECT status, attempts FROM email_outbox WHERE enrolment_id = $1",
            stu.enrolment_id,
        )
        .await
    };
    assert_eq!(
        row(db.clone()).await,
        Outbox {
            status: "pending".to_owned(),
            attempts: 0
        }
    );
    allow_event(&db, "email_sent").await;

    // email_failed: the twelfth failure is not recorded either.
    refuse_event(&db, "email_failed").await;
    exec(
        &db,
        "UPDATE email_outbox SET attempts = 11, lease_id = NULL, lease_until = NULL,
             payload = payload - 'claim_link', next_attempt_at = now() - interval '1 minute'
         WHERE enrolment_id = $1",
        stu.enrolment_id,
    )
    .await;
    let pass = vlab_courses::usecases::email_outbox::run_pass(&app.services(), Utc::now(), 50)
        .await
        .unwrap();
    assert_eq!(pass.gave_up, 0, "{pass:?}");
    assert_eq!(
        row(db.clone()).await,
        Outbox {
            status: "pending".to_owned(),
            attempts: 11
        }
    );
    allow_event(&db, "email_failed").await;
    let later = Utc::now() + chrono::TimeDelta::minutes(3);
    let pass = vlab_courses::usecases::email_outbox::run_pass(&app.services(), later, 50)
        .await
        .unwrap();
    assert_eq!(pass.gave_up, 1, "{pass:?}");
    assert!(
        types(&db, course.course_id)
            .await
            .contains(&"email_failed".to_owned())
    );
}

#[sqlx::test]
async fn a_compensated_assignment_is_recorded_with_its_seat_release(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Compensated").await;
    let seat = fixtures::provision(&app, course.course_id, 1).await[0];
    let body = json!({"students": [{"student_id": "stu-1", "email": "stu-1@uni.org"}]});
    let reserved = |db: PgPool| async move {
        fetch_scalar::<bool, _>(
            &db,
            "SELECT reservation_id IS NOT NULL FROM seat WHERE id = $1",
            seat,
        )
        .await
    };

    // The release does not commit without its event: the reservation stays until it lapses.
    refuse_event(&db, "assignment_compensated").await;
    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)).times(1));
    let reply = app
        .as_faculty()
        .post_assign(course.course_id, &body)
        .await
        .ok_body();
    assert_eq!(reply["results"][0]["assignment_successful"], false);
    assert!(reserved(db.clone()).await);
    allow_event(&db, "assignment_compensated").await;
    exec(
        &db,
        "UPDATE seat SET reservation_id = NULL, reserved_until = NULL WHERE id = $1",
        seat,
    )
    .await;

    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)).times(1));
    let reply = app
        .as_faculty()
        .post_assign(course.course_id, &body)
        .await
        .ok_body();
    assert_eq!(
        reply["results"][0]["error"],
        "Failed to fund the student's project with 200 credits"
    );
    assert!(!reserved(db.clone()).await);
    let events = super::stored(&db, course.course_id).await;
    let compensated: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "assignment_compensated")
        .collect();
    assert_eq!(compensated.len(), 1, "{events:#?}");
    let e = compensated[0];
    assert_eq!(e.actor_role, "course_admin");
    assert_eq!(e.seat_id, Some(seat));
    assert_eq!(e.student_id.as_deref(), Some("stu-1"));
    assert!(e.project_id.is_some());
    assert_eq!(e.data["reason"], "acc_grant");
    // The event names the student's saga, compensated in the same transaction.
    let saga_id: Uuid = e.data["saga_id"].as_str().unwrap().parse().unwrap();
    let state: String = fetch_scalar(&db, "SELECT state FROM saga WHERE id = $1", saga_id).await;
    assert_eq!(state, "compensated");
    // The project's account was created, then its (failed) grant undone: nothing enrolled.
    assert!(
        types(&db, course.course_id)
            .await
            .iter()
            .all(|t| t != "enrolment_created")
    );
}
