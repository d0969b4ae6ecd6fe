//! Lab invites (api.md §4.3, rules.md §4.4–§4.5, integrations.md §4.4 and §5).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{CourseLab, create_course_lab, make_lab_admin};
use crate::helpers::{
    INVITE_SECRET, ReplyExt, TestApp, TestUser, assert_error_body, fetch_row, fetch_scalar,
    refuse_inserts, uuid_of,
};

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
    let body = app
        .as_admin()
        .post_project(lab.vlab_id, "", &json!({"name": "Student project"}))
        .await
        .ok_body();
    (lab, uuid_of(&body["id"]))
}

/// The service admin invites faculty@example.org as a lab admin; returns the answer's body.
async fn invite_faculty(app: &TestApp, vlab: Uuid) -> Value {
    let (_, body) = app
        .as_admin()
        .post_invite(vlab, "faculty@example.org", "admin")
        .await;
    body
}

fn group_id(app: &TestApp, name: &str) -> String {
    app.keycloak.group_by_name(name).expect("group").id
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct InviteRow {
    accepted: bool,
    user_id: Option<Uuid>,
    inviter_id: Uuid,
    inviter_name: Option<String>,
}

async fn invite_row(db: &PgPool, id: Uuid) -> InviteRow {
    fetch_row(
        db,
        "SELECT accepted, user_id, inviter_id, inviter_name FROM virtual_lab_invite WHERE id = $1",
        id,
    )
    .await
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

    let body = app
        .as_admin()
        .post_invite(lab.vlab_id, " Faculty@EXAMPLE.org ", "admin")
        .await
        .ok_body();
    assert_eq!(body["message"], "Invite sent to user");
    let invite_id = uuid_of(&body["data"]["id"]);
    let stored: String = fetch_scalar(
        &db,
        "SELECT user_email FROM virtual_lab_invite WHERE id = $1",
        invite_id,
    )
    .await;
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
    let body = app
        .with_token(&app.student_token(0))
        .get_invite(&token)
        .await
        .ok_body();
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
    let (status, _) = app
        .with_token(&faculty_token)
        .get_virtual_lab(lab.vlab_id, "")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app.with_token(&faculty_token).accept_invite(&token).await;
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
    let InviteRow {
        accepted, user_id, ..
    } = invite_row(&db, invite_id).await;
    assert!(accepted);
    assert_eq!(user_id, Some(faculty.id));
    // The cached groups were forgotten: the same token reaches the lab at once.
    app.with_token(&faculty_token)
        .get_virtual_lab(lab.vlab_id, "")
        .await
        .ok_body();

    let (status, body) = app.with_token(&faculty_token).accept_invite(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["message"],
        format!("Invite for vlab: {} already accepted", lab.vlab_id)
    );
    assert_eq!(body["data"]["status"], "already_accepted");
    assert_eq!(body["data"]["invite_id"], invite_id.to_string());
    let (_, body) = app.with_token(&faculty_token).get_invite(&token).await;
    assert_eq!(body["data"]["accepted"], true);
}

#[sqlx::test]
async fn a_member_invite_moves_the_user_out_of_the_admin_group(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let student = app.users.students[0].clone();
    make_lab_admin(&app, lab.vlab_id, &student);
    let (status, _) = app
        .as_admin()
        .post_invite(lab.vlab_id, &student.email, "member")
        .await;
    assert_eq!(status, StatusCode::OK);
    let token = token_from_mail(&app, 1).await;
    app.as_user(&student).accept_invite(&token).await.ok_body();
    let paths = app.keycloak.user_group_paths(student.id);
    assert_eq!(paths, vec![format!("/vlab/{}/member", lab.vlab_id)]);
}

#[sqlx::test]
async fn the_caller_email_need_not_match_the_invite(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    app.as_admin()
        .post_invite(lab.vlab_id, "someone@else.org", "member")
        .await;
    let token = token_from_mail(&app, 1).await;
    let student = app.users.students[1].clone();
    app.as_user(&student).accept_invite(&token).await.ok_body();
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
    let first = invite_faculty(&app, lab.vlab_id).await;
    let id = uuid_of(&first["data"]["id"]);
    let token = token_from_mail(&app, 1).await;
    let (status, _) = app.as_faculty().accept_invite(&token).await;
    assert_eq!(status, StatusCode::OK);

    // Another lab admin re-invites the same address in another case.
    let second = app
        .as_faculty()
        .post_invite(lab.vlab_id, "FACULTY@example.org", "admin")
        .await
        .ok_body();
    assert_eq!(uuid_of(&second["data"]["id"]), id);
    let InviteRow {
        accepted,
        user_id,
        inviter_id: inviter,
        inviter_name,
    } = invite_row(&db, id).await;
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
    let (_, third) = app
        .as_admin()
        .post_invite(lab.vlab_id, "faculty@example.org", "member")
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
    let err = app
        .as_admin()
        .post_invite(lab.vlab_id, "new@Uni.org", "admin")
        .await
        .error_with(StatusCode::INTERNAL_SERVER_ERROR, "EXTERNAL_SERVICE_ERROR", "There was an error while emailing virtual lab invite to new@uni.org. Please try sending the invite again.");
    assert_eq!(err["details"], Value::Null);
    assert_eq!(invite_count(&db).await, 0);
}

#[sqlx::test]
async fn a_failed_re_send_restores_the_old_values(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let first = invite_faculty(&app, lab.vlab_id).await;
    let id = uuid_of(&first["data"]["id"]);
    let token = token_from_mail(&app, 1).await;
    app.as_faculty().accept_invite(&token).await;
    let before = invite_row(&db, id).await;
    let updated_before: chrono::DateTime<chrono::Utc> = fetch_scalar(
        &db,
        "SELECT updated_at FROM virtual_lab_invite WHERE id = $1",
        id,
    )
    .await;

    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)));
    app.as_faculty()
        .post_invite(lab.vlab_id, "faculty@example.org", "admin")
        .await
        .error_body(StatusCode::INTERNAL_SERVER_ERROR, "EXTERNAL_SERVICE_ERROR");
    assert_eq!(invite_row(&db, id).await, before);
    assert!(before.accepted, "still accepted");
    let updated_after: chrono::DateTime<chrono::Utc> = fetch_scalar(
        &db,
        "SELECT updated_at FROM virtual_lab_invite WHERE id = $1",
        id,
    )
    .await;
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
    app.as_admin()
        .post_invite(lab.vlab_id, "a@b.org", "admin")
        .await
        .lab_not_found();
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
        // A group suffix only, never a role (W.3.7).
        (
            json!({"email": "a@b.org", "role": "waitlisted"}),
            "role",
            "Must be one of: admin, member",
        ),
    ] {
        for path in ["invites", "invites/cancel"] {
            let err = app
                .with_token(&token)
                .post(&format!("/virtual-labs/{}/{path}", lab.vlab_id), &body)
                .await
                .invalid();
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

    app.with_token(&token)
        .post_invite(lab.vlab_id, "friend@uni.org", "member")
        .await
        .ok_body();
    let err = app
        .with_token(&token)
        .post_invite(lab.vlab_id, "friend@uni.org", "admin")
        .await
        .not_allowed();
    assert_eq!(err["details"], format!("vlab:admin on {}", lab.vlab_id));
    // The body is validated before the role rule.
    app.with_token(&token)
        .post_invite(lab.vlab_id, "friend@uni.org", "boss")
        .await
        .invalid();
    // Outsiders fail the tier whatever the body.
    let err = app
        .as_user(&app.users.students[1])
        .post(
            &format!("/virtual-labs/{}/invites", lab.vlab_id),
            &json!({}),
        )
        .await
        .not_allowed();
    assert_eq!(err["details"], format!("vlab:any on {}", lab.vlab_id));
    assert_eq!(invite_count(&db).await, 1);
}

// ---- tokens ----------------------------------------------------------------------------------

#[sqlx::test]
async fn bad_and_expired_tokens_are_refused_on_show_and_accept(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let body = invite_faculty(&app, lab.vlab_id).await;
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
            app.with_token(&caller).get_invite(token).await,
            app.with_token(&caller).accept_invite(token).await,
        ] {
            assert_error_body(&err, status, StatusCode::BAD_REQUEST, "INVALID_PARAMETER");
            assert_eq!(err["message"], "Invite Token is not valid");
            assert_eq!(err["details"], "Invitation token is malformed");
            assert_eq!(err["data"], Value::Null);
        }
    }
    for token in &expired {
        for (status, err) in [
            app.with_token(&caller).get_invite(token).await,
            app.with_token(&caller).accept_invite(token).await,
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
    app.with_token(&caller)
        .accept_invite(&legacy)
        .await
        .ok_body();
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
    let body = invite_faculty(&app, lab.vlab_id).await;
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
        let (status, err) = app.with_token(&caller).get_invite(token).await;
        assert_not_found(status, &err);
        let (status, err) = app.with_token(&caller).accept_invite(token).await;
        assert_not_found(status, &err);
    }
    let good = token_from_mail(&app, 1).await;
    sqlx::query("UPDATE virtual_lab SET deleted = true")
        .execute(&db)
        .await
        .unwrap();
    let (status, err) = app.with_token(&caller).get_invite(&good).await;
    assert_not_found(status, &err);
    let (status, err) = app.with_token(&caller).accept_invite(&good).await;
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
    let err = app.with_token(&caller).get("/invites").await.invalid();
    assert_eq!(err["details"]["token"], "Field required");
    let err = app.with_token(&caller).accept_invite("").await.invalid();
    assert_eq!(err["details"]["token"], "Must not be empty");
    let (status, _) = app.anonymous().get("/invites?token=x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

// ---- accepting -------------------------------------------------------------------------------

#[sqlx::test]
async fn the_owner_cannot_accept_an_invite_to_their_own_lab(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let (_, body) = app
        .as_admin()
        .post_invite(lab.vlab_id, "x@y.org", "member")
        .await;
    let token = token_from_mail(&app, 1).await;
    let err = app.as_admin().accept_invite(&token).await.error_with(
        StatusCode::BAD_REQUEST,
        "DATA_CONFLICT",
        "Inviter user is the same as invitee user",
    );
    assert_eq!(err["details"], "Invitation is forbidden");
    let accepted = invite_row(&db, uuid_of(&body["data"]["id"])).await.accepted;
    assert!(!accepted);
}

#[sqlx::test]
async fn a_failed_attachment_is_502_and_a_second_accept_completes_it(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, project) = lab_with_two_projects(&app).await;
    let body = invite_faculty(&app, lab.vlab_id).await;
    let id = uuid_of(&body["data"]["id"]);
    let token = token_from_mail(&app, 1).await;
    let faculty = app.users.faculty.clone();
    // The lab group and the first project pass; the second project membership fails.
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)).skip(2));
    app.as_faculty().accept_invite(&token).await.error_with(
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
        "Could not attach user to group",
    );
    let InviteRow {
        accepted, user_id, ..
    } = invite_row(&db, id).await;
    assert!(!accepted);
    assert_eq!(user_id, None);
    // No compensation: what was added stays.
    assert!(
        app.keycloak
            .user_group_paths(faculty.id)
            .contains(&format!("/vlab/{}/admin", lab.vlab_id))
    );

    let (status, body) = app.as_faculty().accept_invite(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "accepted");
    let paths = app.keycloak.user_group_paths(faculty.id);
    assert!(paths.contains(&format!("/proj/{}/{project}/admin", lab.vlab_id)));
    assert!(paths.contains(&format!(
        "/proj/{}/{}/admin",
        lab.vlab_id, lab.template_project_id
    )));
    let InviteRow {
        accepted, user_id, ..
    } = invite_row(&db, id).await;
    assert!(accepted);
    assert_eq!(user_id, Some(faculty.id));
}

