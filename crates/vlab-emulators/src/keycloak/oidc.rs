//! The OpenID Connect endpoints: token, certs (JWKS), userinfo and discovery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use uuid::Uuid;

use super::state::{Realm, User};
use super::tokens::{self, TokenError};
use super::{Kc, USER_TOKEN_TTL, json_response};

/// Lifetime of refresh tokens (Keycloak's default SSO session idle time).
const REFRESH_TTL: Duration = Duration::from_secs(1800);

/// The roles the service account holds on `realm-management` (integrations.md §2.5).
pub(super) const SERVICE_ROLES: [&str; 4] =
    ["manage-users", "view-users", "query-users", "query-groups"];

pub(super) struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: Option<String>,
    pub sid: String,
    pub scope: String,
    pub expires_in: u64,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2)
}

/// The user's display name as Keycloak builds it: first and last name, when there are any.
fn full_name(user: &User) -> Option<String> {
    let parts: Vec<&str> = [&user.spec.first_name, &user.spec.last_name]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The profile claims shared by access tokens, ID tokens and userinfo.
fn profile(user: &User, into: &mut serde_json::Map<String, Value>) {
    into.insert("email_verified".into(), Value::Bool(false));
    if let Some(name) = full_name(user) {
        into.insert("name".into(), Value::String(name));
    }
    into.insert(
        "preferred_username".into(),
        Value::String(user.spec.username.clone()),
    );
    if let Some(first) = &user.spec.first_name {
        into.insert("given_name".into(), Value::String(first.clone()));
    }
    if let Some(last) = &user.spec.last_name {
        into.insert("family_name".into(), Value::String(last.clone()));
    }
    if !user.spec.email.is_empty() {
        into.insert("email".into(), Value::String(user.spec.email.clone()));
    }
}

/// The scope Keycloak grants: the defaults `profile email`, with `openid` and any other
/// requested scope added.
fn granted_scope(requested: &str) -> String {
    let mut scopes: Vec<&str> = Vec::new();
    let requested: Vec<&str> = requested.split_whitespace().collect();
    if requested.contains(&"openid") {
        scopes.push("openid");
    }
    scopes.extend(["profile", "email"]);
    for s in requested {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    scopes.join(" ")
}

fn scope_has_openid(claims: &Value) -> bool {
    claims["scope"]
        .as_str()
        .is_some_and(|s| s.split_whitespace().any(|s| s == "openid"))
}

impl Kc {
    /// Issues access, refresh and (with `openid`) ID tokens for a user of `realm`; `sid`
    /// continues a session, `None` starts one.
    pub(super) fn user_tokens(
        &self,
        realm: &mut Realm,
        user_id: Uuid,
        ttl: Duration,
        scope: &str,
        sid: Option<String>,
    ) -> IssuedTokens {
        let sid = sid.unwrap_or_else(tokens::random_id);
        realm.sessions.insert(sid.clone(), user_id);
        let issued_at = now();
        let issuer = self.issuer();
        let mut access = serde_json::Map::new();
        let mut id = serde_json::Map::new();
        if let Some(user) = realm.users.get(&user_id) {
            profile(user, &mut access);
            profile(user, &mut id);
        }
        let common = json!({
            "iat": issued_at,
            "iss": issuer,
            "sub": user_id.to_string(),
            "azp": self.client_id,
            "sid": sid,
        });
        let with = |mut map: serde_json::Map<String, Value>, extra: Value| {
            for source in [&common, &extra] {
                if let Value::Object(fields) = source {
                    for (k, v) in fields {
                        map.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(map)
        };
        let access = with(
            access,
            json!({
                "exp": issued_at + ttl_secs(ttl),
                "jti": tokens::random_id(),
                "aud": "account",
                "typ": "Bearer",
                "scope": scope,
            }),
        );
        let refresh = with(
            serde_json::Map::new(),
            json!({
                "exp": issued_at + ttl_secs(REFRESH_TTL),
                "jti": tokens::random_id(),
                "aud": issuer,
                "typ": "Refresh",
                "scope": scope,
            }),
        );
        let key = realm.current_key();
        let id_token = scope.split_whitespace().any(|s| s == "openid").then(|| {
            key.sign(&with(
                id,
                json!({
                    "exp": issued_at + ttl_secs(ttl),
                    "jti": tokens::random_id(),
                    "aud": self.client_id,
                    "typ": "ID",
                }),
            ))
        });
        IssuedTokens {
            access_token: key.sign(&access),
            refresh_token: key.sign(&refresh),
            id_token,
            sid,
            scope: scope.to_owned(),
            expires_in: ttl.as_secs(),
        }
    }

    /// A service-account token for the client, with the `realm-management` roles.
    pub(super) fn service_token(&self, realm: &Realm) -> String {
        let issued_at = now();
        realm.current_key().sign(&json!({
            "exp": issued_at + ttl_secs(self.service_token_ttl),
            "iat": issued_at,
            "jti": tokens::random_id(),
            "iss": self.issuer(),
            "aud": ["realm-management", "account"],
            "sub": realm.service_account_id.to_string(),
            "typ": "Bearer",
            "azp": self.client_id,
            "scope": "profile email",
            "resource_access": {"realm-management": {"roles": SERVICE_ROLES}},
            "email_verified": false,
            "clientHost": "127.0.0.1",
            "preferred_username": format!("service-account-{}", self.client_id),
            "clientAddress": "127.0.0.1",
            "client_id": self.client_id,
        }))
    }

    /// Checks the signature, `exp`, `nbf` and `iss` of a token issued by this realm.
    pub(super) fn verify_token(&self, token: &str) -> Result<Value, TokenError> {
        let keys = self.realm().signing_keys.clone();
        tokens::verify(&keys, token, &self.issuer())
    }
}

/// Whether the session the token belongs to was logged out.
fn session_revoked(realm: &Realm, user_id: Uuid, claims: &Value) -> bool {
    if let Some(sid) = claims["sid"].as_str() {
        if realm.revoked_sessions.contains(sid) {
            return true;
        }
        if realm.sessions.contains_key(sid) {
            return false;
        }
    }
    let issued_at = claims["iat"].as_i64().unwrap_or(0);
    realm
        .revoked_at
        .get(&user_id)
        .is_some_and(|at| issued_at <= *at)
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn bad_client(error: &str) -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        error,
        "Invalid client or Invalid client credentials",
    )
}

fn bad_user() -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
        "Invalid user credentials",
    )
}

/// `POST /realms/{realm}/protocol/openid-connect/token` (form-encoded).
pub(super) async fn token(
    State(kc): State<Arc<Kc>>,
    Path(realm_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    kc.check_realm(&realm_name)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).map_err(|_| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Could not parse the form body",
        )
    })?;
    let mut form: HashMap<String, String> = HashMap::new();
    for (k, v) in pairs {
        form.entry(k).or_insert(v);
    }
    let basic = basic_credentials(&headers);
    let client_id = form
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()));
    let client_secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.as_ref().map(|(_, secret)| secret.clone()));
    let Some(grant_type) = form.get("grant_type") else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing form parameter: grant_type",
        ));
    };
    if client_id.as_deref() != Some(kc.client_id.as_str()) {
        return Err(bad_client("invalid_client"));
    }
    if client_secret.as_deref() != Some(kc.client_secret.as_str()) {
        return Err(bad_client("unauthorized_client"));
    }
    let mut realm = kc.realm();
    match grant_type.as_str() {
        "client_credentials" => {
            let access_token = kc.service_token(&realm);
            Ok(axum::Json(json!({
                "access_token": access_token,
                "expires_in": kc.service_token_ttl.as_secs(),
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": "profile email",
            }))
            .into_response())
        }
        "password" => {
            let (Some(username), Some(password)) = (form.get("username"), form.get("password"))
            else {
                return Err(bad_user());
            };
            let user_id = match realm.user_by_login(username) {
                Some(user) if &user.spec.password == password => user.spec.id,
                _ => return Err(bad_user()),
            };
            let scope = granted_scope(form.get("scope").map_or("", String::as_str));
            let issued = kc.user_tokens(&mut realm, user_id, USER_TOKEN_TTL, &scope, None);
            Ok(user_token_response(issued))
        }
        "refresh_token" => {
            let Some(refresh) = form.get("refresh_token") else {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Missing parameter: refresh_token",
                ));
            };
            let invalid = || {
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid refresh token",
                )
            };
            let keys = realm.signing_keys.clone();
            let claims = tokens::verify(&keys, refresh, &kc.issuer()).map_err(|_| invalid())?;
            let user_id = claims["sub"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .filter(|id| realm.users.contains_key(id))
                .ok_or_else(invalid)?;
            let sid = claims["sid"].as_str().map(str::to_owned);
            if claims["typ"] != "Refresh" || session_revoked(&realm, user_id, &claims) {
                return Err(invalid());
            }
            let scope = claims["scope"]
                .as_str()
                .unwrap_or("profile email")
                .to_owned();
            let issued = kc.user_tokens(&mut realm, user_id, USER_TOKEN_TTL, &scope, sid);
            Ok(user_token_response(issued))
        }
        _ => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        )),
    }
}

