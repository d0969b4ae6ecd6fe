//! Keycloak emulator: one realm with one confidential client, as integrations.md §2 uses it.
//!
//! It serves the OpenID Connect endpoints (token, certs, userinfo, discovery) and the admin API
//! calls of §2.6 with Keycloak's paths, status codes, headers and JSON shapes. Tokens are RS256
//! JWTs signed with real 2048-bit RSA keys; userinfo and the admin API verify them.
//!
//! Operation names (for faults, latency and [`KeycloakEmulator::calls`]): `kc_token`,
//! `kc_jwks`, `kc_userinfo`, `kc_discovery`, `kc_create_group`, `kc_find_group`, `kc_get_group`,
//! `kc_delete_group`, `kc_list_members`, `kc_get_user`, `kc_list_user_groups`,
//! `kc_add_member`, `kc_remove_member`.

mod admin;
mod oidc;
mod state;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::json;
use uuid::Uuid;

use crate::faults::{self, CallRecord, Control, Fault};
use crate::persist;
use crate::server::{self, Server};
use state::{Realm, StoredRealm, User};
use tokens::RsaKey;

/// How to start a [`KeycloakEmulator`].
#[derive(Debug, Clone)]
pub struct KeycloakOptions {
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The realm name (`KC_REALM_NAME`).
    pub realm: String,
    /// The confidential client (`KC_CLIENT_ID`).
    pub client_id: String,
    /// Its secret (`KC_CLIENT_SECRET`).
    pub client_secret: String,
    /// Lifetime of the tokens issued for `grant_type=client_credentials`.
    pub service_token_ttl: Duration,
    /// Load the keys, users and groups from this file at start and save them after each change.
    pub state_file: Option<PathBuf>,
}

impl Default for KeycloakOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            realm: "obp-realm".to_owned(),
            client_id: "obpapp".to_owned(),
            client_secret: "dev-secret".to_owned(),
            service_token_ttl: Duration::from_secs(300),
            state_file: None,
        }
    }
}

/// A realm user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// For `grant_type=password`.
    pub password: String,
}

impl UserSpec {
    /// A user with e-mail `<username>@example.org`, no names and password `test`.
    pub fn new(id: Uuid, username: impl Into<String>) -> Self {
        let username = username.into();
        Self {
            id,
            email: format!("{username}@example.org"),
            username,
            first_name: None,
            last_name: None,
            password: "test".to_owned(),
        }
    }
}

/// A group as the realm holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
    /// The full path, e.g. `/vlab/<uuid>/admin` for a top-level group of that name.
    pub path: String,
    /// Direct members, ordered by username then id.
    pub members: Vec<Uuid>,
}

/// Lifetime of user tokens from `grant_type=password` (Keycloak's default is 5 minutes; an
/// hour is kinder to someone trying the dev stack with curl).
const USER_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What the handlers share.
pub(crate) struct Kc {
    realm_name: String,
    client_id: String,
    client_secret: String,
    service_token_ttl: Duration,
    base_url: String,
    state_file: Option<PathBuf>,
    realm: Mutex<Realm>,
    control: Arc<Control>,
}

impl Kc {
    fn realm(&self) -> MutexGuard<'_, Realm> {
        // The realm is plain data; a panic elsewhere cannot leave it half-updated in a way
        // that matters to an emulator.
        self.realm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, realm: &Realm) {
        if self.state_file.is_some() {
            persist::save_or_warn(self.state_file.as_deref(), &realm.to_stored());
        }
    }

    fn issuer(&self) -> String {
        format!("{}/realms/{}", self.base_url, self.realm_name)
    }

    /// 404 unless `realm` is this emulator's realm.
    fn check_realm(&self, realm: &str) -> Result<(), Refusal> {
        if realm == self.realm_name {
            Ok(())
        } else {
            Err(json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "Realm does not exist"}),
            )
            .into())
        }
    }
}

/// An error answer of a handler (boxed, so that `Result`s stay small).
pub(crate) struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl From<Refusal> for Response {
    fn from(refusal: Refusal) -> Self {
        *refusal.0
    }
}

pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn fault_body(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let error = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "unknown_error".to_owned()
    } else {
        format!("HTTP {} {reason}", status.as_u16())
    };
    json_response(status, json!({"error": error}))
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({
            "error": "Unable to find matching target resource method",
            "error_description": "For more on this error consult the server log."
        }),
    )
}

