//! A process killed at each crash point of assign, roster import and lab, project and course
//! creation: once the lease lapsed, the restarted server's first worker pass leaves nothing
//! behind but the logged orphan accounts (§8.6 1–7, 13).

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    SagaRecord, crashing_process, only_saga, planned_groups, planned_steps, post_aborted,
    restart_and_recover,
};
use crate::fixtures::{self, ActiveCourse, students_body};
use crate::helpers::{ReplyExt, TestApp, fetch_scalar};

const ASSIGN_STEPS: [&str; 5] = [
    "seat_reservation",
    "kc_create_group",
    "kc_create_group",
    "acc_create_project_account",
    "acc_grant",
];

/// The project id of a student's saga.
fn project_of(saga: &SagaRecord) -> Uuid {
    saga.context["project_id"]
        .as_str()
        .expect("project_id")
        .parse()
        .expect("uuid")
}

/// Assigns one student through a process that aborts at `fault`; returns the course, the
/// seat and the abandoned saga.
async fn crash_one_assign(app: &TestApp, course: &ActiveCourse, fault: &str) -> (Uuid, SagaRecord) {
    let seat = fixtures::provision(app, course.course_id, 1).await[0];
    let process = crashing_process(app, fault).await;
    post_aborted(
        app,
        &process,
        &format!("/seats/courses/{}/assign", course.course_id),
        &app.faculty_token(),
        &students_body(&[("stu-1", "stu-1@uni.org")]),
    )
    .await;
    let saga = only_saga(&app.db).await;
    assert_eq!(
        (saga.kind.as_str(), saga.state.as_str()),
        ("assign_student", "running")
    );
    (seat, saga)
}

async fn reserved(db: &PgPool, seat: Uuid) -> bool {
    fetch_scalar(
        db,
        "SELECT reservation_id IS NOT NULL FROM seat WHERE id = $1",
        seat,
    )
    .await
}

async fn count(db: &PgPool, sql: &str, id: Uuid) -> i64 {
    fetch_scalar(db, sql, id).await
}

/// The course's `assignment_compensated` events' data.
async fn compensated_events(db: &PgPool, course_id: Uuid) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT data FROM course_event WHERE course_id = $1
           AND event_type = 'assignment_compensated'",
    )
    .bind(course_id)
    .fetch_all(db)
    .await
    .expect("events")
}

#[sqlx::test]
async fn abort_after_groups_created_in_assign_is_compensated_after_restart(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Crash after groups").await;
    let (seat, saga) = crash_one_assign(&app, &course, "assign:after_groups").await;
    assert_eq!(planned_steps(&saga), ASSIGN_STEPS);
    let groups = planned_groups(&saga);
    assert!(
        groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_some())
    );
    assert!(reserved(&db, seat).await);

    let _restarted = restart_and_recover(&app).await;

    assert!(
        groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_none())
    );
    assert!(!reserved(&db, seat).await, "the seat is available again");
    let saga = only_saga(&db).await;
    assert_eq!(saga.state, "compensated");
    assert_eq!(
        saga.progress,
        json!({"1": "nothing_to_undo", "2": "undone", "3": "undone", "4": "nothing_to_undo", "5": "nothing_to_undo"})
    );
    let events = compensated_events(&db, course.course_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["saga_id"], saga.id.to_string());
    let sql = "SELECT count(*) FROM course_enrolment WHERE course_id = $1";
    assert_eq!(count(&db, sql, course.course_id).await, 0);
}

#[sqlx::test]
async fn abort_after_groups_before_the_start_also_deletes_the_waitlisted_group(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let now = chrono::Utc::now();
    let course = fixtures::create_draft_course(
        &app,
        "Crash before the start",
        Some(now + chrono::TimeDelta::days(7)),
        Some(now + chrono::TimeDelta::days(14)),
        Some(now + chrono::TimeDelta::days(90)),
    )
    .await;
    fixtures::activate_course(&app, course.course_id).await;
    fixtures::make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    let (_, saga) = crash_one_assign(&app, &course, "assign:after_groups").await;
    let groups = planned_groups(&saga);
    assert_eq!(groups.len(), 3, "{groups:?}");
    assert!(groups[2].ends_with("/waitlisted"));
    assert!(
        groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_some())
    );

    let _restarted = restart_and_recover(&app).await;

    assert!(
        groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_none())
    );
    assert_eq!(only_saga(&db).await.progress["4"], "undone");
}

#[sqlx::test]
async fn abort_after_account_created_logs_the_orphan(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Crash after account").await;
    let (seat, saga) = crash_one_assign(&app, &course, "assign:after_account").await;
    let project = project_of(&saga);
    assert!(app.accounting.account_exists(project));

    let restarted = restart_and_recover(&app).await;

    let orphan = format!("orphan accounting account (project) {project}; reconcile manually");
    super::assert_logged_once(&restarted, saga.id, &orphan);
    let saga = only_saga(&db).await;
    assert_eq!(saga.progress["4"], "undone");
    assert_eq!(
        saga.progress["5"], "nothing_to_undo",
        "no grant was attempted"
    );
    assert_eq!(app.accounting.balance(project), Some(Decimal::ZERO));
    assert!(
        planned_groups(&saga)
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_none())
    );
    assert!(!reserved(&db, seat).await);
}