fn user_token_response(issued: IssuedTokens) -> Response {
    let mut body = json!({
        "access_token": issued.access_token,
        "expires_in": issued.expires_in,
        "refresh_expires_in": REFRESH_TTL.as_secs(),
        "refresh_token": issued.refresh_token,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": issued.sid,
        "scope": issued.scope,
    });
    if let Some(id_token) = issued.id_token {
        body["id_token"] = Value::String(id_token);
    }
    axum::Json(body).into_response()
}

/// `Authorization: Basic base64(client_id:client_secret)` (client_secret_basic).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// `GET /realms/{realm}/protocol/openid-connect/certs`: every signing key, plus the realm's
/// encryption key (listed first, as Keycloak often does), which verifiers must skip.
pub(super) async fn certs(
    State(kc): State<Arc<Kc>>,
    Path(realm_name): Path<String>,
) -> Result<Response, Response> {
    kc.check_realm(&realm_name)?;
    let realm = kc.realm();
    let mut keys = vec![realm.encryption_key.encryption_jwk()];
    keys.extend(realm.signing_keys.iter().map(|k| k.signing_jwk()));
    Ok(axum::Json(json!({ "keys": keys })).into_response())
}

fn invalid_token(description: &str) -> Response {
    let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
    let challenge = format!(
        "Bearer realm=\"keycloak\", error=\"invalid_token\", error_description=\"{description}\""
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// `GET|POST /realms/{realm}/protocol/openid-connect/userinfo`, answered from the live realm.
pub(super) async fn userinfo(
    State(kc): State<Arc<Kc>>,
    Path(realm_name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    kc.check_realm(&realm_name)?;
    let token = bearer(&headers).ok_or_else(|| invalid_token("Token not provided"))?;
    let claims = kc
        .verify_token(token)
        .map_err(|e| invalid_token(&e.to_string()))?;
    if claims.get("typ").is_some_and(|t| t != "Bearer") {
        return Err(invalid_token("Token is not an access token"));
    }
    let realm = kc.realm();
    let user = claims["sub"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .and_then(|id| realm.users.get(&id))
        .ok_or_else(|| invalid_token("User not found"))?;
    if session_revoked(&realm, user.spec.id, &claims) {
        return Err(invalid_token("Session not active"));
    }
    if !scope_has_openid(&claims) {
        let mut response = oauth_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "Missing openid scope",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keycloak\", error=\"insufficient_scope\""),
        );
        return Err(response);
    }
    let mut body = serde_json::Map::new();
    body.insert("sub".into(), Value::String(user.spec.id.to_string()));
    profile(user, &mut body);
    body.insert("groups".into(), json!(realm.user_paths(user.spec.id)));
    Ok(axum::Json(Value::Object(body)).into_response())
}

/// `GET /realms/{realm}/.well-known/openid-configuration`.
pub(super) async fn discovery(
    State(kc): State<Arc<Kc>>,
    Path(realm_name): Path<String>,
) -> Result<Response, Response> {
    kc.check_realm(&realm_name)?;
    let issuer = kc.issuer();
    let oidc = format!("{issuer}/protocol/openid-connect");
    Ok(axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "jwks_uri": format!("{oidc}/certs"),
        "grant_types_supported": ["password", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_scope_adds_the_defaults() {
        assert_eq!(granted_scope(""), "profile email");
        assert_eq!(granted_scope("openid"), "openid profile email");
        assert_eq!(
            granted_scope("email openid groups"),
            "openid profile email groups"
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR abc"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }
}
