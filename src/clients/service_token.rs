//! The service's own Keycloak token, from the client-credentials grant (integrations.md §2.5).
//!
//! The token is cached until 90 % of its `expires_in` has passed. Refresh is single-flight:
//! the cache sits behind an async mutex that is held while the token request is in flight, so
//! concurrent callers wait for that one request instead of sending their own. The token and the
//! client secret are never logged (`Debug` hides them).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::ClientError;
use super::http::{Call, Outbound, RetryPolicy, Service, encode_segment, read_text};
use crate::config::ExternalConfig;

const CALL: Call = Call {
    service: Service::Keycloak,
    operation: "kc_token",
    retry: RetryPolicy::Idempotent,
};

/// Used when the token response has no `expires_in` (Keycloak always sends it).
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60);

/// A cached client-credentials token. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct ServiceToken {
    inner: Arc<Inner>,
}

struct Inner {
    outbound: Outbound,
    token_url: String,
    client_id: String,
    client_secret: String,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    token: String,
    fresh_until: Instant,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceToken")
            .field("token_url", &self.inner.token_url)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl ServiceToken {
    pub fn new(outbound: Outbound, config: &ExternalConfig) -> Self {
        let token_url = format!(
            "{}/realms/{}/protocol/openid-connect/token",
            config.kc_server_uri.trim_end_matches('/'),
            encode_segment(&config.kc_realm)
        );
        Self {
            inner: Arc::new(Inner {
                outbound,
                token_url,
                client_id: config.kc_client_id.clone(),
                client_secret: config.kc_client_secret.clone(),
                cached: Mutex::new(None),
            }),
        }
    }

    /// The current token, fetching a new one if there is none or it is past 90 % of its life.
    /// Errors carry the operation `kc_token`.
    pub async fn get(&self) -> Result<String, ClientError> {
        let mut cached = self.inner.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.fresh_until
        {
            return Ok(current.token.clone());
        }
        let fetched = self.fetch().await?;
        let token = fetched.token.clone();
        *cached = Some(fetched);
        Ok(token)
    }

    /// Forgets `rejected` (the token a peer answered 401 to), so the next [`get`](Self::get)
    /// fetches a new one. A newer token that another task has already fetched is kept.
    pub async fn invalidate(&self, rejected: &str) {
        let mut cached = self.inner.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == rejected) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<Cached, ClientError> {
        let inner = &*self.inner;
        let requested_at = Instant::now();
        let response = inner
            .outbound
            .send(CALL, |client| {
                client.post(&inner.token_url).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", inner.client_id.as_str()),
                    ("client_secret", inner.client_secret.as_str()),
                ])
            })
            .await?;
        let status = response.status();
        let body = read_text(CALL, response).await?;
        if !status.is_success() {
            // Keycloak's error body ({"error", "error_description"}) holds no secret.
            tracing::warn!(
                operation = CALL.operation,
                status = status.as_u16(),
                body = %body,
                "the service token request failed"
            );
            return Err(ClientError::Status {
                operation: CALL.operation,
                status: status.as_u16(),
                body,
            });
        }
        let parsed: TokenResponse = serde_json::from_str(&body).map_err(|err| {
            super::http::record_decode_error(CALL);
            // The body holds the token: only the parse error is reported.
            ClientError::Decode {
                operation: CALL.operation,
                message: format!("token response: {err}"),
            }
        })?;
        if parsed.access_token.is_empty() {
            super::http::record_decode_error(CALL);
            return Err(ClientError::Decode {
                operation: CALL.operation,
                message: "token response: empty access_token".to_owned(),
            });
        }
        let lifetime = parsed
            .expires_in
            .map_or(DEFAULT_EXPIRES_IN, Duration::from_secs);
        Ok(Cached {
            token: parsed.access_token,
            // Counted from when the request was sent, so network time shortens the life.
            fresh_until: requested_at + lifetime.mul_f64(0.9),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::post;
    use serde_json::json;

    use super::*;
    use crate::clients::http::test_support::{config, outbound, serve};

    /// A token endpoint handing out `token-1`, `token-2`, … after `delay`, with `expires_in`.
    async fn token_server(delay: Duration, expires_in: u64) -> (ServiceToken, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let router = Router::new().route(
            "/realms/obp-realm/protocol/openid-connect/token",
            post(move || {
                let counter = counter.clone();
                async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(delay).await;
                    axum::Json(json!({
                        "access_token": format!("token-{n}"),
                        "expires_in": expires_in,
                        "token_type": "Bearer"
                    }))
                }
            }),
        );
        let base = serve(router).await;
        let cfg = config(&base, "http://unused.invalid");
        (
            ServiceToken::new(outbound(Duration::from_secs(2)), &cfg),
            count,
        )
    }

    #[tokio::test]
    async fn the_token_is_cached_while_fresh() {
        let (token, count) = token_server(Duration::ZERO, 300).await;
        assert_eq!(token.get().await.unwrap(), "token-1");
        assert_eq!(token.get().await.unwrap(), "token-1");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_token_past_ninety_percent_of_its_life_is_refetched() {
        // expires_in = 0: the token is stale at once.
        let (token, count) = token_server(Duration::ZERO, 0).await;
        assert_eq!(token.get().await.unwrap(), "token-1");
        assert_eq!(token.get().await.unwrap(), "token-2");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let (token, count) = token_server(Duration::from_millis(100), 300).await;
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let token = token.clone();
                tokio::spawn(async move { token.get().await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "token-1");
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidate_forgets_only_the_rejected_token() {
        let (token, count) = token_server(Duration::ZERO, 300).await;
        assert_eq!(token.get().await.unwrap(), "token-1");
        token.invalidate("token-1").await;
        assert_eq!(token.get().await.unwrap(), "token-2");
        // A late 401 for the old token must not throw away the newer one.
        token.invalidate("token-1").await;
        assert_eq!(token.get().await.unwrap(), "token-2");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_rejected_token_request_is_a_status_error() {
        let router = Router::new().route(
            "/realms/obp-realm/protocol/openid-connect/token",
            post(|| async {
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    r#"{"error":"unauthorized_client"}"#,
                )
            }),
        );
        let base = serve(router).await;
        let token = ServiceToken::new(
            outbound(Duration::from_secs(2)),
            &config(&base, "http://unused.invalid"),
        );
        let err = token.get().await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Status {
                    operation: "kc_token",
                    status: 401,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
