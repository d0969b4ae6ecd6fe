//! Lab invites (api.md §4.3, rules.md §4.4–§4.5, integrations.md §4.4 and §5).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{CourseLab, create_course_lab, make_lab_admin};
use crate::helpers::{INVITE_SECRET, TestApp, TestUser, assert_error_body, json};

fn uuid_of(value: &Value) -> Uuid {
    value.as_str().expect("uuid string").parse().expect("uuid")
}

async fn invite(
    app: &TestApp,
    token: &str,
    vlab: Uuid,
    email: &str,
    role: &str,
) -> (StatusCode, Value) {
    json(
        app.post(
            &format!("/virtual-labs/{vlab}/invites"),
            Some(token),
            &json!({"email": email, "role": role}),
        )
        .await,
    )
    .await
}

async fn show(app: &TestApp, caller: &str, invite_token: &str) -> (StatusCode, Value) {
    json(
        app.get(&format!("/invites?token={invite_token}"), Some(caller))
            .await,
    )
    .await
}

async fn accept(app: &TestApp, caller: &str, invite_token: &str) -> (StatusCode, Value) {
    json(
        app.request(
            Method::POST,
            &format!("/invites?token={invite_token}"),
            Some(caller),
            None,
        )
        .await,
    )
    .await
}

/// The token in the invite link of the `n`-th captured e-mail.
async fn token_from_mail(app: &TestApp, n: usize) -> String {
    let messages = app.smtp.wait_for_messages(n, Duration::from_secs(5)).await;
    let message = messages.get(n - 1).expect("invite e-mail");
    let link = message
        .links
        .iter()
        .find(|l| l.starts_with("http://localhost:3000/invite?token="))
        .unwrap_or_else(|| panic!("no invite link in {:?}", message.links));
    link.trim_start_matches("http://localhost:3000/invite?token=")
        .to_owned()
}

fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A course lab with the template project and one more project, as the service admin.
async fn lab_with_two_projects(app: &TestApp) -> (CourseLab, Uuid) {
    let lab = create_course_lab(app, "Neuro 101").await;
    let (status, body) = json(
        app.post(
            &format!("/virtual-labs/{}/projects", lab.vlab_id),
            Some(&app.admin_token()),
            &json!({"name": "Student project"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (lab, uuid_of(&body["id"]))
}

fn group_id(app: &TestApp, name: &str) -> String {
    app.keycloak.group_by_name(name).expect("group").id
}

async fn invite_row(db: &PgPool, id: Uuid) -> (bool, Option<Uuid>, Uuid, Option<String>) {
    sqlx::query_as(
        "SELECT accepted, user_id, inviter_id, inviter_name FROM virtual_lab_invite WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn invite_count(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM virtual_lab_invite")
        .fetch_one(db)
        .await
        .unwrap()
}

// ---- the whole flow ------------------------------------------------------------------------

#[sqlx::test]
async fn faculty_accept_an_admin_invite_and_join_every_project(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, project) = lab_with_two_projects(&app).await;
    let faculty = app.users.faculty.clone();

    let (status, body) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        " Faculty@EXAMPLE.org ",
        "admin",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Invite sent to user");
    let invite_id = uuid_of(&body["data"]["id"]);
    let stored: String =
        sqlx::query_scalar("SELECT user_email FROM virtual_lab_invite WHERE id = $1")
            .bind(invite_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, "Faculty@example.org");

    let messages = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    assert_eq!(mail.rcpt_to, vec!["Faculty@example.org".to_owned()]);
    assert_eq!(
        mail.subject.as_deref(),
        Some("Invitation to OBI virtual lab")
    );
    let text = mail.text().expect("text part");
    assert!(
        text.contains("obi-admin Test invited you to join the virtual lab Neuro 101"),
        "{text}"
    );
    let token = token_from_mail(&app, 1).await;

    // Anyone holding the link may look at it.
    let (status, body) = show(&app, &app.student_token(0), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"message": "Invite for Lab received successfully",
               "data": {"origin": "Lab", "accepted": false, "invite_id": invite_id.to_string(),
                        "inviter_full_name": "obi-admin Test",
                        "virtual_lab_id": lab.vlab_id.to_string(), "virtual_lab_name": "Neuro 101",
                        "project_id": null, "project_name": null}})
    );

    let faculty_token = app.faculty_token();
    // Before accepting, the lab is out of reach (and this caches the faculty's groups).
    let (status, _) = json(
        app.get(
            &format!("/virtual-labs/{}", lab.vlab_id),
            Some(&faculty_token),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = accept(&app, &faculty_token, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"message": "Invite for Lab accepted successfully",
               "data": {"origin": "Lab", "invite_id": invite_id.to_string(),
                        "virtual_lab_id": lab.vlab_id.to_string(), "project_id": null,
                        "status": "accepted"}})
    );
    let paths = app.keycloak.user_group_paths(faculty.id);
    for expected in [
        format!("/vlab/{}/admin", lab.vlab_id),
        format!("/proj/{}/{}/admin", lab.vlab_id, lab.template_project_id),
        format!("/proj/{}/{project}/admin", lab.vlab_id),
    ] {
        assert!(paths.contains(&expected), "{expected} not in {paths:?}");
    }
    assert!(!paths.contains(&format!("/vlab/{}/member", lab.vlab_id)));
    let (accepted, user_id, _, _) = invite_row(&db, invite_id).await;
    assert!(accepted);
    assert_eq!(user_id, Some(faculty.id));
    // The cached groups were forgotten: the same token reaches the lab at once.
    let (status, body) = json(
        app.get(
            &format!("/virtual-labs/{}", lab.vlab_id),
            Some(&faculty_token),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = accept(&app, &faculty_token, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["message"],
        format!("Invite for vlab: {} already accepted", lab.vlab_id)
    );
    assert_eq!(body["data"]["status"], "already_accepted");
    assert_eq!(body["data"]["invite_id"], invite_id.to_string());
    let (_, body) = show(&app, &faculty_token, &token).await;
    assert_eq!(body["data"]["accepted"], true);
}

#[sqlx::test]
async fn a_member_invite_moves_the_user_out_of_the_admin_group(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let student = app.users.students[0].clone();
    make_lab_admin(&app, lab.vlab_id, &student);
    let (status, _) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        &student.email,
        "member",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = token_from_mail(&app, 1).await;
    let (status, body) = accept(&app, &app.token(&student), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let paths = app.keycloak.user_group_paths(student.id);
    assert_eq!(paths, vec![format!("/vlab/{}/member", lab.vlab_id)]);
}

#[sqlx::test]
async fn the_caller_email_need_not_match_the_invite(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "someone@else.org",
        "member",
    )
    .await;
    let token = token_from_mail(&app, 1).await;
    let student = app.users.students[1].clone();
    let (status, body) = accept(&app, &app.token(&student), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        app.keycloak
            .user_group_paths(student.id)
            .contains(&format!("/vlab/{}/member", lab.vlab_id))
    );
}

// ---- sending ---------------------------------------------------------------------------------

#[sqlx::test]
async fn re_inviting_reuses_and_reopens_the_row(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let (_, first) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "faculty@example.org",
        "admin",
    )
    .await;
    let id = uuid_of(&first["data"]["id"]);
    let token = token_from_mail(&app, 1).await;
    let (status, _) = accept(&app, &app.faculty_token(), &token).await;
    assert_eq!(status, StatusCode::OK);

    // Another lab admin re-invites the same address in another case.
    let (status, second) = invite(
        &app,
        &app.faculty_token(),
        lab.vlab_id,
        "FACULTY@example.org",
        "admin",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(uuid_of(&second["data"]["id"]), id);
    let (accepted, user_id, inviter, inviter_name) = invite_row(&db, id).await;
    assert!(!accepted);
    assert_eq!(user_id, None);
    assert_eq!(inviter, app.users.faculty.id);
    assert_eq!(inviter_name.as_deref(), Some("faculty Test"));
    assert_eq!(invite_count(&db).await, 1);
    assert_eq!(
        app.smtp
            .wait_for_messages(2, Duration::from_secs(5))
            .await
            .len(),
        2
    );
    // The other role is another invite.
    let (_, third) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "faculty@example.org",
        "member",
    )
    .await;
    assert_ne!(uuid_of(&third["data"]["id"]), id);
    assert_eq!(invite_count(&db).await, 2);
}

#[sqlx::test]
async fn a_failed_send_deletes_a_new_invite(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(550)));
    let (status, err) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "new@Uni.org",
        "admin",
    )
    .await;
    assert_error_body(
        &err,
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "EXTERNAL_SERVICE_ERROR",
    );
    assert_eq!(
        err["message"],
        "There was an error while emailing virtual lab invite to new@uni.org. Please try sending the invite again."
    );
    assert_eq!(err["details"], Value::Null);
    assert_eq!(invite_count(&db).await, 0);
}

