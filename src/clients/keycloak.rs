//! The Keycloak admin API client (integrations.md §2.6).
//!
//! Every call sends the cached service token; a 401 forces a new token and replays the call
//! once. Unexpected answers are logged at `warn` with the operation, status and body, and
//! returned as [`ClientError::Status`]; they are never forwarded to API clients.

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use uuid::Uuid;

use super::http::{Call, Outbound, RetryPolicy, Service, encode_segment, read_text, truncate_body};
use super::service_token::ServiceToken;
use super::{ClientError, GroupMember, KeycloakAdmin, KeycloakUser};
use crate::config::ExternalConfig;

/// Page size of `kc_list_members`.
const MEMBERS_PAGE: usize = 100;

const fn call(operation: &'static str) -> Call {
    Call {
        service: Service::Keycloak,
        operation,
        retry: RetryPolicy::Idempotent,
    }
}

const CREATE_GROUP: Call = call("kc_create_group");
const FIND_GROUP: Call = call("kc_find_group");
const DELETE_GROUP: Call = call("kc_delete_group");
const LIST_MEMBERS: Call = call("kc_list_members");
const ADD_MEMBER: Call = call("kc_add_member");
const REMOVE_MEMBER: Call = call("kc_remove_member");
const GET_USER: Call = call("kc_get_user");

/// The admin API client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KeycloakClient {
    outbound: Outbound,
    token: ServiceToken,
    /// `{kc}/admin/realms/{realm}`, the realm percent-encoded.
    admin_base: String,
}

#[derive(serde::Deserialize)]
struct GroupRepresentation {
    id: String,
    name: String,
    path: Option<String>,
}

impl KeycloakClient {
    pub fn new(outbound: Outbound, token: ServiceToken, config: &ExternalConfig) -> Self {
        let admin_base = format!(
            "{}/admin/realms/{}",
            config.kc_server_uri.trim_end_matches('/'),
            encode_segment(&config.kc_realm)
        );
        Self {
            outbound,
            token,
            admin_base,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_base)
    }

    /// Sends an admin call with the service token; on 401, invalidates the token, fetches a new
    /// one and replays once. Returns the final response whatever its status.
    async fn send(
        &self,
        call: Call,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync,
    ) -> Result<reqwest::Response, ClientError> {
        let token = self.service_token(call).await?;
        let response = self
            .outbound
            .send(call, |client| build(client).bearer_auth(&token))
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        drop(response);
        tracing::info!(
            operation = call.operation,
            "the service token was rejected; refreshing it and replaying once"
        );
        self.token.invalidate(&token).await;
        let token = self.service_token(call).await?;
        self.outbound
            .send(call, |client| build(client).bearer_auth(&token))
            .await
    }

