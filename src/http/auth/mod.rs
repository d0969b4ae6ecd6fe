//! Caller authentication (integrations.md §2.1–§2.4, api.md §1.1).
//!
//! [`Authenticator::authenticate`] checks, in this order: the `Authorization` header
//! ([`AuthError::MissingCredentials`]), the JWT header (RS256 only), the signing key from the
//! cached JWKS, the signature, `exp`, `nbf` and `iss` ([`AuthError::InvalidToken`]), the identity
//! claims ([`AuthError::MissingClaim`]), and finally the live groups from userinfo, cached per
//! token for `AUTH_GROUPS_CACHE_SECONDS`. Tokens are never logged; the cache is keyed by their
//! SHA-256.
//!
//! The client only learns the api.md §1.1 texts; the operator's log says why: every refused
//! token is logged at `info` with its [`Refusal`] (inside the request span, so with the request
//! id).

mod groups_cache;
mod jwks;
mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Validation;

pub use crate::domain::caller::{Caller, TokenKey};
pub use crate::domain::roles::Groups;

use crate::clients::http::{self, Call, Outbound, RetryPolicy, Service};
use groups_cache::GroupsCache;
use jwks::Jwks;

/// What authentication needs from the configuration.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `KC_SERVER_URI` without its trailing `/`.
    pub kc_server_uri: String,
    /// `KC_REALM_NAME`.
    pub realm: String,
    /// `KC_EXPECTED_ISSUER`: when set, `iss` must equal it exactly.
    pub expected_issuer: Option<String>,
    /// `AUTH_GROUPS_CACHE_SECONDS`; zero disables the cache.
    pub groups_cache_ttl: Duration,
    /// `VLAB_SERVICE_ADMIN_GROUP`.
    pub service_admin_group: String,
}

impl AuthConfig {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            kc_server_uri: c.external.kc_server_uri.trim_end_matches('/').to_owned(),
            realm: c.external.kc_realm.clone(),
            expected_issuer: c.kc_expected_issuer.clone(),
            groups_cache_ttl: c.auth_groups_cache,
            service_admin_group: c.service_admin_group.clone(),
        }
    }

    /// `{kc}/realms/{realm}/protocol/openid-connect/{endpoint}`, the realm percent-encoded.
    fn openid_url(&self, endpoint: &str) -> String {
        format!(
            "{}/realms/{}/protocol/openid-connect/{endpoint}",
            self.kc_server_uri.trim_end_matches('/'),
            http::encode_segment(&self.realm)
        )
    }
}

/// Why a request could not be authenticated. The `Display` text is the api.md §1.1 details
/// (or message) of each case; tokens never appear in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No header, an empty one, a scheme other than `Bearer`, or an empty token.
    #[error("No Authentication was provided")]
    MissingCredentials,
    /// Malformed, bad signature, unknown `kid`, not RS256, expired, not yet valid, wrong issuer.
    #[error("Invalid authentication credentials")]
    InvalidToken,
    /// `sub` missing or not a UUID, or `email` / `preferred_username` missing or empty.
    #[error("The token lacks a required claim: {0}")]
    MissingClaim(&'static str),
    /// Userinfo answered 401 or 403.
    #[error("Session not active")]
    SessionNotActive,
    /// The JWKS (with no cached copy) or userinfo could not be fetched.
    #[error("Could not verify the session with the identity provider")]
    IdentityProviderUnavailable,
}

impl From<Failure> for AuthError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Refused(Refusal::NoToken) => AuthError::MissingCredentials,
            Failure::Refused(Refusal::MissingClaim(claim)) => AuthError::MissingClaim(claim),
            Failure::Refused(Refusal::SessionNotActive) => AuthError::SessionNotActive,
            Failure::Refused(_) => AuthError::InvalidToken,
            Failure::Unavailable => AuthError::IdentityProviderUnavailable,
        }
    }
}

/// Why a caller's token was refused: for the operator's log only, never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization` header, another scheme, or an empty token.
    #[error("no token")]
    NoToken,
    /// Not a readable JWT: bad segments, base64 or JSON, or claims of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than RS256.
    #[error("wrong algorithm")]
    WrongAlgorithm,
    /// No signing key for the header's `kid` (or no `kid` and not exactly one key).
    #[error("unknown key id")]
    UnknownKeyId,
    /// The signature does not verify with the key.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `exp` is absent.
    #[error("no expiry")]
    NoExpiry,
    /// `nbf` is in the future (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` absent or not exactly the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// An identity claim is missing, empty or (for `sub`) not a UUID.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// Userinfo answered 401 or 403: the session behind the token has ended.
    #[error("session not active")]
    SessionNotActive,
}