#[sqlx::test]
async fn a_failed_re_send_restores_the_old_values(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let (_, first) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "faculty@example.org",
        "admin",
    )
    .await;
    let id = uuid_of(&first["data"]["id"]);
    let token = token_from_mail(&app, 1).await;
    accept(&app, &app.faculty_token(), &token).await;
    let before = invite_row(&db, id).await;
    let updated_before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT updated_at FROM virtual_lab_invite WHERE id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();

    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)));
    let (status, err) = invite(
        &app,
        &app.faculty_token(),
        lab.vlab_id,
        "faculty@example.org",
        "admin",
    )
    .await;
    assert_error_body(
        &err,
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "EXTERNAL_SERVICE_ERROR",
    );
    assert_eq!(invite_row(&db, id).await, before);
    assert!(before.0, "still accepted");
    let updated_after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT updated_at FROM virtual_lab_invite WHERE id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(updated_after, updated_before);
}

#[sqlx::test]
async fn inviting_to_a_deleted_lab_is_404(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    sqlx::query("UPDATE virtual_lab SET deleted = true")
        .execute(&db)
        .await
        .unwrap();
    let (status, err) = invite(&app, &app.admin_token(), lab.vlab_id, "a@b.org", "admin").await;
    assert_error_body(&err, status, StatusCode::NOT_FOUND, "DATABASE_ERROR");
    assert_eq!(err["message"], "No virtual lab with this id found");
    assert!(app.smtp.messages().is_empty());
}

#[sqlx::test]
async fn invalid_invite_bodies_are_422(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let token = app.admin_token();
    for (body, field, message) in [
        (json!({"role": "admin"}), "email", "Field required"),
        (
            json!({"email": "nope", "role": "admin"}),
            "email",
            "Must be a valid e-mail address",
        ),
        (json!({"email": "a@b.org"}), "role", "Field required"),
        (
            json!({"email": "a@b.org", "role": "owner"}),
            "role",
            "Must be one of: admin, member",
        ),
    ] {
        for path in ["invites", "invites/cancel"] {
            let (status, err) = json(
                app.post(
                    &format!("/virtual-labs/{}/{path}", lab.vlab_id),
                    Some(&token),
                    &body,
                )
                .await,
            )
            .await;
            assert_error_body(
                &err,
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST",
            );
            assert_eq!(err["details"][field], message, "{path} {body}");
        }
    }
}

