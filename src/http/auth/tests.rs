//! End-to-end tests of [`Authenticator`] against a loopback identity provider serving a JWKS
//! and userinfo, with real RSA keys.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

const REALM: &str = "test realm";
const ISSUER: &str = "http://kc.example/realms/test";
const SUB: &str = "7d3c0c8e-1f2a-4b3c-8d4e-5f6a7b8c9d0e";
const LAB: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const SERVICE_ADMIN: &str = "/service/virtual-lab-svc/admin";

struct TestKey {
    encoding: EncodingKey,
    n: String,
    public_der: Vec<u8>,
}

fn generate_key() -> TestKey {
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = pair.as_der().unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    let public = pair.public_key();
    TestKey {
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        n: URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        public_der: public.as_ref().to_vec(),
    }
}

/// Three keys shared by every test: generating RSA keys is the slow part.
static KEYS: LazyLock<[TestKey; 3]> =
    LazyLock::new(|| [generate_key(), generate_key(), generate_key()]);

fn key(i: usize) -> &'static TestKey {
    &KEYS[i]
}

fn jwk(i: usize, kid: Option<&str>) -> Value {
    let mut jwk = json!({"kty": "RSA", "alg": "RS256", "use": "sig", "n": key(i).n, "e": "AQAB"});
    if let Some(kid) = kid {
        jwk["kid"] = json!(kid);
    }
    jwk
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> Value {
    json!({
        "sub": SUB,
        "email": "ada@example.org",
        "preferred_username": "ada",
        "name": "Ada Lovelace",
        "iss": ISSUER,
        "aud": "account",
        "typ": "Bearer",
        "azp": "frontend",
        "sid": "session-1",
        "iat": now(),
        "exp": now() + 300,
    })
}

fn sign(i: usize, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key(i).encoding).unwrap()
}

