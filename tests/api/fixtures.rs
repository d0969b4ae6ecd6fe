//! Scenario builders over the HTTP API, shared by the test modules. Each builder asserts the
//! success of the calls it makes, so a failing set-up fails loudly where it happens.

#![allow(dead_code)]

// ---- virtual labs and projects (issue 3)

/// A course lab and its template project.
#[derive(Debug, Clone, Copy)]
pub struct CourseLab {
    pub vlab_id: uuid::Uuid,
    pub template_project_id: uuid::Uuid,
}

/// Creates a course lab (is_course: true, as the service admin) and a template project named
/// "Template", both through the API.
pub async fn create_course_lab(app: &crate::helpers::TestApp, name: &str) -> CourseLab {
    let token = app.admin_token();
    let (status, lab) = crate::helpers::json(
        app.post(
            "/virtual-labs",
            Some(&token),
            &serde_json::json!({"name": name, "description": "Course lab", "entity": "OBI", "is_course": true}),
        )
        .await,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "create course lab: {lab}");
    let vlab_id: uuid::Uuid = lab["id"].as_str().expect("lab id").parse().expect("uuid");
    // The same token: lab creation forgets the caller's cached groups, so the new admin
    // membership is seen at once.
    let (status, project) = crate::helpers::json(
        app.post(
            &format!("/virtual-labs/{vlab_id}/projects"),
            Some(&token),
            &serde_json::json!({"name": "Template"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "create template project: {project}"
    );
    CourseLab {
        vlab_id,
        template_project_id: project["id"]
            .as_str()
            .expect("project id")
            .parse()
            .expect("uuid"),
    }
}

/// Puts `user` into the lab's admin group directly in the Keycloak emulator (fast set-up for
/// faculty; the invite flow itself is tested in invites.rs). Mint the user's token afterwards
/// (or wait out the groups cache) so the membership is seen.
pub fn make_lab_admin(
    app: &crate::helpers::TestApp,
    vlab_id: uuid::Uuid,
    user: &crate::helpers::TestUser,
) {
    let group = app
        .keycloak
        .group_by_name(&format!("vlab/{vlab_id}/admin"))
        .unwrap_or_else(|| panic!("no admin group for lab {vlab_id}"));
    app.keycloak.add_user_to_group(user.id, &group.id);
}

// ---- courses (issue 4)

/// A course with its lab, template project and institution.
#[derive(Debug, Clone)]
pub struct ActiveCourse {
    pub course_id: uuid::Uuid,
    pub vlab_id: uuid::Uuid,
    pub template_project_id: uuid::Uuid,
    pub institution_id: uuid::Uuid,
}

/// A course lab + template + course on the seeded "Open Brain Institute", activated, with dates
/// relative to now: start = now − 1 day, last drop = now + 7 days, end = now + 90 days.
pub async fn create_active_course(app: &crate::helpers::TestApp, name: &str) -> ActiveCourse {
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
    app: &crate::helpers::TestApp,
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
    let (status, body) = crate::helpers::json(
        app.post(
            "/courses",
            Some(&app.admin_token()),
            &serde_json::json!({
                "virtual_lab_id": vlab_id,
                "template_project_id": template_project_id,
                "institution_id": institution_id,
                "start_date": start,
                "last_drop_date": last_drop,
                "end_date": end,
            }),
        )
        .await,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "create course: {body}");
    ActiveCourse {
        course_id: body["data"]["id"]
            .as_str()
            .expect("course id")
            .parse()
            .expect("uuid"),
        vlab_id,
        template_project_id,
        institution_id,
    }
}

/// Activates a course (as admin) and asserts it worked.
pub async fn activate_course(app: &crate::helpers::TestApp, course_id: uuid::Uuid) {
    let (status, body) = crate::helpers::json(
        app.post(
            &format!("/courses/{course_id}/activate"),
            Some(&app.admin_token()),
            &serde_json::json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "activate course: {body}");
}

/// The id of the seeded "Open Brain Institute".
pub async fn obi_institution_id(app: &crate::helpers::TestApp) -> uuid::Uuid {
    let (status, body) = crate::helpers::json(
        app.get(
            "/institutions/_search?q=Open%20Brain%20Institute",
            Some(&app.admin_token()),
        )
        .await,
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "institution search: {body}"
    );
    body["data"]
        .as_array()
        .expect("institutions")
        .iter()
        .find(|i| i["name"] == "Open Brain Institute")
        .and_then(|i| i["id"].as_str())
        .expect("seeded institution")
        .parse()
        .expect("uuid")
}

// ---- seats and enrolments (issue 5)

/// Provisions `n` seats (as admin) and returns their ids.
pub async fn provision(
    app: &crate::helpers::TestApp,
    course_id: uuid::Uuid,
    n: usize,
) -> Vec<uuid::Uuid> {
    let (status, body) = crate::helpers::json(
        app.post(
            "/seats/provision",
            Some(&app.admin_token()),
            &serde_json::json!({"course_id": course_id, "number_of_seats": n}),
        )
        .await,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "provision: {body}");
    body["data"]["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|seat| seat["id"].as_str().expect("seat id").parse().expect("uuid"))
        .collect()
}

/// One successfully assigned student.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub student_id: String,
    pub email: String,
    pub seat_id: uuid::Uuid,
    pub enrolment_id: uuid::Uuid,
    pub project_id: uuid::Uuid,
}

/// Assigns students "stu-1".."stu-n" (emails stu-i@uni.org) as faculty (must be a lab admin)
/// and asserts every assignment succeeded.
pub async fn assign(
    app: &crate::helpers::TestApp,
    course_id: uuid::Uuid,
    n: usize,
) -> Vec<Assigned> {
    let students: Vec<serde_json::Value> = (1..=n)
        .map(|i| serde_json::json!({"student_id": format!("stu-{i}"), "email": format!("stu-{i}@uni.org")}))
        .collect();
    let (status, body) = crate::helpers::json(
        app.post(
            &format!("/seats/courses/{course_id}/assign"),
            Some(&app.faculty_token()),
            &serde_json::json!({ "students": students }),
        )
        .await,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "assign: {body}");
    let uuid_at = |item: &serde_json::Value, key: &str| -> uuid::Uuid {
        item[key].as_str().expect(key).parse().expect("uuid")
    };
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|item| {
            assert_eq!(item["assignment_successful"], true, "assign: {item}");
            Assigned {
                student_id: item["student_id"].as_str().expect("student_id").to_owned(),
                email: item["email"].as_str().expect("email").to_owned(),
                seat_id: uuid_at(item, "seat_id"),
                enrolment_id: uuid_at(item, "enrolment_id"),
                project_id: uuid_at(item, "project_id"),
            }
        })
        .collect()
}

/// Claims (as `student`) and activates; returns the claimed enrolment (the claim's `data`).
pub async fn claim_and_activate(
    app: &crate::helpers::TestApp,
    enrolment_id: uuid::Uuid,
    student: &crate::helpers::TestUser,
) -> serde_json::Value {
    let token = app.token(student);
    let (status, claimed) = crate::helpers::json(
        app.post(
            "/courses/claim",
            Some(&token),
            &serde_json::json!({ "enrolment_id": enrolment_id }),
        )
        .await,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "claim: {claimed}");
    let (status, activated) = crate::helpers::json(
        app.post(
            "/courses/activate-enrolments",
            Some(&token),
            &serde_json::json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "activate: {activated}");
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

// ---- drops, void, delete (issue 5 part B)

/// An active course (early: the drop window is open) whose faculty is a lab admin, with `n`
/// seats provisioned and `n` students assigned ("stu-1".."stu-n").
pub async fn course_with_students(
    app: &crate::helpers::TestApp,
    name: &str,
    n: usize,
) -> (ActiveCourse, Vec<Assigned>) {
    let course = create_active_course(app, name).await;
    make_lab_admin(app, course.vlab_id, &app.users.faculty);
    provision(app, course.course_id, n).await;
    let students = assign(app, course.course_id, n).await;
    (course, students)
}

/// `POST /seats/courses/{course_id}/drop` as faculty; returns `(status, body)`.
pub async fn drop_seats(
    app: &crate::helpers::TestApp,
    course_id: uuid::Uuid,
    seat_ids: &[uuid::Uuid],
) -> (reqwest::StatusCode, serde_json::Value) {
    crate::helpers::json(
        app.post(
            &format!("/seats/courses/{course_id}/drop"),
            Some(&app.faculty_token()),
            &serde_json::json!({ "seat_ids": seat_ids }),
        )
        .await,
    )
    .await
}

/// An active course (see [`create_active_course`]) whose lab has `app.users.faculty` as an
/// admin, ready for assign.
pub async fn course_with_faculty(app: &crate::helpers::TestApp, name: &str) -> ActiveCourse {
    let course = create_active_course(app, name).await;
    make_lab_admin(app, course.vlab_id, &app.users.faculty);
    course
}

/// `{"students": [...]}` for these `(student_id, email)` pairs.
pub fn students_body(students: &[(&str, &str)]) -> serde_json::Value {
    let students: Vec<serde_json::Value> = students
        .iter()
        .map(|(id, email)| serde_json::json!({"student_id": id, "email": email}))
        .collect();
    serde_json::json!({ "students": students })
}

/// Posts an assign request as faculty and returns `(status, body)`.
pub async fn post_assign(
    app: &crate::helpers::TestApp,
    course_id: uuid::Uuid,
    body: &serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    crate::helpers::json(
        app.post(
            &format!("/seats/courses/{course_id}/assign"),
            Some(&app.faculty_token()),
            body,
        )
        .await,
    )
    .await
}
