//! Caller authentication and the SA gate, end to end through the Keycloak emulator.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use vlab_emulators::{Fault, FaultAction, KeycloakEmulator, KeycloakOptions, UserSpec};

use crate::helpers::{ReplyExt, TestApp, assert_error_body, json};

const SA_ROUTE: &str = "/institutions/_search";

/// The admin's claims as Keycloak issues them, with `overrides` applied (`null` removes a claim).
pub(crate) fn claims_for(app: &TestApp, overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let admin = &app.users.admin;
    let mut claims = json!({
        "iss": app.keycloak.issuer(),
        "sub": admin.id,
        "aud": "account",
        "exp": now + 600,
        "iat": now,
        "typ": "Bearer",
        "scope": "openid profile email",
        "email": admin.email,
        "preferred_username": admin.username,
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

async fn call(app: &TestApp, token: Option<&str>) -> (StatusCode, Value) {
    app.caller(token).get(SA_ROUTE).await
}

fn assert_invalid_credentials(status: StatusCode, body: &Value) {
    assert_error_body(
        body,
        status,
        StatusCode::UNAUTHORIZED,
        "AUTHORIZATION_ERROR",
    );
    assert_eq!(
        body["message"], "Invalid authentication credentials",
        "{body}"
    );
}

#[sqlx::test]
async fn a_service_admin_token_passes_the_admin_gate(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let body = call(&app, Some(&app.admin_token())).await.ok_body();
    assert_eq!(body["data"][0]["name"], "Open Brain Institute");
}

#[sqlx::test]
async fn a_non_admin_is_refused_by_the_admin_gate(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let body = call(&app, Some(&app.faculty_token())).await.error_with(
        StatusCode::FORBIDDEN,
        "AUTHORIZATION_ERROR",
        "Access denied",
    );
    assert_eq!(
        body["details"],
        "You do not have the required privileges to access this resource"
    );
}

#[sqlx::test]
async fn missing_or_non_bearer_credentials_are_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    call(&app, None).await.error_with(
        StatusCode::UNAUTHORIZED,
        "AUTHORIZATION_ERROR",
        "No Authentication was provided",
    );
    let response = app
        .client
        .get(app.url(SA_ROUTE))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "No Authentication was provided");
}

#[sqlx::test]
async fn a_tampered_token_is_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let token = app.admin_token();
    let (head, signature) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[10] ^= 0x01;
    let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
    let (status, body) = call(&app, Some(&tampered)).await;
    assert_invalid_credentials(status, &body);

    // A changed payload with the original signature fails too.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["sub"] = json!(app.users.faculty.id);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    let (status, body) = call(&app, Some(&parts.join("."))).await;
    assert_invalid_credentials(status, &body);
}

#[sqlx::test]
async fn a_token_signed_by_another_key_is_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let other = KeycloakEmulator::start(KeycloakOptions::default())
        .await
        .unwrap();
    other.add_user(UserSpec {
        id: app.users.admin.id,
        username: app.users.admin.username.clone(),
        email: app.users.admin.email.clone(),
        first_name: None,
        last_name: None,
        password: "test".into(),
    });
    let foreign = other.mint_token_with_claims(claims_for(&app, json!({})));
    let (status, body) = call(&app, Some(&foreign)).await;
    assert_invalid_credentials(status, &body);
}

#[sqlx::test]
async fn expired_tokens_are_401_and_the_leeway_is_60_seconds(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let now = chrono::Utc::now().timestamp();
    let expired = app
        .keycloak
        .mint_token_with_claims(claims_for(&app, json!({"exp": now - 120})));
    let (status, body) = call(&app, Some(&expired)).await;
    assert_invalid_credentials(status, &body);

    // Within the 60 s leeway our verification passes; Keycloak's userinfo, like the real one,
    // then refuses the expired token, which is a different 401.
    let within_leeway = app
        .keycloak
        .mint_token_with_claims(claims_for(&app, json!({"exp": now - 20})));
    let (status, body) = call(&app, Some(&within_leeway)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Invalid authentication session");
    assert_eq!(app.keycloak.call_count("kc_userinfo"), 1);
}

#[sqlx::test]
async fn unsigned_and_hs256_tokens_are_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let claims = claims_for(&app, json!({}));
    let kid = app.keycloak.current_kid();

    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let unsigned = format!("{header}.{payload}.");
    let (status, body) = call(&app, Some(&unsigned)).await;
    assert_invalid_credentials(status, &body);

    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid);
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    let (status, body) = call(&app, Some(&hs256)).await;
    assert_invalid_credentials(status, &body);
}

#[sqlx::test]
async fn a_wrong_issuer_is_401_when_an_issuer_is_expected(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let token = app.keycloak.mint_token_with_claims(claims_for(
        &app,
        json!({"iss": "https://evil.example/realms/x"}),
    ));
    let (status, body) = call(&app, Some(&token)).await;
    assert_invalid_credentials(status, &body);
}

#[sqlx::test]
async fn a_token_without_a_required_claim_is_401_naming_it(db: PgPool) {
    let app = TestApp::spawn(db).await;
    for (claim, overrides) in [
        ("sub", json!({"sub": "not-a-uuid"})),
        ("email", json!({"email": null})),
        ("preferred_username", json!({"preferred_username": ""})),
    ] {
        let token = app
            .keycloak
            .mint_token_with_claims(claims_for(&app, overrides));
        let (status, body) = call(&app, Some(&token)).await;
        assert_invalid_credentials(status, &body);
        assert_eq!(
            body["details"],
            format!("The token lacks a required claim: {claim}")
        );
    }
}

#[sqlx::test]
async fn a_revoked_session_is_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let token = app.admin_token();
    app.keycloak.revoke_user_sessions(app.users.admin.id);
    let body = call(&app, Some(&token)).await.error_with(
        StatusCode::UNAUTHORIZED,
        "AUTHORIZATION_ERROR",
        "Invalid authentication session",
    );
    assert_eq!(body["details"], "Session not active");
}

#[sqlx::test]
async fn an_unreachable_identity_provider_is_502(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.keycloak
        .inject(Fault::new("kc_userinfo", FaultAction::Status(503)).times(3));
    call(&app, Some(&app.admin_token())).await.error_with(
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
        "Could not verify the session with the identity provider",
    );
}

#[sqlx::test]
async fn live_groups_are_read_so_a_new_membership_counts_after_the_cache(db: PgPool) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("AUTH_GROUPS_CACHE_SECONDS".into(), "0".into());
    })
    .await;
    let token = app.faculty_token();
    let (status, _) = call(&app, Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let group = app
        .keycloak
        .ensure_group_path(crate::helpers::SERVICE_ADMIN_GROUP);
    app.keycloak.add_user_to_group(app.users.faculty.id, &group);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (status, _) = call(&app, Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
}