fn router(kc: Arc<Kc>) -> Router {
    let control = kc.control.clone();
    let op = |route, name| server::operation(route, &control, name, fault_body);
    let oidc = "/realms/{realm}/protocol/openid-connect";
    let admin = "/admin/realms/{realm}";
    Router::new()
        .route(&format!("{oidc}/token"), op(post(oidc::token), "kc_token"))
        .route(&format!("{oidc}/certs"), op(get(oidc::certs), "kc_jwks"))
        .route(
            &format!("{oidc}/userinfo"),
            op(get(oidc::userinfo).post(oidc::userinfo), "kc_userinfo"),
        )
        .route(
            "/realms/{realm}/.well-known/openid-configuration",
            op(get(oidc::discovery), "kc_discovery"),
        )
        .route(
            &format!("{admin}/groups"),
            op(get(admin::find_groups), "kc_find_group")
                .merge(op(post(admin::create_group), "kc_create_group")),
        )
        .route(
            &format!("{admin}/groups/{{group_id}}"),
            op(get(admin::get_group), "kc_get_group")
                .merge(op(delete(admin::delete_group), "kc_delete_group")),
        )
        .route(
            &format!("{admin}/groups/{{group_id}}/members"),
            op(get(admin::members), "kc_list_members"),
        )
        .route(
            &format!("{admin}/users/{{user_id}}"),
            op(get(admin::get_user), "kc_get_user"),
        )
        .route(
            &format!("{admin}/users/{{user_id}}/groups"),
            op(get(admin::user_groups), "kc_list_user_groups"),
        )
        .route(
            &format!("{admin}/users/{{user_id}}/groups/{{group_id}}"),
            op(put(admin::add_member), "kc_add_member")
                .merge(op(delete(admin::remove_member), "kc_remove_member")),
        )
        .fallback(not_found)
        .with_state(kc)
        .merge(faults::dev_routes(control.clone(), 500))
}

struct Inner {
    server: Server,
    kc: Arc<Kc>,
}

/// A running Keycloak emulator. Clones share it; it stops on [`shutdown`](Self::shutdown) or
/// when the last clone is dropped.
#[derive(Clone)]
pub struct KeycloakEmulator {
    inner: Arc<Inner>,
}

impl KeycloakEmulator {
    /// Binds `opts.bind`, loads or creates the realm, and starts serving.
    pub async fn start(opts: KeycloakOptions) -> anyhow::Result<Self> {
        let realm = match &opts.state_file {
            Some(path) => match persist::load::<StoredRealm>(path)? {
                Some(stored) => Realm::from_stored(stored)?,
                None => Realm::new()?,
            },
            None => Realm::new()?,
        };
        let listener = server::listen(opts.bind).await?;
        let addr = listener.local_addr()?;
        let kc = Arc::new(Kc {
            realm_name: opts.realm,
            client_id: opts.client_id,
            client_secret: opts.client_secret,
            service_token_ttl: opts.service_token_ttl,
            base_url: format!("http://{addr}"),
            state_file: opts.state_file,
            realm: Mutex::new(realm),
            control: Arc::new(Control::default()),
        });
        kc.save(&kc.realm());
        let server = Server::start_http(listener, router(kc.clone()))?;
        Ok(Self {
            inner: Arc::new(Inner { server, kc }),
        })
    }

    fn kc(&self) -> &Kc {
        &self.inner.kc
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.kc().base_url.clone()
    }

    /// The `iss` of every token: base URL + `/realms/` + realm.
    pub fn issuer(&self) -> String {
        self.kc().issuer()
    }

    /// Adds a user, or updates the one with the same id (keeping its memberships).
    pub fn add_user(&self, user: UserSpec) {
        let kc = self.kc();
        let mut realm = kc.realm();
        match realm.users.get_mut(&user.id) {
            Some(existing) => existing.spec = user,
            None => {
                realm.users.insert(
                    user.id,
                    User {
                        spec: user,
                        created_timestamp: chrono::Utc::now().timestamp_millis(),
                        groups: Default::default(),
                    },
                );
            }
        }
        kc.save(&realm);
    }

