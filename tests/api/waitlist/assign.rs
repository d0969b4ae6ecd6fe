//! Assign creates the waitlisted group before the course starts (W.5.2, W.7 1–3).

use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use super::future_course;
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp, fetch_scalar};

async fn waitlisted_group_id(app: &TestApp, project_id: Uuid) -> Option<String> {
    fetch_scalar(
        &app.db,
        "SELECT waitlisted_group_id FROM project WHERE id = $1",
        project_id,
    )
    .await
}

#[sqlx::test]
async fn before_the_start_each_student_project_gets_an_empty_waitlisted_group(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Waitlist 101", 1).await;
    let project = assigned[0].project_id;

    let stored = waitlisted_group_id(&app, project).await.expect("stored id");
    let name = format!("proj/{}/{project}/waitlisted", course.vlab_id);
    let group = app.keycloak.group_by_name(&name).expect("waitlisted group");
    assert_eq!(group.id, stored);
    assert!(group.members.is_empty(), "{group:?}");
    // Faculty administers the student's project and is in no other student group.
    let faculty: Vec<String> = app
        .keycloak
        .user_group_paths(app.users.faculty.id)
        .into_iter()
        .filter(|p| p.contains(&project.to_string()))
        .collect();
    assert_eq!(
        faculty,
        [format!("/proj/{}/{project}/admin", course.vlab_id)]
    );
    let updated_at_unchanged: bool = fetch_scalar(
        &app.db,
        "SELECT updated_at = created_at FROM project WHERE id = $1",
        project,
    )
    .await;
    assert!(updated_at_unchanged);
}

#[sqlx::test]
async fn after_the_start_no_waitlisted_group_is_created(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Started 101").await;
    fixtures::provision(&app, course.course_id, 2).await;
    let creations = app.keycloak.call_count("kc_create_group");
    let assigned = fixtures::assign(&app, course.course_id, 2).await;
    assert_eq!(app.keycloak.call_count("kc_create_group") - creations, 4);
    for student in &assigned {
        assert_eq!(waitlisted_group_id(&app, student.project_id).await, None);
    }
    assert!(
        !app.keycloak
            .groups()
            .iter()
            .any(|g| g.name.ends_with("/waitlisted"))
    );
}

#[sqlx::test]
async fn a_failed_waitlisted_group_creation_undoes_the_student(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let now = chrono::Utc::now();
    let course = fixtures::create_draft_course(
        &app,
        "Waitlist fails",
        Some(now + chrono::TimeDelta::days(7)),
        Some(now + chrono::TimeDelta::days(14)),
        Some(now + chrono::TimeDelta::days(90)),
    )
    .await;
    fixtures::activate_course(&app, course.course_id).await;
    fixtures::make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    let seats = fixtures::provision(&app, course.course_id, 1).await;
    // The student's first two group creations pass; the third (of three) fails for good.
    app.keycloak.inject(
        Fault::new("kc_create_group", FaultAction::Status(500))
            .skip(2)
            .times(100),
    );
    let body = app
        .as_faculty()
        .post_assign(
            course.course_id,
            &fixtures::students_body(&[("stu-1", "stu-1@uni.org")]),
        )
        .await
        .ok_body();
    app.keycloak.clear_faults();
    let item = &body["results"][0];
    assert_eq!(item["assignment_successful"], false, "{item}");
    assert_eq!(
        item["error"],
        "Could not create the student's project groups in the identity provider"
    );
    let template = course.template_project_id.to_string();
    let student_groups: Vec<String> = app
        .keycloak
        .groups()
        .into_iter()
        .map(|g| g.name)
        .filter(|n| n.starts_with("proj/") && !n.contains(&template))
        .collect();
    assert!(student_groups.is_empty(), "{student_groups:?}");
    let rows: i64 = fetch_scalar(
        &app.db,
        "SELECT (SELECT count(*) FROM course_enrolment WHERE course_id = $1)
              + (SELECT count(*) FROM project p JOIN course c ON c.virtual_lab_id = p.virtual_lab_id
                 WHERE c.id = $1 AND p.id <> c.template_project_id)",
        course.course_id,
    )
    .await;
    assert_eq!(rows, 0);
    let free: bool = fetch_scalar(
        &app.db,
        "SELECT reservation_id IS NULL AND enrolment_id IS NULL FROM seat WHERE id = $1",
        seats[0],
    )
    .await;
    assert!(free, "the seat is released");
}