#[sqlx::test]
async fn lab_members_may_invite_members_only(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let student = app.users.students[0].clone();
    let member_group = group_id(&app, &format!("vlab/{}/member", lab.vlab_id));
    app.keycloak.add_user_to_group(student.id, &member_group);
    let token = app.token(&student);

    let (status, body) = invite(&app, &token, lab.vlab_id, "friend@uni.org", "member").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, err) = invite(&app, &token, lab.vlab_id, "friend@uni.org", "admin").await;
    assert_error_body(&err, status, StatusCode::FORBIDDEN, "NOT_ALLOWED_OP");
    assert_eq!(err["details"], format!("vlab:admin on {}", lab.vlab_id));
    // The body is validated before the role rule.
    let (status, err) = invite(&app, &token, lab.vlab_id, "friend@uni.org", "boss").await;
    assert_error_body(
        &err,
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    // Outsiders fail the tier whatever the body.
    let (status, err) = json(
        app.post(
            &format!("/virtual-labs/{}/invites", lab.vlab_id),
            Some(&app.student_token(1)),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_error_body(&err, status, StatusCode::FORBIDDEN, "NOT_ALLOWED_OP");
    assert_eq!(err["details"], format!("vlab:any on {}", lab.vlab_id));
    assert_eq!(invite_count(&db).await, 1);
}

// ---- tokens ----------------------------------------------------------------------------------

#[sqlx::test]
async fn bad_and_expired_tokens_are_refused_on_show_and_accept(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let (_, body) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "faculty@example.org",
        "admin",
    )
    .await;
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    let good = token_from_mail(&app, 1).await;
    let now = chrono::Utc::now();
    let caller = app.faculty_token();

    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let malformed = [
        tampered,
        "not-a-jwt".to_owned(),
        sign(
            json!({"invite_id": id, "origin": "Lab", "exp": now.timestamp() + 600}),
            "wrong secret",
        ),
        sign(
            json!({"invite_id": "x", "origin": "Lab", "exp": now.timestamp() + 600}),
            INVITE_SECRET,
        ),
        sign(json!({"invite_id": id, "origin": "Lab"}), INVITE_SECRET),
    ];
    let expired = [
        sign(
            json!({"invite_id": id, "origin": "Lab", "exp": now.timestamp() - 61}),
            INVITE_SECRET,
        ),
        // A legacy token: `exp` a string of epoch milliseconds.
        sign(
            json!({"invite_id": id, "origin": "Lab", "exp": (now.timestamp_millis() - 3_600_000).to_string()}),
            INVITE_SECRET,
        ),
    ];
    for token in &malformed {
        for (status, err) in [
            show(&app, &caller, token).await,
            accept(&app, &caller, token).await,
        ] {
            assert_error_body(&err, status, StatusCode::BAD_REQUEST, "INVALID_PARAMETER");
            assert_eq!(err["message"], "Invite Token is not valid");
            assert_eq!(err["details"], "Invitation token is malformed");
            assert_eq!(err["data"], Value::Null);
        }
    }
    for token in &expired {
        for (status, err) in [
            show(&app, &caller, token).await,
            accept(&app, &caller, token).await,
        ] {
            assert_error_body(&err, status, StatusCode::BAD_REQUEST, "TOKEN_EXPIRED");
            assert_eq!(err["message"], "Invite Token has expired");
            assert_eq!(err["details"], "Ask for a new invitation");
        }
    }
    // A legacy token that has not expired yet still works.
    let legacy = sign(
        json!({"invite_id": id, "origin": "Lab", "exp": (now.timestamp_millis() + 3_600_000).to_string()}),
        INVITE_SECRET,
    );
    let (status, body) = accept(&app, &caller, &legacy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !app.keycloak
            .user_group_paths(app.users.faculty.id)
            .is_empty()
    );
}

#[sqlx::test]
async fn unknown_invites_other_origins_and_deleted_labs_are_404(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let (_, body) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "faculty@example.org",
        "admin",
    )
    .await;
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    let exp = chrono::Utc::now().timestamp() + 600;
    let caller = app.faculty_token();
    let project_origin = sign(
        json!({"invite_id": id, "origin": "Project", "exp": exp}),
        INVITE_SECRET,
    );
    let unknown = sign(
        json!({"invite_id": Uuid::new_v4().to_string(), "origin": "Lab", "exp": exp}),
        INVITE_SECRET,
    );
    let assert_not_found = |status: StatusCode, err: &Value| {
        assert_error_body(err, status, StatusCode::NOT_FOUND, "INVALID_REQUEST");
        assert_eq!(err["message"], "No invite was found for this link");
        assert_eq!(
            err["details"],
            "The invite link is either malformed or the invite is deleted"
        );
    };
    for token in [&project_origin, &unknown] {
        let (status, err) = show(&app, &caller, token).await;
        assert_not_found(status, &err);
        let (status, err) = accept(&app, &caller, token).await;
        assert_not_found(status, &err);
    }
    let good = token_from_mail(&app, 1).await;
    sqlx::query("UPDATE virtual_lab SET deleted = true")
        .execute(&db)
        .await
        .unwrap();
    let (status, err) = show(&app, &caller, &good).await;
    assert_not_found(status, &err);
    let (status, err) = accept(&app, &caller, &good).await;
    assert_not_found(status, &err);
    assert!(
        app.keycloak
            .user_group_paths(app.users.faculty.id)
            .is_empty()
    );
}