/// A token signed by key 0 with kid `k0`.
fn token_with(claims: &Value) -> String {
    sign(0, Some("k0"), claims)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The loopback identity provider.
struct Idp {
    jwks: Mutex<Value>,
    jwks_status: AtomicU16,
    jwks_hits: AtomicUsize,
    userinfo: Mutex<Value>,
    userinfo_status: AtomicU16,
    userinfo_hits: AtomicUsize,
    last_authorization: Mutex<Option<String>>,
}

impl Idp {
    fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
    fn userinfo_hits(&self) -> usize {
        self.userinfo_hits.load(Ordering::SeqCst)
    }
    fn set_jwks(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }
    fn set_groups(&self, groups: Value) {
        *self.userinfo.lock().unwrap() = json!({"sub": SUB, "groups": groups});
    }
}

async fn certs(Path(realm): Path<String>, State(idp): State<Arc<Idp>>) -> impl IntoResponse {
    assert_eq!(realm, REALM);
    idp.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(idp.jwks_status.load(Ordering::SeqCst)).unwrap();
    let body = idp.jwks.lock().unwrap().clone();
    (status, axum::Json(body))
}

async fn userinfo(
    Path(realm): Path<String>,
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    assert_eq!(realm, REALM);
    idp.userinfo_hits.fetch_add(1, Ordering::SeqCst);
    *idp.last_authorization.lock().unwrap() = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = StatusCode::from_u16(idp.userinfo_status.load(Ordering::SeqCst)).unwrap();
    let body = idp.userinfo.lock().unwrap().clone();
    (status, axum::Json(body))
}

/// Starts the provider, serving key 0 as `k0`, and returns it with its base URL.
async fn start_idp() -> (Arc<Idp>, String) {
    let idp = Arc::new(Idp {
        jwks: Mutex::new(json!({"keys": [jwk(0, Some("k0"))]})),
        jwks_status: AtomicU16::new(200),
        jwks_hits: AtomicUsize::new(0),
        userinfo: Mutex::new(json!({})),
        userinfo_status: AtomicU16::new(200),
        userinfo_hits: AtomicUsize::new(0),
        last_authorization: Mutex::new(None),
    });
    idp.set_groups(json!([format!("/vlab/{LAB}/admin"), SERVICE_ADMIN]));
    let app = axum::Router::new()
        .route("/realms/{realm}/protocol/openid-connect/certs", get(certs))
        .route(
            "/realms/{realm}/protocol/openid-connect/userinfo",
            get(userinfo),
        )
        .with_state(Arc::clone(&idp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (idp, format!("http://{addr}"))
}

fn config(base_url: &str) -> AuthConfig {
    AuthConfig {
        kc_server_uri: base_url.to_owned(),
        realm: REALM.to_owned(),
        expected_issuer: None,
        groups_cache_ttl: Duration::from_secs(60),
        service_admin_group: SERVICE_ADMIN.to_owned(),
    }
}

fn authenticator(config: AuthConfig) -> Authenticator {
    let outbound = Outbound::new(Duration::from_secs(5))
        .unwrap()
        .with_backoff_base(Duration::from_millis(1));
    Authenticator::new(config, outbound)
}

async fn setup() -> (Arc<Idp>, Authenticator) {
    let (idp, url) = start_idp().await;
    (idp, authenticator(config(&url)))
}

// --- the happy path -----------------------------------------------------------------------

#[tokio::test]
async fn a_valid_token_passes_and_its_groups_are_parsed() {
    let (idp, auth) = setup().await;
    let token = token_with(&claims());
    let caller = auth.authenticate(Some(&bearer(&token))).await.unwrap();

    assert_eq!(caller.sub, Uuid::parse_str(SUB).unwrap());
    assert_eq!(caller.email, "ada@example.org");
    assert_eq!(caller.preferred_username, "ada");
    assert_eq!(caller.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(caller.display_name(), "Ada Lovelace");
    let lab = Uuid::parse_str(LAB).unwrap();
    assert!(caller.groups.is_vlab_admin(lab));
    assert!(caller.groups.is_service_admin());
    assert_eq!(caller.groups.vlab_ids(true), vec![lab]);
    // Userinfo got the caller's own token.
    assert_eq!(
        idp.last_authorization.lock().unwrap().as_deref(),
        Some(bearer(&token).as_str())
    );
    assert_eq!(idp.jwks_hits(), 1);
    assert_eq!(idp.userinfo_hits(), 1);
}

#[tokio::test]
async fn the_display_name_falls_back_to_the_username() {
    let (_idp, auth) = setup().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("name");
    let caller = auth
        .authenticate(Some(&bearer(&token_with(&c))))
        .await
        .unwrap();
    assert_eq!(caller.name, None);
    assert_eq!(caller.display_name(), "ada");
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let (_idp, auth) = setup().await;
    let header = format!("bearer {}", token_with(&claims()));
    assert!(auth.authenticate(Some(&header)).await.is_ok());
}

#[tokio::test]
async fn missing_or_odd_groups_in_userinfo_are_harmless() {
    let (idp, mut auth) = setup().await;
    *idp.userinfo.lock().unwrap() = json!({"sub": SUB});
    let caller = auth
        .authenticate(Some(&bearer(&token_with(&claims()))))
        .await
        .unwrap();
    assert_eq!(*caller.groups, Groups::default());

    auth = authenticator(AuthConfig {
        groups_cache_ttl: Duration::ZERO,
        ..auth.config.clone()
    });
    idp.set_groups(json!([7, null, format!("/vlab/{LAB}/member"), "/garbage"]));
    let caller = auth
        .authenticate(Some(&bearer(&token_with(&claims()))))
        .await
        .unwrap();
    assert!(caller.groups.is_vlab_member(Uuid::parse_str(LAB).unwrap()));
}

// --- missing credentials ------------------------------------------------------------------

#[tokio::test]
async fn missing_or_non_bearer_credentials_are_rejected_without_calling_keycloak() {
    let (idp, auth) = setup().await;
    for header in [
        None,
        Some(""),
        Some("Basic x"),
        Some("Bearer "),
        Some("Bearer"),
    ] {
        assert_eq!(
            auth.authenticate(header).await.unwrap_err(),
            AuthError::MissingCredentials,
            "{header:?}"
        );
    }
    assert_eq!(idp.jwks_hits(), 0);
    assert_eq!(idp.userinfo_hits(), 0);
}

// --- invalid tokens -----------------------------------------------------------------------

async fn assert_invalid(auth: &Authenticator, token: &str) {
    assert_eq!(
        auth.authenticate(Some(&bearer(token))).await.unwrap_err(),
        AuthError::InvalidToken,
        "{token}"
    );
}

#[tokio::test]
async fn malformed_tokens_are_invalid() {
    let (idp, auth) = setup().await;
    for token in [
        "garbage",
        "a.b.c",
        "a.b",
        "e30.e30.",
        &format!("{}x", token_with(&claims())),
    ] {
        assert_invalid(&auth, token).await;
    }
    assert_eq!(idp.userinfo_hits(), 0);
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_invalid() {
    let (idp, auth) = setup().await;
    assert_invalid(&auth, &sign(1, Some("k0"), &claims())).await;
    assert_eq!(idp.userinfo_hits(), 0);
}

#[tokio::test]
async fn expiry_is_checked_with_a_60_second_leeway() {
    let (_idp, auth) = setup().await;
    let mut c = claims();
    c["exp"] = json!(now() - 120);
    assert_invalid(&auth, &token_with(&c)).await;

    c["exp"] = json!(now() - 30);
    assert!(
        auth.authenticate(Some(&bearer(&token_with(&c))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_token_without_exp_is_invalid() {
    let (_idp, auth) = setup().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_invalid(&auth, &token_with(&c)).await;
    c["exp"] = json!("soon");
    assert_invalid(&auth, &token_with(&c)).await;
}

#[tokio::test]
async fn not_before_is_checked_with_a_60_second_leeway() {
    let (_idp, auth) = setup().await;
    let mut c = claims();
    c["nbf"] = json!(now() + 120);
    assert_invalid(&auth, &token_with(&c)).await;

    c["nbf"] = json!(now() + 30);
    assert!(
        auth.authenticate(Some(&bearer(&token_with(&c))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_invalid() {
    let (idp, auth) = setup().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k0"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    assert_invalid(&auth, &format!("{header}.{payload}.")).await;
    // Also with a signature part borrowed from a genuine token.
    let genuine = token_with(&claims());
    let signature = genuine.rsplit('.').next().unwrap();
    assert_invalid(&auth, &format!("{header}.{payload}.{signature}")).await;
    assert_eq!(idp.jwks_hits(), 0, "rejected before any key lookup");
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_public_key_is_invalid() {
    let (idp, auth) = setup().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k0".to_owned());
    for secret in [key(0).public_der.as_slice(), key(0).n.as_bytes()] {
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap();
        assert_invalid(&auth, &token).await;
    }
    assert_eq!(idp.jwks_hits(), 0, "rejected before any key lookup");
}

#[tokio::test]
async fn other_rsa_algorithms_are_invalid() {
    let (_idp, auth) = setup().await;
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let mut header = Header::new(alg);
        header.kid = Some("k0".to_owned());
        let token = jsonwebtoken::encode(&header, &claims(), &key(0).encoding).unwrap();
        assert_invalid(&auth, &token).await;
    }
}

#[tokio::test]
async fn the_issuer_must_match_exactly_when_expected() {
    let (_idp, url) = start_idp().await;
    let strict = authenticator(AuthConfig {
        expected_issuer: Some(ISSUER.to_owned()),
        ..config(&url)
    });
    assert!(
        strict
            .authenticate(Some(&bearer(&token_with(&claims()))))
            .await
            .is_ok()
    );

    let mut c = claims();
    for iss in [
        json!("http://evil.example/realms/test"),
        json!(format!("{ISSUER}/")),
        json!([ISSUER]),
    ] {
        c["iss"] = iss;
        assert_invalid(&strict, &token_with(&c)).await;
    }
    c.as_object_mut().unwrap().remove("iss");
    assert_invalid(&strict, &token_with(&c)).await;

    // Without an expected issuer, any issuer is accepted.
    let lenient = authenticator(config(&url));
    c["iss"] = json!("http://evil.example/realms/test");
    assert!(
        lenient
            .authenticate(Some(&bearer(&token_with(&c))))
            .await
            .is_ok()
    );
}

// --- claims -------------------------------------------------------------------------------

#[tokio::test]
async fn missing_identity_claims_are_named_and_checked_before_userinfo() {
    let (idp, auth) = setup().await;
    let cases: [(&str, Option<Value>, &str); 6] = [
        ("sub", None, "sub"),
        ("sub", Some(json!("not-a-uuid")), "sub"),
        ("email", Some(json!("")), "email"),
        ("email", None, "email"),
        ("preferred_username", None, "preferred_username"),
        ("preferred_username", Some(json!("")), "preferred_username"),
    ];
    for (claim, value, named) in cases {
        let mut c = claims();
        match value {
            Some(value) => c[claim] = value,
            None => {
                c.as_object_mut().unwrap().remove(claim);
            }
        }
        let err = auth
            .authenticate(Some(&bearer(&token_with(&c))))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AuthError::MissingClaim(named),
            "{claim}: {value:?}",
            value = c.get(claim)
        );
        assert_eq!(
            err.to_string(),
            format!("The token lacks a required claim: {named}")
        );
    }
    assert_eq!(idp.userinfo_hits(), 0);
}

#[tokio::test]
async fn signature_and_expiry_are_checked_before_the_claims() {
    let (_idp, auth) = setup().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    assert_invalid(&auth, &sign(1, Some("k0"), &c)).await;
    c["exp"] = json!(now() - 600);
    assert_invalid(&auth, &token_with(&c)).await;
}

#[tokio::test]
async fn an_upper_case_sub_is_read_as_a_uuid() {
    let (_idp, auth) = setup().await;
    let mut c = claims();
    c["sub"] = json!(SUB.to_uppercase());
    let caller = auth
        .authenticate(Some(&bearer(&token_with(&c))))
        .await
        .unwrap();
    assert_eq!(caller.sub, Uuid::parse_str(SUB).unwrap());
}

// --- key selection ------------------------------------------------------------------------

#[tokio::test]
async fn an_enc_key_is_skipped_so_a_kidless_token_finds_the_single_signing_key() {
    let (idp, auth) = setup().await;
    let mut enc = jwk(1, Some("enc"));
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    // Keycloak's own enc key has both markers; this one is recognised by `use` alone.
    let mut enc_without_alg = jwk(2, Some("enc2"));
    enc_without_alg["use"] = json!("enc");
    enc_without_alg.as_object_mut().unwrap().remove("alg");
    idp.set_jwks(json!({"keys": [enc, enc_without_alg, jwk(0, Some("k0"))]}));
    assert!(
        auth.authenticate(Some(&bearer(&sign(0, None, &claims()))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_kidless_token_is_invalid_when_several_keys_are_usable() {
    let (idp, auth) = setup().await;
    idp.set_jwks(json!({"keys": [jwk(0, Some("k0")), jwk(1, Some("k1"))]}));
    assert_invalid(&auth, &sign(0, None, &claims())).await;
    // With a kid, each key is found.
    assert!(
        auth.authenticate(Some(&bearer(&sign(1, Some("k1"), &claims()))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_and_then_waits_30_seconds() {
    let (idp, auth) = setup().await;
    auth.warm_up().await.unwrap();
    assert_eq!(idp.jwks_hits(), 1);

    assert_invalid(&auth, &sign(0, Some("bogus-1"), &claims())).await;
    assert_eq!(idp.jwks_hits(), 2);
    assert_invalid(&auth, &sign(0, Some("bogus-2"), &claims())).await;
    assert_invalid(&auth, &sign(0, Some("bogus-3"), &claims())).await;
    assert_eq!(idp.jwks_hits(), 2);
    // Known keys keep working without fetching.
    assert!(
        auth.authenticate(Some(&bearer(&token_with(&claims()))))
            .await
            .is_ok()
    );
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch() {
    let (idp, auth) = setup().await;
    auth.warm_up().await.unwrap();
    idp.set_jwks(json!({"keys": [jwk(0, Some("k0")), jwk(2, Some("k2"))]}));

    let rotated = sign(2, Some("k2"), &claims());
    assert!(auth.authenticate(Some(&bearer(&rotated))).await.is_ok());
    assert_eq!(idp.jwks_hits(), 2);
    assert!(auth.authenticate(Some(&bearer(&rotated))).await.is_ok());
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn concurrent_requests_share_one_jwks_fetch() {
    let (idp, auth) = setup().await;
    let token = token_with(&claims());
    let header = bearer(&token);
    let results =
        futures::future::join_all((0..10).map(|_| auth.authenticate(Some(&header)))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(idp.jwks_hits(), 1, "cold start");

    idp.set_jwks(json!({"keys": [jwk(0, Some("k0")), jwk(2, Some("k2"))]}));
    let rotated = bearer(&sign(2, Some("k2"), &claims()));
    let results =
        futures::future::join_all((0..10).map(|_| auth.authenticate(Some(&rotated)))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(idp.jwks_hits(), 2, "one refetch for the new kid");
}

#[tokio::test]
async fn an_unreachable_jwks_is_an_identity_provider_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let auth = authenticator(config(&url));
    let header = bearer(&token_with(&claims()));
    assert_eq!(
        auth.authenticate(Some(&header)).await.unwrap_err(),
        AuthError::IdentityProviderUnavailable
    );
    assert_eq!(
        auth.warm_up().await.unwrap_err(),
        AuthError::IdentityProviderUnavailable
    );
}

#[tokio::test]
async fn a_failing_jwks_is_an_identity_provider_failure_until_it_recovers() {
    let (idp, auth) = setup().await;
    idp.jwks_status.store(500, Ordering::SeqCst);
    let header = bearer(&token_with(&claims()));
    assert_eq!(
        auth.authenticate(Some(&header)).await.unwrap_err(),
        AuthError::IdentityProviderUnavailable
    );
    idp.jwks_status.store(200, Ordering::SeqCst);
    assert!(auth.authenticate(Some(&header)).await.is_ok());
}

#[tokio::test]
async fn concurrent_requests_share_the_outcome_of_a_failed_jwks_fetch() {
    let (idp, url) = start_idp().await;
    idp.jwks_status.store(500, Ordering::SeqCst);
    let header = bearer(&token_with(&claims()));

    let single = authenticator(config(&url));
    assert!(single.authenticate(Some(&header)).await.is_err());
    let per_fetch = idp.jwks_hits();

    let shared = authenticator(config(&url));
    let results =
        futures::future::join_all((0..10).map(|_| shared.authenticate(Some(&header)))).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().err() == Some(&AuthError::IdentityProviderUnavailable))
    );
    assert_eq!(
        idp.jwks_hits(),
        2 * per_fetch,
        "one fetch for ten waiting requests"
    );
}

#[tokio::test]
async fn an_unreadable_jwks_is_an_identity_provider_failure() {
    let (idp, auth) = setup().await;
    idp.set_jwks(json!(["not", "a", "key", "set"]));
    assert_eq!(
        auth.warm_up().await.unwrap_err(),
        AuthError::IdentityProviderUnavailable
    );
}

#[tokio::test]
async fn cached_keys_survive_a_failed_refetch_for_an_unknown_kid() {
    let (idp, auth) = setup().await;
    auth.warm_up().await.unwrap();
    idp.jwks_status.store(500, Ordering::SeqCst);
    assert_invalid(&auth, &sign(0, Some("bogus"), &claims())).await;
    assert!(idp.jwks_hits() >= 2);
    assert!(
        auth.authenticate(Some(&bearer(&token_with(&claims()))))
            .await
            .is_ok()
    );
}

// --- userinfo -----------------------------------------------------------------------------

#[tokio::test]
async fn userinfo_401_or_403_means_the_session_is_not_active() {
    let (idp, auth) = setup().await;
    for status in [401, 403] {
        idp.userinfo_status.store(status, Ordering::SeqCst);
        let header = bearer(&token_with(&claims()));
        assert_eq!(
            auth.authenticate(Some(&header)).await.unwrap_err(),
            AuthError::SessionNotActive
        );
    }
}

#[tokio::test]
async fn userinfo_5xx_is_an_identity_provider_failure_and_is_not_cached() {
    let (idp, auth) = setup().await;
    let header = bearer(&token_with(&claims()));
    for status in [500, 503] {
        idp.userinfo_status.store(status, Ordering::SeqCst);
        assert_eq!(
            auth.authenticate(Some(&header)).await.unwrap_err(),
            AuthError::IdentityProviderUnavailable
        );
    }
    idp.userinfo_status.store(200, Ordering::SeqCst);
    let before = idp.userinfo_hits();
    assert!(auth.authenticate(Some(&header)).await.is_ok());
    assert_eq!(idp.userinfo_hits(), before + 1);
}

#[tokio::test]
async fn an_unreadable_userinfo_is_an_identity_provider_failure() {
    let (idp, auth) = setup().await;
    *idp.userinfo.lock().unwrap() = json!(["groups"]);
    assert_eq!(
        auth.authenticate(Some(&bearer(&token_with(&claims()))))
            .await
            .unwrap_err(),
        AuthError::IdentityProviderUnavailable
    );
}

// --- the groups cache ---------------------------------------------------------------------

#[tokio::test]
async fn groups_are_cached_per_token_within_the_ttl() {
    let (idp, auth) = setup().await;
    let header = bearer(&token_with(&claims()));
    auth.authenticate(Some(&header)).await.unwrap();
    // A membership change is not seen while the entry lives.
    idp.set_groups(json!([]));
    let caller = auth.authenticate(Some(&header)).await.unwrap();
    assert_eq!(idp.userinfo_hits(), 1);
    assert!(caller.groups.is_service_admin());

    // Another token has its own entry.
    let mut c = claims();
    c["sid"] = json!("session-2");
    let other = auth
        .authenticate(Some(&bearer(&token_with(&c))))
        .await
        .unwrap();
    assert_eq!(idp.userinfo_hits(), 2);
    assert!(!other.groups.is_service_admin());
}

#[tokio::test]
async fn a_zero_ttl_calls_userinfo_every_time() {
    let (idp, url) = start_idp().await;
    let auth = authenticator(AuthConfig {
        groups_cache_ttl: Duration::ZERO,
        ..config(&url)
    });
    let header = bearer(&token_with(&claims()));
    auth.authenticate(Some(&header)).await.unwrap();
    auth.authenticate(Some(&header)).await.unwrap();
    assert_eq!(idp.userinfo_hits(), 2);
}

#[tokio::test]
async fn cached_groups_expire_after_the_ttl() {
    let (idp, url) = start_idp().await;
    let auth = authenticator(AuthConfig {
        groups_cache_ttl: Duration::from_millis(800),
        ..config(&url)
    });
    let header = bearer(&token_with(&claims()));
    auth.authenticate(Some(&header)).await.unwrap();
    auth.authenticate(Some(&header)).await.unwrap();
    assert_eq!(idp.userinfo_hits(), 1);
    tokio::time::sleep(Duration::from_millis(850)).await;
    auth.authenticate(Some(&header)).await.unwrap();
    assert_eq!(idp.userinfo_hits(), 2);
}

#[tokio::test]
async fn forget_groups_forces_a_fresh_userinfo_call() {
    let (idp, auth) = setup().await;
    let header = bearer(&token_with(&claims()));
    let caller = auth.authenticate(Some(&header)).await.unwrap();
    idp.set_groups(json!([format!("/vlab/{LAB}/member")]));
    auth.forget_groups(&caller);

    let fresh = auth.authenticate(Some(&header)).await.unwrap();
    assert_eq!(idp.userinfo_hits(), 2);
    let lab = Uuid::parse_str(LAB).unwrap();
    assert!(fresh.groups.is_vlab_member(lab));
    assert!(!fresh.groups.is_service_admin());
    // A caller not tied to a token is ignored.
    auth.forget_groups(&Caller::new(
        fresh.sub,
        "e".into(),
        "u".into(),
        None,
        Groups::default(),
    ));
    auth.authenticate(Some(&header)).await.unwrap();
    assert_eq!(idp.userinfo_hits(), 2);
}

// --- plumbing -----------------------------------------------------------------------------

#[test]
fn the_authenticator_and_its_futures_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Authenticator>();
    send_sync::<Caller>();
    let auth = authenticator(config("http://127.0.0.1:9"));
    send(&auth.authenticate(None));
    send(&auth.warm_up());
}

#[test]
fn endpoint_urls_percent_encode_the_realm() {
    let c = AuthConfig {
        realm: "a b/c".to_owned(),
        ..config("https://kc.example/auth/")
    };
    assert_eq!(
        c.openid_url("certs"),
        "https://kc.example/auth/realms/a%20b%2Fc/protocol/openid-connect/certs"
    );
}

#[test]
fn errors_display_the_api_texts() {
    assert_eq!(
        AuthError::MissingCredentials.to_string(),
        "No Authentication was provided"
    );
    assert_eq!(
        AuthError::InvalidToken.to_string(),
        "Invalid authentication credentials"
    );
    assert_eq!(
        AuthError::SessionNotActive.to_string(),
        "Session not active"
    );
    assert_eq!(
        AuthError::IdentityProviderUnavailable.to_string(),
        "Could not verify the session with the identity provider"
    );
}

#[test]
fn the_config_is_read_from_the_service_configuration() {
    let vars: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x"),
        ("KC_SERVER_URI", "http://127.0.0.1:9090/"),
        ("KC_CLIENT_SECRET", "s"),
        ("ACCOUNTING_BASE_URL", "http://127.0.0.1:9100"),
        ("INVITE_JWT_SECRET", "i"),
        ("KC_EXPECTED_ISSUER", ISSUER),
        ("AUTH_GROUPS_CACHE_SECONDS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = crate::config::Config::from_map(&vars, crate::config::Binary::Server).unwrap();
    let auth = AuthConfig::from_config(&c);
    assert_eq!(auth.kc_server_uri, "http://127.0.0.1:9090");
    assert_eq!(auth.realm, "obp-realm");
    assert_eq!(auth.expected_issuer.as_deref(), Some(ISSUER));
    assert_eq!(auth.groups_cache_ttl, Duration::ZERO);
    assert_eq!(auth.service_admin_group, SERVICE_ADMIN);
}

// --- the refusal reason, for operators ----------------------------------------------------

async fn refusal(auth: &Authenticator, header: Option<&str>) -> Refusal {
    match auth.check(header).await {
        Err(Failure::Refused(refusal)) => refusal,
        other => panic!("{header:?} was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn each_refusal_kind_is_told_apart() {
    let (idp, url) = start_idp().await;
    let auth = authenticator(AuthConfig {
        expected_issuer: Some(ISSUER.to_owned()),
        ..config(&url)
    });
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        bearer(&token_with(&c))
    };
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k0".to_owned());
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"s")).unwrap()
    };
    let cases: Vec<(Option<String>, Refusal)> = vec![
        (None, Refusal::NoToken),
        (Some("Basic x".to_owned()), Refusal::NoToken),
        (Some(bearer("garbage")), Refusal::Malformed),
        (Some(bearer("e30.e30.")), Refusal::Malformed),
        (Some(bearer(&hs256)), Refusal::WrongAlgorithm),
        (
            Some(bearer(&sign(0, Some("bogus"), &claims()))),
            Refusal::UnknownKeyId,
        ),
        (
            Some(bearer(&sign(1, Some("k0"), &claims()))),
            Refusal::BadSignature,
        ),
        (
            Some(with(&|c| c["exp"] = json!(now() - 120))),
            Refusal::Expired,
        ),
        (
            Some(with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            Refusal::NoExpiry,
        ),
        (
            Some(with(&|c| c["nbf"] = json!(now() + 120))),
            Refusal::NotYetValid,
        ),
        (
            Some(with(&|c| c["iss"] = json!("http://evil.example"))),
            Refusal::WrongIssuer,
        ),
        (
            Some(with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            })),
            Refusal::WrongIssuer,
        ),
        (
            Some(with(&|c| c["iss"] = json!([ISSUER]))),
            Refusal::WrongIssuer,
        ),
        (
            Some(with(&|c| {
                c.as_object_mut().unwrap().remove("email");
            })),
            Refusal::MissingClaim("email"),
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(
            refusal(&auth, header.as_deref()).await,
            expected,
            "{header:?}"
        );
    }
    idp.userinfo_status.store(401, Ordering::SeqCst);
    assert_eq!(
        refusal(&auth, Some(&with(&|_| {}))).await,
        Refusal::SessionNotActive
    );
}

#[test]
fn refusals_become_the_client_errors_of_the_contract() {
    use Refusal as R;
    for (refusal, error) in [
        (R::NoToken, AuthError::MissingCredentials),
        (R::Malformed, AuthError::InvalidToken),
        (R::WrongAlgorithm, AuthError::InvalidToken),
        (R::UnknownKeyId, AuthError::InvalidToken),
        (R::BadSignature, AuthError::InvalidToken),
        (R::Expired, AuthError::InvalidToken),
        (R::NoExpiry, AuthError::InvalidToken),
        (R::NotYetValid, AuthError::InvalidToken),
        (R::WrongIssuer, AuthError::InvalidToken),
        (R::MissingClaim("sub"), AuthError::MissingClaim("sub")),
        (R::SessionNotActive, AuthError::SessionNotActive),
    ] {
        assert_eq!(
            AuthError::from(Failure::Refused(refusal)),
            error,
            "{refusal:?}"
        );
    }
    assert_eq!(
        AuthError::from(Failure::Unavailable),
        AuthError::IdentityProviderUnavailable
    );
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything the lib tests log at `info` and above, through one global subscriber installed on
/// first use. A scoped subscriber (`set_default`) is not enough: tracing caches each callsite's
/// interest globally, and a test on another thread that reaches the same callsite first can make
/// the scoped subscriber miss the event.
fn global_log() -> &'static Captured {
    static LOG: LazyLock<Captured> = LazyLock::new(|| {
        let sink = Captured::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the lib tests");
        sink
    });
    &LOG
}

#[tokio::test]
async fn a_refusal_is_logged_at_info_with_its_reason_and_the_request_span_but_not_the_token() {
    let sink = global_log();
    let (_idp, auth) = setup().await;
    // Other tests log into the same sink; this request's lines carry its own id.
    let request_id = format!("req-{}", Uuid::new_v4());

    let mut c = claims();
    c["exp"] = json!(now() - 120);
    let token = token_with(&c);
    let span = tracing::info_span!("request", request_id = %request_id);
    let err = tracing::Instrument::instrument(auth.authenticate(Some(&bearer(&token))), span)
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::InvalidToken);

    let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("caller refused") && l.contains(&request_id))
        .unwrap_or_else(|| panic!("no refusal logged: {logged}"));
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("reason=expired"), "{line}");
    assert!(!logged.contains(&token), "{logged}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logged.contains(signature), "{logged}");
}
