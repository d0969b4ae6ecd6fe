//! The waitlist (spec addendum W): assign's waitlisted group, the claim's access sync, both
//! activations, the worker's access pass, drops emptying the waitlisted group, and the upgrade
//! of round-1 data. Shared set-ups and reads live here; each area has its own module.

mod activate;
mod assign;
mod claim;
mod drops;
mod races;
mod upgrade;
mod worker;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vlab_courses::usecases::access::{AccessPass, access_pass};

use crate::fixtures::{self, ActiveCourse, Assigned};
use crate::helpers::{Reply, TestApp, TestUser, exec, fetch_row, fetch_scalar, json};

/// An active course starting in 7 days (last drop in 14, end in 90) whose faculty is a lab
/// admin, with `n` students assigned.
pub async fn future_course(app: &TestApp, name: &str, n: usize) -> (ActiveCourse, Vec<Assigned>) {
    let now = Utc::now();
    let course = fixtures::create_draft_course(
        app,
        name,
        Some(now + chrono::TimeDelta::days(7)),
        Some(now + chrono::TimeDelta::days(14)),
        Some(now + chrono::TimeDelta::days(90)),
    )
    .await;
    fixtures::activate_course(app, course.course_id).await;
    fixtures::make_lab_admin(app, course.vlab_id, &app.users.faculty);
    fixtures::provision(app, course.course_id, n).await;
    let assigned = fixtures::assign(app, course.course_id, n).await;
    (course, assigned)
}

/// An active course that started yesterday, with `n` students assigned.
pub async fn started_course(app: &TestApp, name: &str, n: usize) -> (ActiveCourse, Vec<Assigned>) {
    fixtures::course_with_students(app, name, n).await
}

/// The course starts now (W.2.4 lets tests move `start_date`).
pub async fn start_course(app: &TestApp, course_id: Uuid) {
    exec(
        &app.db,
        "UPDATE course SET start_date = now() - interval '1 second' WHERE id = $1",
        course_id,
    )
    .await;
}

/// Claims as `student` and asserts the 200.
pub async fn claim(app: &TestApp, student: &TestUser, enrolment_id: Uuid) {
    let (status, body) = app.as_user(student).claim(enrolment_id).await;
    assert_eq!(status, reqwest::StatusCode::OK, "claim: {body}");
}

/// The group paths of a user in the Keycloak emulator.
pub fn paths(app: &TestApp, user: &TestUser) -> Vec<String> {
    let mut paths = app.keycloak.user_group_paths(user.id);
    paths.sort();
    paths
}

pub fn waitlisted(course: &ActiveCourse, student: &Assigned) -> String {
    format!("/proj/{}/{}/waitlisted", course.vlab_id, student.project_id)
}

pub fn member(course: &ActiveCourse, student: &Assigned) -> String {
    format!("/proj/{}/{}/member", course.vlab_id, student.project_id)
}

pub fn lab_member(course: &ActiveCourse) -> String {
    format!("/vlab/{}/member", course.vlab_id)
}

/// The paths a waitlisted student holds, and those a member holds.
pub fn waitlisted_paths(course: &ActiveCourse, student: &Assigned) -> Vec<String> {
    sorted([waitlisted(course, student), lab_member(course)])
}

pub fn member_paths(course: &ActiveCourse, student: &Assigned) -> Vec<String> {
    sorted([member(course, student), lab_member(course)])
}

fn sorted<const N: usize>(paths: [String; N]) -> Vec<String> {
    let mut paths = paths.to_vec();
    paths.sort();
    paths
}

/// The access columns of an enrolment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Access {
    pub access_level: String,
    pub access_attempts: i32,
    pub access_next_attempt_at: Option<DateTime<Utc>>,
    pub access_lease_id: Option<Uuid>,
    pub activated_at: Option<DateTime<Utc>>,
}