#[sqlx::test]
async fn the_token_parameter_is_required(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let caller = app.faculty_token();
    let (status, err) = json(app.get("/invites", Some(&caller)).await).await;
    assert_error_body(
        &err,
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    assert_eq!(err["details"]["token"], "Field required");
    let (status, err) = accept(&app, &caller, "").await;
    assert_error_body(
        &err,
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    assert_eq!(err["details"]["token"], "Must not be empty");
    let (status, _) = json(app.get("/invites?token=x", None).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

// ---- accepting -------------------------------------------------------------------------------

#[sqlx::test]
async fn the_owner_cannot_accept_an_invite_to_their_own_lab(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let (_, body) = invite(&app, &app.admin_token(), lab.vlab_id, "x@y.org", "member").await;
    let token = token_from_mail(&app, 1).await;
    let (status, err) = accept(&app, &app.admin_token(), &token).await;
    assert_error_body(&err, status, StatusCode::BAD_REQUEST, "DATA_CONFLICT");
    assert_eq!(err["message"], "Inviter user is the same as invitee user");
    assert_eq!(err["details"], "Invitation is forbidden");
    let (accepted, ..) = invite_row(&db, uuid_of(&body["data"]["id"])).await;
    assert!(!accepted);
}

#[sqlx::test]
async fn a_failed_attachment_is_502_and_a_second_accept_completes_it(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, project) = lab_with_two_projects(&app).await;
    let (_, body) = invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "faculty@example.org",
        "admin",
    )
    .await;
    let id = uuid_of(&body["data"]["id"]);
    let token = token_from_mail(&app, 1).await;
    let faculty = app.users.faculty.clone();
    // The lab group and the first project pass; the second project membership fails.
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)).skip(2));
    let (status, err) = accept(&app, &app.faculty_token(), &token).await;
    assert_error_body(
        &err,
        status,
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
    );
    assert_eq!(err["message"], "Could not attach user to group");
    let (accepted, user_id, ..) = invite_row(&db, id).await;
    assert!(!accepted);
    assert_eq!(user_id, None);
    // No compensation: what was added stays.
    assert!(
        app.keycloak
            .user_group_paths(faculty.id)
            .contains(&format!("/vlab/{}/admin", lab.vlab_id))
    );

    let (status, body) = accept(&app, &app.faculty_token(), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "accepted");
    let paths = app.keycloak.user_group_paths(faculty.id);
    assert!(paths.contains(&format!("/proj/{}/{project}/admin", lab.vlab_id)));
    assert!(paths.contains(&format!(
        "/proj/{}/{}/admin",
        lab.vlab_id, lab.template_project_id
    )));
    let (accepted, user_id, ..) = invite_row(&db, id).await;
    assert!(accepted);
    assert_eq!(user_id, Some(faculty.id));
}

#[sqlx::test]
async fn a_failed_removal_from_the_other_group_is_502(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "faculty@example.org",
        "member",
    )
    .await;
    let token = token_from_mail(&app, 1).await;
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)));
    let (status, err) = accept(&app, &app.faculty_token(), &token).await;
    assert_error_body(
        &err,
        status,
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
    );
    let (status, _) = accept(&app, &app.faculty_token(), &token).await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test]