    async fn service_token(&self, call: Call) -> Result<String, ClientError> {
        self.token.get().await.map_err(|err| ClientError::Token {
            operation: call.operation,
            message: err.to_string(),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        call: Call,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let body = read_text(call, response).await?;
        serde_json::from_str(&body).map_err(|err| {
            super::http::record_decode_error(call);
            ClientError::Decode {
                operation: call.operation,
                message: err.to_string(),
            }
        })
    }
}

/// Logs an unexpected answer at `warn` and turns it into [`ClientError::Status`].
pub(crate) async fn unexpected(call: Call, response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let body = match response.text().await {
        Ok(body) => truncate_body(body),
        Err(err) => format!("<unreadable body: {err}>"),
    };
    tracing::warn!(
        operation = call.operation,
        status,
        body = %body,
        "unexpected answer from {}",
        call.service.label()
    );
    ClientError::Status {
        operation: call.operation,
        status,
        body,
    }
}

/// Logs a 404 that the operation treats as a failure and returns [`ClientError::NotFound`].
async fn not_found(call: Call, response: reqwest::Response) -> ClientError {
    let body = response.text().await.map(truncate_body).unwrap_or_default();
    tracing::warn!(
        operation = call.operation,
        status = 404,
        body = %body,
        "keycloak answered not found"
    );
    ClientError::NotFound {
        operation: call.operation,
    }
}

/// The group id from a `Location` header: its last non-empty path segment, whether the URL is
/// absolute or relative. `None` when there is no usable id.
fn id_from_location(location: &str) -> Option<String> {
    let without_query = location.split(['?', '#']).next().unwrap_or_default();
    let last = without_query.trim_end_matches('/').rsplit('/').next()?;
    if last.is_empty() || last == "groups" || last.contains(':') {
        return None;
    }
    Some(last.to_owned())
}

#[async_trait]
impl KeycloakAdmin for KeycloakClient {
    async fn create_group(&self, name: &str) -> Result<String, ClientError> {
        let url = self.url("/groups");
        let body = serde_json::json!({ "name": name });
        let response = self
            .send(CREATE_GROUP, |client| client.post(&url).json(&body))
            .await?;
        let status = response.status();
        if status.is_success() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .and_then(id_from_location);
            return match location {
                Some(id) => Ok(id),
                None => {
                    super::http::record_decode_error(CREATE_GROUP);
                    tracing::warn!(
                        operation = CREATE_GROUP.operation,
                        status = status.as_u16(),
                        location = ?response.headers().get(LOCATION),
                        "group created without a usable Location header"
                    );
                    Err(ClientError::Decode {
                        operation: CREATE_GROUP.operation,
                        message: format!("{status} without a usable Location header"),
                    })
                }
            };
        }
        if status == StatusCode::CONFLICT {
            drop(response);
            // Only an earlier attempt of the same step can have created it (integrations.md §2.6).
            tracing::info!(
                operation = CREATE_GROUP.operation,
                group = name,
                "the group already exists; resolving its id by name"
            );
            return match self.find_group(name).await? {
                Some(id) => Ok(id),
                None => Err(ClientError::Conflict {
                    operation: CREATE_GROUP.operation,
                }),
            };
        }
        Err(unexpected(CREATE_GROUP, response).await)
    }

    async fn find_group(&self, name: &str) -> Result<Option<String>, ClientError> {
        let url = self.url("/groups");
        let response = self
            .send(FIND_GROUP, |client| {
                client.get(&url).query(&[
                    ("search", name),
                    ("exact", "true"),
                    ("briefRepresentation", "true"),
                    ("first", "0"),
                    ("max", "10"),
                ])
            })
            .await?;
        if !response.status().is_success() {
            return Err(unexpected(FIND_GROUP, response).await);
        }
        let groups: Vec<GroupRepresentation> = self.get_json(FIND_GROUP, response).await?;
        let path = format!("/{name}");
        Ok(groups
            .into_iter()
            .find(|g| g.name == name && g.path.as_deref() == Some(path.as_str()))
            .map(|g| g.id))
    }

    async fn delete_group(&self, group_id: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/groups/{}", encode_segment(group_id)));
        let response = self
            .send(DELETE_GROUP, |client| client.delete(&url))
            .await?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(unexpected(DELETE_GROUP, response).await)
    }

    async fn list_members(&self, group_id: &str) -> Result<Vec<GroupMember>, ClientError> {
        let url = self.url(&format!("/groups/{}/members", encode_segment(group_id)));
        let mut members = Vec::new();
        let mut first = 0usize;
        loop {
            let first_text = first.to_string();
            let page_size = MEMBERS_PAGE.to_string();
            let response = self
                .send(LIST_MEMBERS, |client| {
                    client.get(&url).query(&[
                        ("first", first_text.as_str()),
                        ("max", page_size.as_str()),
                        ("briefRepresentation", "true"),
                    ])
                })
                .await?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Err(not_found(LIST_MEMBERS, response).await);
            }
            if !status.is_success() {
                return Err(unexpected(LIST_MEMBERS, response).await);
            }
            let page: Vec<GroupMember> = self.get_json(LIST_MEMBERS, response).await?;
            let count = page.len();
            members.extend(page);
            if count < MEMBERS_PAGE {
                return Ok(members);
            }
            first += MEMBERS_PAGE;
        }
    }