#[sqlx::test]
async fn abort_after_grant_depletes_the_project(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Crash after grant").await;
    let (_, saga) = crash_one_assign(&app, &course, "assign:after_grant").await;
    let project = project_of(&saga);
    assert_eq!(app.accounting.balance(project), Some(Decimal::from(200)));
    assert_eq!(saga.progress, json!({"5": "attempted"}));

    let restarted = restart_and_recover(&app).await;

    assert_eq!(app.accounting.balance(project), Some(Decimal::ZERO));
    let calls = |op: &str| {
        app.accounting
            .calls()
            .into_iter()
            .filter(|c| c.operation == op)
            .collect::<Vec<_>>()
    };
    let key = format!("{}:5", saga.id);
    let grants = calls("acc_grant");
    assert_eq!(
        grants
            .iter()
            .filter(|c| c.idempotency_key.as_ref() == Some(&key))
            .count(),
        1
    );
    assert_eq!(calls("acc_deplete_project").len(), 1);
    // The deplete answered 2xx, so the account is known to exist: logged, not probed.
    assert!(calls("acc_project_balance").is_empty());
    let orphan = format!("orphan accounting account (project) {project}");
    super::assert_logged_once(&restarted, saga.id, &orphan);
    let saga = only_saga(&db).await;
    assert_eq!(saga.progress["5"], "undone");
    assert_eq!(saga.state, "compensated");
}

#[sqlx::test]
async fn abort_after_the_student_commit_leaves_the_enrolment_intact_and_no_saga_row(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Crash after commit").await;
    let seat = fixtures::provision(&app, course.course_id, 1).await[0];
    let process = crashing_process(&app, "assign:after_commit").await;
    post_aborted(
        &app,
        &process,
        &format!("/seats/courses/{}/assign", course.course_id),
        &app.faculty_token(),
        &students_body(&[("stu-1", "stu-1@uni.org")]),
    )
    .await;
    assert_eq!(
        super::sagas(&db).await.len(),
        0,
        "the commit deleted the saga row"
    );

    let _restarted = app.spawn_process().await;
    let project: Uuid = fetch_scalar(
        &db,
        "SELECT e.project_id FROM course_enrolment e JOIN seat s ON s.enrolment_id = e.id
         WHERE s.id = $1",
        seat,
    )
    .await;
    assert_eq!(super::sagas(&db).await.len(), 0);
    assert_eq!(app.accounting.balance(project), Some(Decimal::from(200)));
    let vlab = course.vlab_id;
    for group in [
        format!("proj/{vlab}/{project}/admin"),
        format!("proj/{vlab}/{project}/member"),
    ] {
        assert!(app.keycloak.group_by_name(&group).is_some(), "{group}");
    }
}

#[sqlx::test]
async fn abort_mid_lab_creation_and_mid_project_creation_leave_no_groups(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let token = app.admin_token();
    let process = crashing_process(&app, "create_lab:after_groups").await;
    let lab = json!({"name": "Crashed lab", "description": "", "entity": "OBI", "is_course": true});
    post_aborted(&app, &process, "/virtual-labs", &token, &lab).await;
    let saga = only_saga(&db).await;
    assert_eq!(saga.kind, "create_lab");
    assert_eq!(
        planned_steps(&saga),
        [
            "kc_create_group",
            "kc_create_group",
            "acc_create_vlab_account"
        ]
    );
    let lab_groups = planned_groups(&saga);
    assert!(
        lab_groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_some())
    );
    let _restarted = restart_and_recover(&app).await;
    assert!(
        lab_groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_none())
    );
    assert_eq!(
        fetch_scalar::<i64, _>(
            &db,
            "SELECT count(*) FROM virtual_lab WHERE name = $1",
            "Crashed lab"
        )
        .await,
        0
    );

    // The name is free again, and a project creation aborted the same way leaves nothing.
    let lab = fixtures::create_course_lab(&app, "Crashed lab").await;
    sqlx::query("DELETE FROM saga").execute(&db).await.unwrap();
    let process = crashing_process(&app, "create_project:after_groups").await;
    post_aborted(
        &app,
        &process,
        &format!("/virtual-labs/{}/projects", lab.vlab_id),
        &token,
        &json!({"name": "Crashed project"}),
    )
    .await;
    let saga = only_saga(&db).await;
    assert_eq!(saga.kind, "create_project");
    let project_groups = planned_groups(&saga);
    assert!(
        project_groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_some())
    );
    let _restarted = restart_and_recover(&app).await;
    assert!(
        project_groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_none())
    );
    assert_eq!(
        fetch_scalar::<i64, _>(
            &db,
            "SELECT count(*) FROM project WHERE name = $1",
            "Crashed project"
        )
        .await,
        0
    );
}