#[sqlx::test]
async fn a_failed_removal_from_the_other_group_is_502(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    app.as_admin()
        .post_invite(lab.vlab_id, "faculty@example.org", "member")
        .await;
    let token = token_from_mail(&app, 1).await;
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)));
    app.as_faculty()
        .accept_invite(&token)
        .await
        .error_body(StatusCode::BAD_GATEWAY, "EXTERNAL_SERVICE_ERROR");
    let (status, _) = app.as_faculty().accept_invite(&token).await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test]
async fn concurrent_accepts_answer_accepted_once(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    app.as_admin()
        .post_invite(lab.vlab_id, "faculty@example.org", "admin")
        .await;
    let token = token_from_mail(&app, 1).await;
    // Slow memberships, so both requests pass the "already accepted" check first.
    app.keycloak
        .set_operation_latency("kc_add_member", Duration::from_millis(200));
    let (ta, tb) = (app.as_faculty(), app.as_faculty());
    let (a, b) = tokio::join!(ta.accept_invite(&token), tb.accept_invite(&token));
    let mut statuses = vec![
        a.1["data"]["status"].as_str().unwrap().to_owned(),
        b.1["data"]["status"].as_str().unwrap().to_owned(),
    ];
    statuses.sort();
    assert_eq!(statuses, ["accepted", "already_accepted"]);
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
}