    async fn add_member(&self, user_id: Uuid, group_id: &str) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/users/{user_id}/groups/{}",
            encode_segment(group_id)
        ));
        let response = self.send(ADD_MEMBER, |client| client.put(&url)).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::NOT_FOUND {
            return Err(not_found(ADD_MEMBER, response).await);
        }
        Err(unexpected(ADD_MEMBER, response).await)
    }

    async fn remove_member(&self, user_id: Uuid, group_id: &str) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/users/{user_id}/groups/{}",
            encode_segment(group_id)
        ));
        let response = self
            .send(REMOVE_MEMBER, |client| client.delete(&url))
            .await?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(unexpected(REMOVE_MEMBER, response).await)
    }

    async fn get_user(&self, user_id: Uuid) -> Result<Option<KeycloakUser>, ClientError> {
        let url = self.url(&format!("/users/{user_id}"));
        let response = self.send(GET_USER, |client| client.get(&url)).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(unexpected(GET_USER, response).await);
        }
        self.get_json(GET_USER, response).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::{OriginalUri, Query};
    use axum::http::{HeaderMap, StatusCode as S};
    use axum::response::IntoResponse;
    use axum::routing::{any, post};
    use serde_json::json;

    use super::*;
    use crate::clients::FailureClass;
    use crate::clients::http::test_support::{config, outbound, serve};

    /// Every admin request the test Keycloak saw: method, raw path and query, bearer token.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(String, String, String)>>>);

    impl Seen {
        fn push(&self, method: &str, uri: &axum::http::Uri, headers: &HeaderMap) {
            let bearer = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.0.lock().unwrap().push((
                method.to_owned(),
                uri.path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                bearer,
            ));
        }
        fn all(&self) -> Vec<(String, String, String)> {
            self.0.lock().unwrap().clone()
        }
    }

    /// A test Keycloak: the token endpoint hands out `token-1`, `token-2`, … and the admin API
    /// is answered by `admin(method, path_and_query, bearer)`.
    async fn keycloak<F>(admin: F) -> (KeycloakClient, Seen, Arc<Mutex<usize>>)
    where
        F: Fn(&str, &str, &str) -> axum::response::Response + Clone + Send + Sync + 'static,
    {
        let tokens = Arc::new(Mutex::new(0usize));
        let seen = Seen::default();
        let token_counter = tokens.clone();
        let admin_seen = seen.clone();
        let router = Router::new()
            .route(
                "/realms/obp-realm/protocol/openid-connect/token",
                post(move |body: String| {
                    let token_counter = token_counter.clone();
                    async move {
                        assert!(body.contains("grant_type=client_credentials"), "{body}");
                        assert!(body.contains("client_id=vlab-svc"), "{body}");
                        assert!(body.contains("client_secret=s3cret"), "{body}");
                        let mut n = token_counter.lock().unwrap();
                        *n += 1;
                        axum::Json(json!({
                            "access_token": format!("token-{n}"),
                            "expires_in": 300,
                            "token_type": "Bearer"
                        }))
                    }
                }),
            )
            .route(
                "/admin/realms/obp-realm/{*rest}",
                any(
                    move |method: axum::http::Method,
                          OriginalUri(uri): OriginalUri,
                          headers: HeaderMap| {
                        let admin = admin.clone();
                        let seen = admin_seen.clone();
                        async move {
                            seen.push(method.as_str(), &uri, &headers);
                            let bearer = headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let path = uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            admin(method.as_str(), &path, &bearer)
                        }
                    },
                ),
            );
        let base = serve(router).await;
        let cfg = config(&base, "http://unused.invalid");
        let out = outbound(Duration::from_secs(2));
        let token = ServiceToken::new(out.clone(), &cfg);
        (KeycloakClient::new(out, token, &cfg), seen, tokens)
    }

    fn created(location: Option<&'static str>) -> axum::response::Response {
        match location {
            Some(l) => (S::CREATED, [("location", l)]).into_response(),
            None => S::CREATED.into_response(),
        }
    }

    #[tokio::test]
    async fn create_group_reads_the_id_from_an_absolute_location() {
        let (kc, seen, _) = keycloak(|_, _, _| {
            created(Some(
                "http://kc.example/admin/realms/obp-realm/groups/4f1c2d3e-0000-4000-8000-000000000001",
            ))
        })
        .await;
        let id = kc.create_group("vlab/abc/admin").await.unwrap();
        assert_eq!(id, "4f1c2d3e-0000-4000-8000-000000000001");
        let calls = seen.all();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "POST");
        assert_eq!(calls[0].1, "/admin/realms/obp-realm/groups");
        assert_eq!(calls[0].2, "Bearer token-1");
    }

    #[tokio::test]
    async fn create_group_reads_the_id_from_a_relative_location() {
        let (kc, _, _) =
            keycloak(|_, _, _| created(Some("/admin/realms/obp-realm/groups/g-77/"))).await;
        assert_eq!(kc.create_group("vlab/abc/member").await.unwrap(), "g-77");
    }

    #[tokio::test]
    async fn create_group_201_without_location_is_an_uncertain_failure() {
        let (kc, _, _) = keycloak(|_, _, _| created(None)).await;
        let err = kc.create_group("vlab/abc/admin").await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Decode {
                    operation: "kc_create_group",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), FailureClass::Uncertain);
    }

    #[tokio::test]
    async fn create_group_409_resolves_the_id_with_the_exact_name_and_path() {
        let (kc, seen, _) = keycloak(|method, _, _| {
            if method == "POST" {
                return S::CONFLICT.into_response();
            }
            axum::Json(json!([
                {"id": "wrong-name", "name": "vlab/abc/admin-old", "path": "/vlab/abc/admin-old"},
                {"id": "wrong-path", "name": "vlab/abc/admin", "path": "/parent/vlab/abc/admin"},
                {"id": "right", "name": "vlab/abc/admin", "path": "/vlab/abc/admin", "subGroupCount": 0},
            ]))
            .into_response()
        })
        .await;
        assert_eq!(kc.create_group("vlab/abc/admin").await.unwrap(), "right");
        let calls = seen.all();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].0, "GET");
        let uri: axum::http::Uri = calls[1].1.parse().unwrap();
        assert_eq!(uri.path(), "/admin/realms/obp-realm/groups");
        let Query(query): Query<HashMap<String, String>> = Query::try_from_uri(&uri).unwrap();
        assert_eq!(query["search"], "vlab/abc/admin");
        assert_eq!(query["exact"], "true");
        assert_eq!(query["briefRepresentation"], "true");
        assert_eq!(query["first"], "0");
        assert_eq!(query["max"], "10");
    }

    #[tokio::test]
    async fn create_group_409_without_a_matching_group_is_a_conflict() {
        let (kc, _, _) = keycloak(|method, _, _| {
            if method == "POST" {
                S::CONFLICT.into_response()
            } else {
                axum::Json(json!([{"id": "x", "name": "other", "path": "/other"}])).into_response()
            }
        })
        .await;
        let err = kc.create_group("vlab/abc/admin").await.unwrap_err();
        assert!(matches!(err, ClientError::Conflict { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn find_group_returns_none_when_nothing_matches() {
        let (kc, _, _) = keycloak(|_, _, _| axum::Json(json!([])).into_response()).await;
        assert_eq!(kc.find_group("vlab/abc/admin").await.unwrap(), None);
    }

    #[tokio::test]
    async fn delete_group_and_remove_member_treat_404_as_done() {
        let (kc, seen, _) = keycloak(|_, _, _| S::NOT_FOUND.into_response()).await;
        kc.delete_group("g/1").await.unwrap();
        let user = Uuid::from_u128(7);
        kc.remove_member(user, "g-2").await.unwrap();
        let calls = seen.all();
        assert_eq!(calls[0].0, "DELETE");
        assert_eq!(calls[0].1, "/admin/realms/obp-realm/groups/g%2F1");
        assert_eq!(calls[1].0, "DELETE");
        assert_eq!(
            calls[1].1,
            format!("/admin/realms/obp-realm/users/{user}/groups/g-2")
        );
    }

    #[tokio::test]
    async fn add_member_is_a_put_and_404_is_not_found() {
        let (kc, seen, _) = keycloak(|_, path, _| {
            if path.ends_with("/groups/missing") {
                S::NOT_FOUND.into_response()
            } else {
                S::NO_CONTENT.into_response()
            }
        })
        .await;
        let user = Uuid::from_u128(9);
        kc.add_member(user, "g-1").await.unwrap();
        let err = kc.add_member(user, "missing").await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::NotFound {
                    operation: "kc_add_member"
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), FailureClass::Definite);
        assert_eq!(seen.all()[0].0, "PUT");
    }

    #[tokio::test]
    async fn an_unexpected_status_keeps_the_body_for_the_logs() {
        let (kc, _, _) =
            keycloak(|_, _, _| (S::FORBIDDEN, "{\"error\":\"nope\"}").into_response()).await;
        let err = kc.delete_group("g").await.unwrap_err();
        match err {
            ClientError::Status {
                status,
                body,
                operation,
            } => {
                assert_eq!((operation, status), ("kc_delete_group", 403));
                assert!(body.contains("nope"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn list_members_fetches_page_after_page_until_a_short_one() {
        let (kc, seen, _) = keycloak(|_, path, _| {
            let uri: axum::http::Uri = path.parse().unwrap();
            let Query(q): Query<HashMap<String, String>> = Query::try_from_uri(&uri).unwrap();
            let first: u128 = q["first"].parse().unwrap();
            let count = if first == 0 { 100 } else { 5 };
            let page: Vec<_> = (first..first + count)
                .map(|i| json!({"id": Uuid::from_u128(i + 1), "username": format!("u{i}")}))
                .collect();
            axum::Json(page).into_response()
        })
        .await;
        let members = kc.list_members("grp").await.unwrap();
        assert_eq!(members.len(), 105);
        assert_eq!(members[104].id, Uuid::from_u128(105));
        let calls = seen.all();
        assert_eq!(calls.len(), 2);
        for (call, first) in calls.iter().zip(["0", "100"]) {
            let uri: axum::http::Uri = call.1.parse().unwrap();
            assert_eq!(uri.path(), "/admin/realms/obp-realm/groups/grp/members");
            let Query(q): Query<HashMap<String, String>> = Query::try_from_uri(&uri).unwrap();
            assert_eq!(q["first"], first);
            assert_eq!(q["max"], "100");
            assert_eq!(q["briefRepresentation"], "true");
        }
    }

    #[tokio::test]
    async fn get_user_parses_the_user_and_404_is_none() {
        let known = Uuid::from_u128(1);
        let (kc, _, _) = keycloak(move |_, path, _| {
            if path.ends_with(&known.to_string()) {
                axum::Json(json!({
                    "id": known, "username": "ada", "email": "ada@example.org",
                    "firstName": "Ada", "createdTimestamp": 1_700_000_000_000i64, "enabled": true
                }))
                .into_response()
            } else {
                S::NOT_FOUND.into_response()
            }
        })
        .await;
        let user = kc.get_user(known).await.unwrap().unwrap();
        assert_eq!(user.username.as_deref(), Some("ada"));
        assert_eq!(user.first_name.as_deref(), Some("Ada"));
        assert_eq!(user.last_name, None);
        assert_eq!(user.created_timestamp, Some(1_700_000_000_000));
        assert_eq!(kc.get_user(Uuid::from_u128(2)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_401_refreshes_the_token_once_and_replays_the_call_once() {
        let (kc, seen, tokens) = keycloak(|_, _, bearer| {
            if bearer == "Bearer token-1" {
                S::UNAUTHORIZED.into_response()
            } else {
                S::NO_CONTENT.into_response()
            }
        })
        .await;
        kc.add_member(Uuid::from_u128(3), "g").await.unwrap();
        assert_eq!(*tokens.lock().unwrap(), 2);
        let bearers: Vec<_> = seen.all().into_iter().map(|c| c.2).collect();
        assert_eq!(bearers, ["Bearer token-1", "Bearer token-2"]);
        // The new token is cached: the next call needs no token request.
        kc.add_member(Uuid::from_u128(3), "g").await.unwrap();
        assert_eq!(*tokens.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_second_401_is_returned_without_another_replay() {
        let (kc, seen, tokens) = keycloak(|_, _, _| S::UNAUTHORIZED.into_response()).await;
        let err = kc.delete_group("g").await.unwrap_err();
        assert!(
            matches!(err, ClientError::Status { status: 401, .. }),
            "{err:?}"
        );
        assert_eq!(seen.all().len(), 2);
        assert_eq!(*tokens.lock().unwrap(), 2);
    }

    #[test]
    fn the_realm_is_percent_encoded_in_admin_paths() {
        let mut cfg = config("http://kc.example/auth/", "http://acc.example");
        cfg.kc_realm = "my realm".to_owned();
        let out = outbound(Duration::from_secs(1));
        let kc = KeycloakClient::new(out.clone(), ServiceToken::new(out, &cfg), &cfg);
        assert_eq!(
            kc.url("/groups"),
            "http://kc.example/auth/admin/realms/my%20realm/groups"
        );
    }

    #[tokio::test]
    async fn no_service_token_means_the_admin_call_is_never_sent() {
        let cfg = config(
            &crate::clients::http::test_support::closed_port().await,
            "http://x",
        );
        let out = outbound(Duration::from_secs(1));
        let kc = KeycloakClient::new(out.clone(), ServiceToken::new(out, &cfg), &cfg);
        let err = kc.delete_group("g").await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Token {
                    operation: "kc_delete_group",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), FailureClass::Definite);
    }

    #[test]
    fn location_ids_need_a_real_last_segment() {
        assert_eq!(
            id_from_location("http://h/admin/realms/r/groups/abc").as_deref(),
            Some("abc")
        );
        assert_eq!(id_from_location("groups/abc?x=1").as_deref(), Some("abc"));
        assert_eq!(id_from_location("http://h/admin/realms/r/groups/"), None);
        assert_eq!(id_from_location(""), None);
    }
}
