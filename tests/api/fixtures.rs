//! Scenario builders over the HTTP API, shared by the test modules. Each builder asserts the
//! success of the calls it makes, so a failing set-up fails loudly where it happens.

#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, uuid_of};

// ---- virtual labs and projects

/// A course lab and its template project.
#[derive(Debug, Clone, Copy)]
pub struct CourseLab {
    pub vlab_id: Uuid,
    pub template_project_id: Uuid,
}

/// Creates a course lab (is_course: true, as the service admin) and a template project named
/// "Template", both through the API.
pub async fn create_course_lab(app: &TestApp, name: &str) -> CourseLab {
    // One caller, one token: lab creation forgets the caller's cached groups, so the new admin
    // membership is seen at once.
    let admin = app.as_admin();
    let (status, lab) = admin
        .post_virtual_lab(
            &json!({"name": name, "description": "Course lab", "entity": "OBI", "is_course": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "create course lab: {lab}");
    let vlab_id = uuid_of(&lab["id"]);
    let (status, project) = admin
        .post_project(vlab_id, "", &json!({"name": "Template"}))
        .await;
    assert_eq!(status, StatusCode::OK, "create template project: {project}");
    CourseLab {
        vlab_id,
        template_project_id: uuid_of(&project["id"]),
    }
}

/// Puts `user` into the lab's admin group directly in the Keycloak emulator (fast set-up for
/// faculty; the invite flow itself is tested in invites.rs). Mint the user's token afterwards
/// (or wait out the groups cache) so the membership is seen.
pub fn make_lab_admin(app: &TestApp, vlab_id: Uuid, user: &TestUser) {
    let group = app
        .keycloak
        .group_by_name(&format!("vlab/{vlab_id}/admin"))
        .unwrap_or_else(|| panic!("no admin group for lab {vlab_id}"));
    app.keycloak.add_user_to_group(user.id, &group.id);
}

// ---- courses

/// The keys of a course's detail, in the order the service writes them.
pub const COURSE_KEYS: [&str; 10] = [
    "id",
    "virtual_lab_id",
    "institution_id",
    "template_project_id",
    "status",
    "credits_per_seat",
    "start_date",
    "end_date",
    "last_drop_date",
    "budget_depleted",
];

/// A course with its lab, template project and institution.
#[derive(Debug, Clone)]
pub struct ActiveCourse {
    pub course_id: Uuid,
    pub vlab_id: Uuid,
    pub template_project_id: Uuid,
    pub institution_id: Uuid,
}

/// A course lab + template + course on the seeded "Open Brain Institute", activated, with dates
/// relative to now: start = now − 1 day, last drop = now + 7 days, end = now + 90 days.
pub async fn create_active_course(app: &TestApp, name: &str) -> ActiveCourse {
    let now = chrono::Utc::now();
    let course = create_draft_course(
        app,
        name,
        Some(now - chrono::TimeDelta::days(1)),
        Some(now + chrono::TimeDelta::days(7)),
        Some(now + chrono::TimeDelta::days(90)),
    )
    .await;
    activate_course(app, course.course_id).await;
    course
}

/// A course lab + template + draft course on the seeded "Open Brain Institute" with these
/// dates (any may be `None`), not activated.
pub async fn create_draft_course(
    app: &TestApp,
    name: &str,
    start: Option<chrono::DateTime<chrono::Utc>>,
    last_drop: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> ActiveCourse {
    let CourseLab {
        vlab_id,
        template_project_id,
    } = create_course_lab(app, name).await;
    let institution_id = obi_institution_id(app).await;
    let (status, body) = app
        .as_admin()
        .post_course(&json!({
                "virtual_lab_id": vlab_id,
                "template_project_id": template_project_id,
                "institution_id": institution_id,
                "start_date": start,
                "last_drop_date": last_drop,
                "end_date": end,
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "create course: {body}");
    ActiveCourse {
        course_id: uuid_of(&body["data"]["id"]),
        vlab_id,
        template_project_id,
        institution_id,
    }
}

/// Activates a course (as admin) and asserts it worked.
pub async fn activate_course(app: &TestApp, course_id: Uuid) {
    let (status, body) = app
        .as_admin()
        .post(&format!("/courses/{course_id}/activate"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "activate course: {body}");
}

/// The id of the seeded "Open Brain Institute".
pub async fn obi_institution_id(app: &TestApp) -> Uuid {
    let (status, body) = app
        .as_admin()
        .search_institutions("?q=Open%20Brain%20Institute")
        .await;
    assert_eq!(status, StatusCode::OK, "institution search: {body}");
    let seeded = body["data"]
        .as_array()
        .expect("institutions")
        .iter()
        .find(|i| i["name"] == "Open Brain Institute")
        .expect("seeded institution");
    uuid_of(&seeded["id"])
}

// ---- seats and enrolments

/// Provisions `n` seats (as admin) and returns their ids.
pub async fn provision(app: &TestApp, course_id: Uuid, n: usize) -> Vec<Uuid> {
    let (status, body) = app
        .as_admin()
        .provision(&json!({"course_id": course_id, "number_of_seats": n}))
        .await;
    assert_eq!(status, StatusCode::OK, "provision: {body}");
    body["data"]["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|seat| uuid_of(&seat["id"]))
        .collect()
}

/// One successfully assigned student.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub student_id: String,
    pub email: String,
    pub seat_id: Uuid,
    pub enrolment_id: Uuid,
    pub project_id: Uuid,
}

/// Assigns students "stu-1".."stu-n" (emails stu-i@uni.org) as faculty (must be a lab admin)
/// and asserts every assignment succeeded.
pub async fn assign(app: &TestApp, course_id: Uuid, n: usize) -> Vec<Assigned> {
    let students: Vec<Value> = (1..=n)
        .map(|i| json!({"student_id": format!("stu-{i}"), "email": format!("stu-{i}@uni.org")}))
        .collect();
    let (status, body) = app
        .as_faculty()
        .post_assign(course_id, &json!({ "students": students }))
        .await;
    assert_eq!(status, StatusCode::OK, "assign: {body}");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|item| {
            assert_eq!(item["assignment_successful"], true, "assign: {item}");
            Assigned {
                student_id: item["student_id"].as_str().expect("student_id").to_owned(),
                email: item["email"].as_str().expect("email").to_owned(),
                seat_id: uuid_of(&item["seat_id"]),
                enrolment_id: uuid_of(&item["enrolment_id"]),
                project_id: uuid_of(&item["project_id"]),
            }
        })
        .collect()
}

/// Claims (as `student`) and activates; returns the claimed enrolment (the claim's `data`).
pub async fn claim_and_activate(app: &TestApp, enrolment_id: Uuid, student: &TestUser) -> Value {
    let student = app.as_user(student);
    let (status, claimed) = student.claim(enrolment_id).await;
    assert_eq!(status, StatusCode::OK, "claim: {claimed}");
    let (status, activated) = student
        .post("/courses/activate-enrolments", &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "activate: {activated}");
    let mine = activated["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["enrolment_id"] == enrolment_id.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("no activation result for {enrolment_id}: {activated}"));
    assert_eq!(mine["activated"], true, "activate: {mine}");
    claimed["data"].clone()
}

// ---- drops, void, delete

/// An active course (early: the drop window is open) whose faculty is a lab admin, with `n`
/// seats provisioned and `n` students assigned ("stu-1".."stu-n").
pub async fn course_with_students(
    app: &TestApp,
    name: &str,
    n: usize,
) -> (ActiveCourse, Vec<Assigned>) {
    let course = create_active_course(app, name).await;
    make_lab_admin(app, course.vlab_id, &app.users.faculty);
    provision(app, course.course_id, n).await;
    let students = assign(app, course.course_id, n).await;
    (course, students)
}

/// An active course (see [`create_active_course`]) whose lab has `app.users.faculty` as an
/// admin, ready for assign.
pub async fn course_with_faculty(app: &TestApp, name: &str) -> ActiveCourse {
    let course = create_active_course(app, name).await;
    make_lab_admin(app, course.vlab_id, &app.users.faculty);
    course
}

/// `{"students": [...]}` for these `(student_id, email)` pairs.
pub fn students_body(students: &[(&str, &str)]) -> Value {
    let students: Vec<Value> = students
        .iter()
        .map(|(id, email)| json!({"student_id": id, "email": email}))
        .collect();
    json!({ "students": students })
}
