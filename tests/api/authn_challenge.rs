//! The RFC 6750 challenge on every 401: a bare `Bearer` when no token was sent, and
//! `Bearer error="invalid_token"` for each kind of refused token. The body is unchanged.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, json};

const ROUTE: &str = "/institutions/_search";
const INVALID_TOKEN: &str = r#"Bearer error="invalid_token""#;

/// The admin's claims with `overrides` applied (`null` removes a claim), signed by the emulator.
fn token_with(app: &TestApp, overrides: Value) -> String {
    app.keycloak
        .mint_token_with_claims(crate::authn::claims_for(app, overrides))
}

/// Sends `authorization` as is and returns the status, the challenge and the body.
async fn challenge(
    app: &TestApp,
    authorization: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = app.client.get(app.url(ROUTE));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let header = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = json(response).await;
    (status, header, body)
}

#[sqlx::test]
async fn a_request_without_a_bearer_token_gets_the_bare_challenge(db: PgPool) {
    let app = TestApp::spawn(db).await;
    for authorization in [None, Some("Basic dXNlcjpwdw=="), Some("Bearer ")] {
        let (status, header, body) = challenge(&app, authorization).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(header.as_deref(), Some("Bearer"), "{authorization:?}");
        assert_eq!(
            body,
            json!({
                "error_code": "AUTHORIZATION_ERROR",
                "message": "No Authentication was provided",
                "details": "The supplied authentication is not authorized to access",
                "data": null,
            })
        );
    }
}

#[sqlx::test]
async fn every_refused_token_gets_the_invalid_token_challenge_and_the_same_body(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let now = chrono::Utc::now().timestamp();
    let genuine = app.admin_token();
    let (head, _) = genuine.rsplit_once('.').unwrap();
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(app.keycloak.current_kid());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": app.users.admin.id, "exp": now + 600}),
            &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
        )
        .unwrap()
    };
    let unknown_kid = {
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "no-such-key"}).to_string());
        let (_, rest) = genuine.split_once('.').unwrap();
        format!("{header}.{rest}")
    };
    let invalid_credentials = |details: Value| {
        json!({
            "error_code": "AUTHORIZATION_ERROR",
            "message": "Invalid authentication credentials",
            "details": details,
            "data": null,
        })
    };
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "malformed",
            "not-a-jwt".to_owned(),
            invalid_credentials(Value::Null),
        ),
        ("wrong algorithm", hs256, invalid_credentials(Value::Null)),
        (
            "unknown key id",
            unknown_kid,
            invalid_credentials(Value::Null),
        ),
        (
            "bad signature",
            format!("{head}.{}", URL_SAFE_NO_PAD.encode([7u8; 256])),
            invalid_credentials(Value::Null),
        ),
        (
            "expired",
            token_with(&app, json!({"exp": now - 600})),
            invalid_credentials(Value::Null),
        ),
        (
            "wrong issuer",
            token_with(&app, json!({"iss": "https://evil.example/realms/x"})),
            invalid_credentials(Value::Null),
        ),
        (
            "missing claim",
            token_with(&app, json!({"email": null})),
            invalid_credentials(json!("The token lacks a required claim: email")),
        ),
    ];
    for (kind, token, expected) in cases {
        let (status, header, body) = challenge(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        assert_eq!(header.as_deref(), Some(INVALID_TOKEN), "{kind}");
        assert_eq!(body, expected, "{kind}");
    }

    // A session ended at the identity provider.
    app.keycloak.revoke_user_sessions(app.users.admin.id);
    let (status, header, body) = challenge(&app, Some(&format!("Bearer {genuine}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header.as_deref(), Some(INVALID_TOKEN));
    assert_eq!(body["message"], "Invalid authentication session");
    assert_eq!(body["details"], "Session not active");
}

#[sqlx::test]
async fn answers_other_than_401_carry_no_challenge(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (status, header, _) = challenge(&app, Some(&format!("Bearer {}", app.admin_token()))).await;
    assert_eq!((status, header), (StatusCode::OK, None));
    // 403: a valid token without the admin group.
    let faculty = format!("Bearer {}", app.faculty_token());
    let (status, header, _) = challenge(&app, Some(&faculty)).await;
    assert_eq!((status, header), (StatusCode::FORBIDDEN, None));
}