/// What stopped an authentication, before it becomes the [`AuthError`] the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The token was refused.
    Refused(Refusal),
    /// The JWKS (with no cached copy) or userinfo could not be fetched.
    Unavailable,
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Refused(refusal)
    }
}

const USERINFO: Call = Call {
    service: Service::Keycloak,
    operation: "kc_userinfo",
    retry: RetryPolicy::Idempotent,
};

/// Verifies callers' tokens and loads their live groups. Shared in an `Arc`.
pub struct Authenticator {
    config: AuthConfig,
    outbound: Outbound,
    userinfo_url: String,
    validation: Validation,
    jwks: Jwks,
    groups: GroupsCache,
}

impl Authenticator {
    pub fn new(config: AuthConfig, outbound: Outbound) -> Self {
        let jwks = Jwks::new(config.openid_url("certs"), outbound.clone());
        Self {
            userinfo_url: config.openid_url("userinfo"),
            validation: verify::validation(config.expected_issuer.as_deref()),
            groups: GroupsCache::new(config.groups_cache_ttl),
            jwks,
            outbound,
            config,
        }
    }

    /// Verifies the raw `Authorization` header value (`None` when absent) and loads the live
    /// groups. A refusal is logged with its reason (never the token).
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        self.check(authorization).await.map_err(|failure| {
            match failure {
                Failure::Refused(reason) => tracing::info!(%reason, "caller refused"),
                Failure::Unavailable => {
                    tracing::warn!("caller not verified: the identity provider is unavailable")
                }
            }
            AuthError::from(failure)
        })
    }

    /// [`Self::authenticate`] with the reason of a refusal.
    pub(crate) async fn check(&self, authorization: Option<&str>) -> Result<Caller, Failure> {
        let token = verify::bearer_token(authorization)?;
        let kid = verify::rs256_kid(token)?;
        let key = self.jwks.key_for(kid.as_deref()).await?;
        let identity = verify::verify(
            token,
            &key,
            &self.validation,
            self.config.expected_issuer.as_deref(),
        )?;

        let token_key = TokenKey::of(token);
        let groups = match self.groups.get(&token_key) {
            Some(groups) => groups,
            None => {
                let ticket = self.groups.ticket();
                let groups = Arc::new(self.fetch_groups(token).await?);
                self.groups.insert(token_key, Arc::clone(&groups), ticket);
                groups
            }
        };
        tracing::debug!(sub = %identity.sub, sid = ?identity.sid, "caller authenticated");
        Ok(Caller::authenticated(
            identity.sub,
            identity.email,
            identity.preferred_username,
            identity.name,
            groups,
            token_key,
        ))
    }

    /// Drops the cached groups of the caller's token, after the service changed the caller's
    /// own memberships (integrations.md §2.3). Other replicas are not told.
    pub fn forget_groups(&self, caller: &Caller) {
        if let Some(key) = caller.token_key() {
            self.groups.remove(key);
        }
    }

    /// Fetches the signing keys ahead of the first request. The caller only logs a failure.
    pub async fn warm_up(&self) -> Result<(), AuthError> {
        Ok(self.jwks.warm_up().await?)
    }

    /// `kc_userinfo` with the caller's token; only `groups` is read.
    async fn fetch_groups(&self, token: &str) -> Result<Groups, Failure> {
        let response = self
            .outbound
            .send(USERINFO, |client| {
                client.get(&self.userinfo_url).bearer_auth(token)
            })
            .await
            .map_err(|err| {
                tracing::warn!(operation = USERINFO.operation, reason = %err, "userinfo failed");
                Failure::Unavailable
            })?;
        let status = response.status();
        if matches!(status.as_u16(), 401 | 403) {
            tracing::debug!(status = status.as_u16(), "userinfo: session not active");
            return Err(Refusal::SessionNotActive.into());
        }
        if !status.is_success() {
            tracing::warn!(
                operation = USERINFO.operation,
                status = status.as_u16(),
                "userinfo failed"
            );
            return Err(Failure::Unavailable);
        }
        let body = http::read_text(USERINFO, response).await.map_err(|err| {
            tracing::warn!(operation = USERINFO.operation, reason = %err, "userinfo failed");
            Failure::Unavailable
        })?;
        let paths = userinfo_groups(&body).ok_or_else(|| {
            http::record_decode_error(USERINFO);
            tracing::warn!(
                operation = USERINFO.operation,
                "userinfo answer is not a JSON object"
            );
            Failure::Unavailable
        })?;
        Ok(Groups::parse(&paths, &self.config.service_admin_group))
    }
}

/// The string entries of `groups` in a userinfo answer; a missing or non-array `groups` is
/// empty. `None` when the answer is not a JSON object.
fn userinfo_groups(body: &str) -> Option<Vec<String>> {
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    let paths = match answer.as_object()?.get("groups") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Some(paths)
}