async fn concurrent_accepts_answer_accepted_once(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    invite(
        &app,
        &app.admin_token(),
        lab.vlab_id,
        "faculty@example.org",
        "admin",
    )
    .await;
    let token = token_from_mail(&app, 1).await;
    // Slow memberships, so both requests pass the "already accepted" check first.
    app.keycloak
        .set_operation_latency("kc_add_member", Duration::from_millis(200));
    let (ta, tb) = (app.faculty_token(), app.faculty_token());
    let (a, b) = tokio::join!(accept(&app, &ta, &token), accept(&app, &tb, &token));
    let mut statuses = vec![
        a.1["data"]["status"].as_str().unwrap().to_owned(),
        b.1["data"]["status"].as_str().unwrap().to_owned(),
    ];
    statuses.sort();
    assert_eq!(statuses, ["accepted", "already_accepted"]);
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
}

// ---- cancel ----------------------------------------------------------------------------------

async fn cancel(
    app: &TestApp,
    token: &str,
    vlab: Uuid,
    email: &str,
    role: &str,
) -> (StatusCode, Value) {
    json(
        app.post(
            &format!("/virtual-labs/{vlab}/invites/cancel"),
            Some(token),
            &json!({"email": email, "role": role}),
        )
        .await,
    )
    .await
}

#[sqlx::test]
async fn cancelling_deletes_a_pending_invite(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let token = app.admin_token();
    invite(&app, &token, lab.vlab_id, "Ada@Uni.org", "member").await;
    let (status, err) = cancel(&app, &token, lab.vlab_id, "ada@uni.org", "admin").await;
    assert_error_body(&err, status, StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND");
    assert_eq!(err["message"], "Invite not found");
    let (status, body) = cancel(&app, &token, lab.vlab_id, "ADA@uni.org", "member").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"message": "Invite for email ADA@uni.org successfully deleted.", "data": null})
    );
    assert_eq!(invite_count(&db).await, 0);
    // The e-mailed link is dead now.
    let link_token = token_from_mail(&app, 1).await;
    let (status, _) = show(&app, &app.faculty_token(), &link_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn an_accepted_invite_cannot_be_cancelled(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let token = app.admin_token();
    invite(&app, &token, lab.vlab_id, "faculty@example.org", "admin").await;
    let link_token = token_from_mail(&app, 1).await;
    accept(&app, &app.faculty_token(), &link_token).await;
    let (status, err) = cancel(&app, &token, lab.vlab_id, "faculty@example.org", "admin").await;
    assert_error_body(
        &err,
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ENTITY_ALREADY_UPDATED",
    );
    assert_eq!(err["message"], "Invite has already been accepted");
    assert_eq!(err["details"], Value::Null);
    assert_eq!(invite_count(&db).await, 1);
}

#[sqlx::test]
async fn only_lab_admins_cancel(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let student: TestUser = app.users.students[0].clone();
    let member_group = group_id(&app, &format!("vlab/{}/member", lab.vlab_id));
    app.keycloak.add_user_to_group(student.id, &member_group);
    let (status, err) = cancel(&app, &app.token(&student), lab.vlab_id, "a@b.org", "member").await;
    assert_error_body(&err, status, StatusCode::FORBIDDEN, "NOT_ALLOWED_OP");
    assert_eq!(err["details"], format!("vlab:admin on {}", lab.vlab_id));
}

#[sqlx::test]
async fn a_database_failure_while_saving_the_invite_is_500_and_sends_nothing(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    sqlx::raw_sql(
        "CREATE FUNCTION fail_invite_insert() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'insert refused'; END $$;
         CREATE TRIGGER fail_invite_insert BEFORE INSERT ON virtual_lab_invite
             FOR EACH ROW EXECUTE FUNCTION fail_invite_insert();",
    )
    .execute(&db)
    .await
    .unwrap();
    let (status, err) = invite(&app, &app.admin_token(), lab.vlab_id, "a@b.org", "admin").await;
    assert_error_body(
        &err,
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "DATABASE_ERROR",
    );
    assert_eq!(
        err["message"],
        "Invite to user could not be sent due to an error in database."
    );
    assert_eq!(err["details"], Value::Null);
    assert!(app.smtp.messages().is_empty());
    assert_eq!(app.smtp.call_count("smtp_send"), 0);
}