pub async fn access(app: &TestApp, enrolment_id: Uuid) -> Access {
    fetch_row(
        &app.db,
        "SELECT access_level, access_attempts, access_next_attempt_at, access_lease_id,
                activated_at
         FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await
}

pub async fn drop_state(app: &TestApp, enrolment_id: Uuid) -> Option<String> {
    fetch_scalar(
        &app.db,
        "SELECT (SELECT state FROM enrolment_drop WHERE enrolment_id = $1)",
        enrolment_id,
    )
    .await
}

/// One worker access pass, as the worker runs it.
pub async fn pass(app: &TestApp) -> AccessPass {
    access_pass(&app.services(), Utc::now(), 50)
        .await
        .expect("access pass")
}

/// A failed sync is due now (W.2.4 lets tests write `access_next_attempt_at`).
pub async fn make_due(app: &TestApp, enrolment_id: Uuid) {
    exec(
        &app.db,
        "UPDATE course_enrolment SET access_next_attempt_at = now() - interval '1 second'
         WHERE id = $1",
        enrolment_id,
    )
    .await;
}

/// Member additions reach Keycloak and then wait, so that a test can act while one is in
/// flight. Dropping it lets additions through at once again.
pub struct StalledAdds<'a> {
    app: &'a TestApp,
    before: usize,
}

impl<'a> StalledAdds<'a> {
    pub fn start(app: &'a TestApp, by: std::time::Duration) -> Self {
        let before = app.keycloak.call_count("kc_add_member");
        app.keycloak.set_operation_latency("kc_add_member", by);
        Self { app, before }
    }

    /// Waits until an addition made since `start` has reached Keycloak.
    pub async fn in_flight(&self) {
        for _ in 0..300 {
            if self.app.keycloak.call_count("kc_add_member") > self.before {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no member addition reached Keycloak");
    }
}

impl Drop for StalledAdds<'_> {
    fn drop(&mut self) {
        self.app
            .keycloak
            .set_operation_latency("kc_add_member", std::time::Duration::ZERO);
    }
}

/// A student claimed before the start, the course started, and their single activation is
/// now stalled in Keycloak with its member additions in flight.
pub async fn activation_in_flight<'a>(
    app: &'a TestApp,
    name: &str,
) -> (
    ActiveCourse,
    Assigned,
    StalledAdds<'a>,
    tokio::task::JoinHandle<Reply>,
) {
    let (course, mut assigned) = future_course(app, name, 1).await;
    let assigned = assigned.remove(0);
    claim(app, &app.users.students[0], assigned.enrolment_id).await;
    start_course(app, course.course_id).await;
    let token = app.student_token(0);
    // Authenticate once, so only the activation's own Keycloak calls are slowed.
    app.get(&format!("/virtual-labs/{}", course.vlab_id), Some(&token))
        .await;
    let stall = StalledAdds::start(app, std::time::Duration::from_millis(1500));
    let path = format!("/courses/{}/enrolment/activate", course.course_id);
    let pending = post_in_background(app, &path, token, None);
    stall.in_flight().await;
    (course, assigned, stall, pending)
}

/// POSTs `body` (none: no body) with `token` in a task of its own, to race it.
pub fn post_in_background(
    app: &TestApp,
    path: &str,
    token: String,
    body: Option<serde_json::Value>,
) -> tokio::task::JoinHandle<Reply> {
    let mut request = app.client.post(app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    tokio::spawn(async move { json(request.send().await.expect("the request is sent")).await })
}

/// A drop won a race against a grant: S3 re-opened D4, which ran a second time, and the
/// student holds no group and no access.
pub async fn assert_the_drop_won(app: &TestApp, student: &TestUser, enrolment_id: Uuid) {
    let removals: i32 = fetch_scalar(
        &app.db,
        "SELECT access_attempts FROM enrolment_drop WHERE enrolment_id = $1",
        enrolment_id,
    )
    .await;
    assert_eq!(removals, 2, "D4 re-opened and run again");
    assert_eq!(drop_state(app, enrolment_id).await.as_deref(), Some("done"));
    assert!(paths(app, student).is_empty(), "{:?}", paths(app, student));
    let row = access(app, enrolment_id).await;
    assert_eq!(
        (
            row.access_level.as_str(),
            row.access_lease_id,
            row.activated_at
        ),
        ("none", None, None)
    );
}