/// Creates a course through a process that aborts right after funding the template.
async fn crash_course_creation(app: &TestApp, lab: &fixtures::CourseLab) {
    let institution = fixtures::obi_institution_id(app).await;
    let process = crashing_process(app, "create_course:after_grant").await;
    post_aborted(
        app,
        &process,
        "/courses",
        &app.admin_token(),
        &json!({"virtual_lab_id": lab.vlab_id, "template_project_id": lab.template_project_id,
                "institution_id": institution}),
    )
    .await;
    assert_eq!(
        app.accounting.balance(lab.template_project_id),
        Some(Decimal::from(200))
    );
}

#[sqlx::test]
async fn abort_mid_course_creation_depletes_the_template(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = fixtures::create_course_lab(&app, "Crashed course").await;
    crash_course_creation(&app, &lab).await;
    let saga = only_saga(&db).await;
    assert_eq!(
        (saga.kind.as_str(), saga.progress.clone()),
        ("create_course", json!({"1": "attempted"}))
    );

    let _restarted = restart_and_recover(&app).await;

    assert_eq!(
        app.accounting.balance(lab.template_project_id),
        Some(Decimal::ZERO)
    );
    assert_eq!(only_saga(&db).await.progress["1"], "undone");
    let sql = "SELECT count(*) FROM course WHERE virtual_lab_id = $1";
    assert_eq!(count(&db, sql, lab.vlab_id).await, 0);
}

#[sqlx::test]
async fn abandoned_course_creation_does_not_deplete_a_later_courses_template(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = fixtures::create_course_lab(&app, "Abandoned course").await;
    crash_course_creation(&app, &lab).await;
    // Another creation for the lab commits before the recovery runs.
    let institution = fixtures::obi_institution_id(&app).await;
    app.as_admin()
        .post_course(&json!({"virtual_lab_id": lab.vlab_id,
                             "template_project_id": lab.template_project_id,
                             "institution_id": institution}))
        .await
        .ok_body();
    assert_eq!(
        app.accounting.balance(lab.template_project_id),
        Some(Decimal::from(400))
    );

    let restarted = restart_and_recover(&app).await;

    assert_eq!(
        app.accounting.balance(lab.template_project_id),
        Some(Decimal::from(400)),
        "the later course's credits stay"
    );
    let surplus = format!(
        "template project {} may hold 200 surplus credits from an abandoned course creation; reconcile manually",
        lab.template_project_id
    );
    let abandoned = super::sagas(&db).await;
    assert_eq!(abandoned.len(), 1, "the later creation committed its saga");
    super::assert_logged_once(&restarted, abandoned[0].id, &surplus);
    assert_eq!(abandoned[0].progress["1"], "nothing_to_undo");
}

#[sqlx::test]
async fn kill_during_real_import_then_repost_completes_it_without_orphans(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Crashed import").await;
    fixtures::provision(&app, course.course_id, 3).await;
    let csv = "student_id,email\nstu-1,stu-1@uni.org\nstu-2,stu-2@uni.org\nstu-3,stu-3@uni.org\n";
    // The second grant aborts the process: some students may be enrolled, some in flight.
    let process = crashing_process(&app, "assign:after_grant:2").await;
    post_aborted(
        &app,
        &process,
        &format!(
            "/seats/courses/{}/roster-import?dry_run=false",
            course.course_id
        ),
        &app.faculty_token(),
        &json!({ "csv": csv }),
    )
    .await;
    assert!(!super::sagas(&db).await.is_empty());

    let _restarted = restart_and_recover(&app).await;
    let abandoned: Vec<Uuid> = super::sagas(&db).await.iter().map(project_of).collect();
    let free: i64 = fetch_scalar(
        &db,
        "SELECT count(*) FROM seat WHERE course_id = $1 AND reservation_id IS NULL
           AND enrolment_id IS NULL",
        course.course_id,
    )
    .await;
    let enrolled: i64 = count(
        &db,
        "SELECT count(*) FROM course_enrolment WHERE course_id = $1",
        course.course_id,
    )
    .await;
    assert_eq!(free + enrolled, 3, "every seat is enrolled or free again");

    let body = app
        .as_faculty()
        .post_roster_import(course.course_id, "?dry_run=false", &json!({ "csv": csv }))
        .await
        .ok_body();
    let verdicts: Vec<&str> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["verdict"].as_str().expect("verdict"))
        .collect();
    assert!(
        verdicts
            .iter()
            .all(|v| *v == "assigned" || *v == "unchanged"),
        "{body}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM course_enrolment WHERE course_id = $1",
            course.course_id
        )
        .await,
        3
    );
    for project in abandoned {
        assert_eq!(
            app.accounting.balance(project).unwrap_or_default(),
            Decimal::ZERO
        );
        assert!(
            app.keycloak
                .groups()
                .iter()
                .all(|g| !g.name.contains(&project.to_string())),
            "a group of the abandoned project {project} is left"
        );
    }
}