    /// Creates the nested groups of `path` that do not exist yet (e.g.
    /// `/service/virtual-lab-svc/admin` makes `service` → `virtual-lab-svc` → `admin`) and
    /// returns the id of the last one.
    pub fn ensure_group_path(&self, path: &str) -> String {
        let kc = self.kc();
        let mut realm = kc.realm();
        let mut parent: Option<String> = None;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let existing = realm
                .child_named(parent.as_deref(), name)
                .map(|g| g.id.clone());
            let id = match existing {
                Some(id) => id,
                None => realm.add_group(parent.as_deref(), name),
            };
            parent = Some(id);
        }
        kc.save(&realm);
        parent.unwrap_or_default()
    }

    /// Makes the user a direct member of the group (idempotent).
    ///
    /// # Panics
    /// If the user or the group does not exist: add them first.
    pub fn add_user_to_group(&self, user_id: Uuid, group_id: &str) {
        let kc = self.kc();
        let mut realm = kc.realm();
        assert!(
            realm.groups.contains_key(group_id),
            "add_user_to_group: unknown group {group_id}"
        );
        let Some(user) = realm.users.get_mut(&user_id) else {
            panic!("add_user_to_group: unknown user {user_id}; call add_user first");
        };
        user.groups.insert(group_id.to_owned());
        kc.save(&realm);
    }

    /// A user access token as Keycloak issues it after a login with scope
    /// `openid profile email`, with a new session.
    ///
    /// # Panics
    /// If the user does not exist: call [`add_user`](Self::add_user) first.
    pub fn mint_token(&self, user_id: Uuid, ttl: Duration) -> String {
        let kc = self.kc();
        let mut realm = kc.realm();
        assert!(
            realm.users.contains_key(&user_id),
            "mint_token: unknown user {user_id}; call add_user first"
        );
        kc.user_tokens(&mut realm, user_id, ttl, "openid profile email", None)
            .access_token
    }

    /// A token with exactly these claims, signed with the current key.
    pub fn mint_token_with_claims(&self, claims: serde_json::Value) -> String {
        self.kc().realm().current_key().sign(&claims)
    }

    /// A service-account token, as `grant_type=client_credentials` returns it.
    pub fn service_token(&self) -> String {
        let kc = self.kc();
        let realm = kc.realm();
        kc.service_token(&realm)
    }

    /// A new RSA key with a new kid signs from now on; the old ones stay in the JWKS.
    pub fn rotate_signing_key(&self) {
        let key = match RsaKey::generate() {
            Ok(key) => key,
            // aws-lc only fails to generate a key when it cannot allocate.
            Err(e) => panic!("generating an RSA key failed: {e:#}"),
        };
        let kc = self.kc();
        let mut realm = kc.realm();
        realm.current_kid = key.kid.clone();
        realm.signing_keys.push(key);
        kc.save(&realm);
    }

    /// Removes a key from the JWKS; tokens signed with it stop verifying. When it was the
    /// current key, the newest remaining key becomes current (a new one if none remains).
    pub fn remove_signing_key(&self, kid: &str) {
        let kc = self.kc();
        let mut realm = kc.realm();
        realm.signing_keys.retain(|k| k.kid != kid);
        if realm.signing_keys.is_empty() {
            match RsaKey::generate() {
                Ok(key) => realm.signing_keys.push(key),
                // aws-lc only fails to generate a key when it cannot allocate.
                Err(e) => panic!("generating an RSA key failed: {e:#}"),
            }
        }
        if realm.current_kid == kid
            && let Some(newest) = realm.signing_keys.last()
        {
            realm.current_kid = newest.kid.clone();
        }
        kc.save(&realm);
    }

    /// The kid of the key that signs new tokens.
    pub fn current_kid(&self) -> String {
        self.kc().realm().current_kid.clone()
    }

    /// Logs the user out everywhere: userinfo answers 401 for every token issued so far.
    pub fn revoke_user_sessions(&self, user_id: Uuid) {
        let kc = self.kc();
        let mut realm = kc.realm();
        let sids: Vec<String> = realm
            .sessions
            .iter()
            .filter(|(_, u)| **u == user_id)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in sids {
            realm.sessions.remove(&sid);
            realm.revoked_sessions.insert(sid);
        }
        realm
            .revoked_at
            .insert(user_id, chrono::Utc::now().timestamp());
    }

    /// The first group with this name (top-level or nested, by path order).
    pub fn group_by_name(&self, name: &str) -> Option<GroupInfo> {
        self.groups().into_iter().find(|g| g.name == name)
    }

    /// Every group, ordered by path.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let realm = self.kc().realm();
        let mut groups: Vec<GroupInfo> = realm.groups.values().map(|g| realm.info(g)).collect();
        groups.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.id.cmp(&b.id)));
        groups
    }

    /// The full paths of the user's direct groups, sorted: what userinfo answers.
    pub fn user_group_paths(&self, user_id: Uuid) -> Vec<String> {
        self.kc().realm().user_paths(user_id)
    }

    /// Every call of a named operation so far, in arrival order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.kc().control.calls()
    }

    pub fn call_count(&self, operation: &str) -> usize {
        self.kc().control.call_count(operation)
    }

    pub fn inject(&self, fault: Fault) {
        self.kc().control.inject(fault);
    }

    pub fn clear_faults(&self) {
        self.kc().control.clear_faults();
    }

    /// Delay every call by `d` before handling it (added to any operation latency).
    pub fn set_latency(&self, d: Duration) {
        self.kc().control.set_latency(d);
    }

    /// Delay the calls of one operation by `d` before handling them; zero removes it.
    pub fn set_operation_latency(&self, operation: &str, d: Duration) {
        self.kc().control.set_operation_latency(operation, d);
    }

    /// Stops serving and closes every connection, including stalled ones.
    pub async fn shutdown(&self) {
        self.inner.server.shutdown().await;
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.server.addr()
    }
}