// ---- cancel ----------------------------------------------------------------------------------

#[sqlx::test]
async fn cancelling_deletes_a_pending_invite(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let token = app.admin_token();
    app.with_token(&token)
        .post_invite(lab.vlab_id, "Ada@Uni.org", "member")
        .await;
    app.with_token(&token)
        .cancel_invite(lab.vlab_id, "ada@uni.org", "admin")
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            "Invite not found",
        );
    let body = app
        .with_token(&token)
        .cancel_invite(lab.vlab_id, "ADA@uni.org", "member")
        .await
        .ok_body();
    assert_eq!(
        body,
        json!({"message": "Invite for email ADA@uni.org successfully deleted.", "data": null})
    );
    assert_eq!(invite_count(&db).await, 0);
    // The e-mailed link is dead now.
    let link_token = token_from_mail(&app, 1).await;
    let (status, _) = app.as_faculty().get_invite(&link_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn an_accepted_invite_cannot_be_cancelled(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    let token = app.admin_token();
    app.with_token(&token)
        .post_invite(lab.vlab_id, "faculty@example.org", "admin")
        .await;
    let link_token = token_from_mail(&app, 1).await;
    app.as_faculty().accept_invite(&link_token).await;
    let err = app
        .with_token(&token)
        .cancel_invite(lab.vlab_id, "faculty@example.org", "admin")
        .await
        .error_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ENTITY_ALREADY_UPDATED",
            "Invite has already been accepted",
        );
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
    let err = app
        .as_user(&student)
        .cancel_invite(lab.vlab_id, "a@b.org", "member")
        .await
        .not_allowed();
    assert_eq!(err["details"], format!("vlab:admin on {}", lab.vlab_id));
}

#[sqlx::test]
async fn a_database_failure_while_saving_the_invite_is_500_and_sends_nothing(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (lab, _) = lab_with_two_projects(&app).await;
    refuse_inserts(&db, "virtual_lab_invite").await;
    let err = app
        .as_admin()
        .post_invite(lab.vlab_id, "a@b.org", "admin")
        .await
        .error_with(
            StatusCode::INTERNAL_SERVER_ERROR,
            "DATABASE_ERROR",
            "Invite to user could not be sent due to an error in database.",
        );
    assert_eq!(err["details"], Value::Null);
    assert!(app.smtp.messages().is_empty());
    assert_eq!(app.smtp.call_count("smtp_send"), 0);
}
