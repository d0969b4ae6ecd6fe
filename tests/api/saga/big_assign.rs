//! A 200-student assign (20 ms per external call) whose server is killed at several moments:
//! once the lease lapsed and the restarted server's first worker pass ran, nothing is left
//! half-made, and the faculty's retry of the students who are not enrolled succeeds.

use std::collections::HashSet;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{crashing_process, post_aborted, restart_and_recover};
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp, fetch_scalar};

const STUDENTS: usize = 200;

fn student(i: usize) -> (String, String) {
    (format!("stu-{i}"), format!("stu-{i}@uni.org"))
}

fn body(students: &[(String, String)]) -> Value {
    let students: Vec<Value> = students
        .iter()
        .map(|(id, email)| json!({"student_id": id, "email": email}))
        .collect();
    json!({ "students": students })
}

async fn ids(db: &PgPool, sql: &str, id: Uuid) -> HashSet<Uuid> {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_all(db)
        .await
        .expect("ids")
        .into_iter()
        .collect()
}

async fn killed_mid_assign_leaves_nothing_half_made(db: PgPool, fault: &str) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Two hundred").await;
    let vlab = course.vlab_id;
    super::provision_many(&app, course.course_id, STUDENTS).await;
    let students: Vec<(String, String)> = (1..=STUDENTS).map(student).collect();
    app.keycloak.set_latency(Duration::from_millis(20));
    app.accounting.set_latency(Duration::from_millis(20));

    let process = crashing_process(&app, fault).await;
    post_aborted(
        &app,
        &process,
        &format!("/seats/courses/{}/assign", course.course_id),
        &app.faculty_token(),
        &body(&students),
    )
    .await;
    drop(process);
    let restarted = restart_and_recover(&app).await;
    app.keycloak.set_latency(Duration::ZERO);
    app.accounting.set_latency(Duration::ZERO);

    // No Keycloak group without a project row.
    let projects = ids(
        &db,
        "SELECT id FROM project WHERE virtual_lab_id = $1",
        vlab,
    )
    .await;
    let prefix = format!("proj/{vlab}/");
    for group in app.keycloak.groups() {
        if let Some(rest) = group.name.strip_prefix(&prefix) {
            let project: Uuid = rest.split('/').next().unwrap().parse().unwrap();
            assert!(
                projects.contains(&project),
                "group {} has no project",
                group.name
            );
        }
    }
    // No credits on a project without a live enrolment (the template is the course's).
    let live = ids(
        &db,
        "SELECT project_id FROM course_enrolment WHERE course_id = $1 AND NOT is_dropped",
        course.course_id,
    )
    .await;
    let accounts: Vec<_> = app
        .accounting
        .accounts()
        .into_iter()
        .filter(|a| a.kind == "project" && a.vlab_id == Some(vlab))
        .filter(|a| a.id != course.template_project_id)
        .collect();
    for account in &accounts {
        if account.balance > Decimal::ZERO {
            assert!(live.contains(&account.id), "{account:?} holds credits");
        }
    }
    // No reserved seat.
    let reserved: i64 = fetch_scalar(
        &db,
        "SELECT count(*) FROM seat WHERE course_id = $1 AND reservation_id IS NOT NULL
           AND enrolment_id IS NULL",
        course.course_id,
    )
    .await;
    assert_eq!(reserved, 0);
    // Each orphan accounting account logged once (by whoever recovered its saga).
    for orphan in accounts.iter().filter(|a| !projects.contains(&a.id)) {
        let line = format!(
            "orphan accounting account (project) {}; reconcile manually",
            orphan.id
        );
        let saga: Uuid =
            sqlx::query_scalar("SELECT id FROM saga WHERE context->>'project_id' = $1")
                .bind(orphan.id.to_string())
                .fetch_one(&db)
                .await
                .expect("the orphan's saga");
        super::assert_logged_once(&restarted, saga, &line);
    }

    // The faculty's retry of the students who are not enrolled succeeds for each of them.
    let enrolled: HashSet<String> =
        sqlx::query_scalar("SELECT student_id FROM course_enrolment WHERE course_id = $1")
            .bind(course.course_id)
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(enrolled.len() < STUDENTS, "the crash interrupted the run");
    let rest: Vec<(String, String)> = students
        .into_iter()
        .filter(|(id, _)| !enrolled.contains(id))
        .collect();
    let retry = app
        .as_faculty()
        .post_assign(course.course_id, &body(&rest))
        .await
        .ok_body();
    let results = retry["results"].as_array().expect("results");
    assert_eq!(results.len(), rest.len());
    assert!(
        results.iter().all(|r| r["assignment_successful"] == true),
        "{retry}"
    );
}

#[sqlx::test]
async fn killed_after_the_first_groups_of_a_200_student_assign_leaves_nothing_half_made(
    db: PgPool,
) {
    killed_mid_assign_leaves_nothing_half_made(db, "assign:after_groups").await;
}

#[sqlx::test]
async fn killed_at_the_fortieth_grant_of_a_200_student_assign_leaves_nothing_half_made(db: PgPool) {
    killed_mid_assign_leaves_nothing_half_made(db, "assign:after_grant:40").await;
}

#[sqlx::test]
async fn killed_after_120_commits_of_a_200_student_assign_leaves_nothing_half_made(db: PgPool) {
    killed_mid_assign_leaves_nothing_half_made(db, "assign:after_commit:120").await;
}
