//! The outbound HTTP policy shared by the Keycloak and accounting clients (integrations.md §1).
//!
//! One [`Outbound`] wraps one pooled `reqwest::Client` (rustls, certificate verification on) and
//! implements the attempt loop: per-attempt timeout, at most [`MAX_ATTEMPTS`] attempts, jittered
//! exponential backoff, `Retry-After`, the `x-request-id` header and the metrics of
//! operations.md §5.
//!
//! Metrics, per logical call made through [`Outbound::send`]:
//! * `vlab_external_calls_total{service,operation,outcome}` once, after the retries: `success` for
//!   a final 2xx, `definite_failure` for a final non-2xx or a connect failure, `uncertain` for a
//!   timeout or a broken connection. A caller that later fails to decode a 2xx body records only
//!   an error with [`record_decode_error`]; the call stays counted as `success` there (simple and
//!   monotonic: one increment per logical call, taken when the transport outcome is known).
//! * `vlab_external_call_duration_seconds{service,operation}` per attempt (until the response
//!   headers arrive).
//! * `vlab_external_call_errors_total{service,operation,kind}` per failed attempt: `connect`,
//!   `timeout`, `status_4xx` (also any other non-2xx below 500, e.g. a 3xx, because redirects
//!   are not followed), `status_5xx`, `decode` (a body that cannot be read or parsed, including a
//!   connection broken while sending or receiving; the label set of operations.md §5 is fixed).
//! * `vlab_external_call_retries_total{service,operation}` per retry.

use std::time::{Duration, Instant};

use backon::Retryable;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::ClientError;
use crate::clients::request_context;
use crate::domain::backoff;

/// Attempts per logical call, the first one included.
pub const MAX_ATTEMPTS: u32 = 3;
/// The backoff base: the delay before retry n is uniform in `[0, base · 2^n]`.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// A `Retry-After` is honoured only when it asks for at most this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The connect timeout never exceeds this (it is `min(5 s, HTTP_TIMEOUT_SECONDS)`).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer, used as the `service` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Keycloak,
    Accounting,
}

impl Service {
    pub fn label(self) -> &'static str {
        match self {
            Service::Keycloak => "keycloak",
            Service::Accounting => "accounting",
        }
    }
}

/// Which failures are retried (integrations.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Retried on a connect failure, a timeout, 429, 502, 503 and 504.
    Idempotent,
    /// Retried only when the connection could not be opened (nothing was sent): accounting POSTs.
    ConnectOnly,
}

/// One logical call: who, what (the `operation` metric label) and how it may be retried.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub service: Service,
    pub operation: &'static str,
    pub retry: RetryPolicy,
}

/// The shared outbound HTTP client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    backoff_base: Duration,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("backoff_base", &self.backoff_base)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// Builds the shared client: rustls with certificate verification, connection pooling,
    /// a per-attempt timeout of `http_timeout`, a connect timeout of `min(5 s, http_timeout)`,
    /// no redirects, and `User-Agent: vlab-courses/<version>`.
    pub fn new(http_timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .tls_backend_rustls()
            .user_agent(concat!("vlab-courses/", env!("CARGO_PKG_VERSION")))
            .timeout(http_timeout)
            .connect_timeout(http_timeout.min(MAX_CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            backoff_base: BACKOFF_BASE,
        })
    }

    /// Replaces the backoff base (default [`BACKOFF_BASE`]); tests shrink it to stay fast.
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.backoff_base = base;
        self
    }

    /// Sends the request built by `build` (called again for every attempt), adding
    /// `x-request-id` from [`request_context::current`], with at most [`MAX_ATTEMPTS`] attempts.
    /// The delay before retry n is uniform in `[0, base · 2^n]`, or the `Retry-After` of the
    /// answer when it asks for at most 5 s. Records the metrics described in the module docs.
    ///
    /// Returns the final response whatever its status, or a [`ClientError::Connect`],
    /// [`ClientError::Timeout`] or [`ClientError::Broken`] for transport failures.
    pub async fn send(
        &self,
        call: Call,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync,
    ) -> Result<reqwest::Response, ClientError> {
        let request_id = request_context::current();
        let attempt = || async {
            let mut request = build(&self.client);
            if let Some(id) = &request_id {
                request = request.header("x-request-id", id.as_str());
            }
            let started = Instant::now();
            let result = request.send().await;
            metrics::histogram!(
                "vlab_external_call_duration_seconds",
                "service" => call.service.label(),
                "operation" => call.operation,
            )
            .record(started.elapsed().as_secs_f64());
            match result {
                Ok(response) if response.status().is_success() => Ok(response),
                Ok(response) => {
                    record_error(call, status_kind(response.status()));
                    Err(Failed::Answer(response))
                }
                Err(err) => {
                    let err = classify(call.operation, &err);
                    record_error(call, error_kind(&err));
                    Err(Failed::Transport(err))
                }
            }
        };
        let result = attempt
            .retry(backoff::full_jitter(self.backoff_base, MAX_ATTEMPTS))
            .sleep(tokio::time::sleep)
            .when(|failed| failed.is_retryable(call.retry))
            .adjust(|failed, delay| delay.map(|delay| failed.retry_after().unwrap_or(delay)))
            .notify(|_, _| {
                metrics::counter!(
                    "vlab_external_call_retries_total",
                    "service" => call.service.label(),
                    "operation" => call.operation,
                )
                .increment(1);
            })
            .await;
        match result {
            Ok(response) => {
                record_outcome(call, "success");
                Ok(response)
            }
            Err(Failed::Answer(response)) => {
                record_outcome(call, "definite_failure");
                Ok(response)
            }
            Err(Failed::Transport(err)) => {
                let outcome = if err.is_uncertain() {
                    "uncertain"
                } else {
                    "definite_failure"
                };
                record_outcome(call, outcome);
                Err(err)
            }
        }
    }
}

/// One failed attempt of [`Outbound::send`].
enum Failed {
    /// A non-2xx answer.
    Answer(reqwest::Response),
    /// No answer: a connect failure, a timeout or a broken connection.
    Transport(ClientError),
}

impl Failed {
    /// Which failures are retried (integrations.md §1): a connect failure always (nothing was
    /// sent); a timeout, 429, 502, 503 and 504 only for idempotent calls.
    fn is_retryable(&self, policy: RetryPolicy) -> bool {
        match self {
            Failed::Transport(ClientError::Connect { .. }) => true,
            Failed::Transport(ClientError::Timeout { .. }) => policy == RetryPolicy::Idempotent,
            Failed::Transport(_) => false,
            Failed::Answer(response) => {
                policy == RetryPolicy::Idempotent && is_retryable_status(response.status())
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failed::Answer(response) => retry_after(response.headers()),
            Failed::Transport(_) => None,
        }
    }
}

/// Records one `decode` error for a 2xx whose needed body could not be read or parsed.
pub fn record_decode_error(call: Call) {
    record_error(call, "decode");
}

/// Reads the whole body of `response` as text, classifying a failure: a timeout stays
/// [`ClientError::Timeout`], anything else is [`ClientError::Broken`] (both uncertain).
pub async fn read_text(call: Call, response: reqwest::Response) -> Result<String, ClientError> {
    response.text().await.map_err(|err| {
        record_decode_error(call);
        classify_body_error(call.operation, &err)
    })
}

/// Maps a reqwest error to the outcome classes of integrations.md §1. `is_connect` is checked
/// first: a connect timeout means nothing was sent, so it is a definite [`ClientError::Connect`].
pub fn classify(operation: &'static str, err: &reqwest::Error) -> ClientError {
    if err.is_connect() {
        ClientError::Connect {
            operation,
            message: error_chain(err),
        }
    } else if err.is_timeout() {
        ClientError::Timeout { operation }
    } else {
        ClientError::Broken {
            operation,
            message: error_chain(err),
        }
    }
}

fn classify_body_error(operation: &'static str, err: &reqwest::Error) -> ClientError {
    if err.is_timeout() {
        ClientError::Timeout { operation }
    } else {
        ClientError::Broken {
            operation,
            message: error_chain(err),
        }
    }
}

/// The error and its sources on one line, without the URL (which is not secret here, but the
/// chain is what tells a refused connection from a TLS failure).
fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

fn status_kind(status: StatusCode) -> &'static str {
    if status.is_server_error() {
        "status_5xx"
    } else {
        "status_4xx"
    }
}

fn error_kind(err: &ClientError) -> &'static str {
    match err {
        ClientError::Connect { .. } => "connect",
        ClientError::Timeout { .. } => "timeout",
        _ => "decode",
    }
}

/// A `Retry-After` (delta-seconds or HTTP-date) asking for at most [`MAX_RETRY_AFTER`].
/// Longer requests are ignored and the normal backoff applies.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let millis = (at.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
        Duration::from_millis(u64::try_from(millis).ok()?)
    };
    (delay <= MAX_RETRY_AFTER).then_some(delay)
}

fn record_outcome(call: Call, outcome: &'static str) {
    metrics::counter!(
        "vlab_external_calls_total",
        "service" => call.service.label(),
        "operation" => call.operation,
        "outcome" => outcome,
    )
    .increment(1);
}

fn record_error(call: Call, kind: &'static str) {
    metrics::counter!(
        "vlab_external_call_errors_total",
        "service" => call.service.label(),
        "operation" => call.operation,
        "kind" => kind,
    )
    .increment(1);
}

/// Every byte but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one URL path segment: everything except the RFC 3986 unreserved characters.
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}

/// How much of an unexpected body is kept in logs and errors.
const MAX_LOGGED_BODY: usize = 2_000;

/// Cuts an upstream body to a size fit for one log line.
pub fn truncate_body(mut body: String) -> String {
    if body.len() > MAX_LOGGED_BODY {
        let mut end = MAX_LOGGED_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push('…');
    }
    body
}

/// Loopback servers and configuration shared by the client tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Duration;

    use super::Outbound;
    use crate::config::ExternalConfig;

    /// Serves `router` on 127.0.0.1:0 and returns its base URL.
    pub async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        format!("http://{addr}")
    }

    /// A base URL on which nothing listens (the port was bound, then released).
    pub async fn closed_port() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    /// An outbound client with a tiny backoff, so retries cost almost nothing.
    pub fn outbound(timeout: Duration) -> Outbound {
        Outbound::new(timeout)
            .unwrap()
            .with_backoff_base(Duration::from_millis(1))
    }

    pub fn config(kc: &str, accounting: &str) -> ExternalConfig {
        ExternalConfig {
            kc_server_uri: kc.to_owned(),
            kc_realm: "obp-realm".to_owned(),
            kc_client_id: "vlab-svc".to_owned(),
            kc_client_secret: "s3cret".to_owned(),
            accounting_base_url: accounting.to_owned(),
            http_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::routing::{any, get};
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::test_support::{closed_port, outbound, serve};
    use super::*;
    use crate::clients::FailureClass;

    const GET_CALL: Call = Call {
        service: Service::Keycloak,
        operation: "kc_test_get",
        retry: RetryPolicy::Idempotent,
    };
    const POST_CALL: Call = Call {
        service: Service::Accounting,
        operation: "acc_test_post",
        retry: RetryPolicy::ConnectOnly,
    };

    /// A server answering `statuses[n]` to its n-th request (the last one repeats) and counting.
    async fn scripted(statuses: &'static [u16]) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let router = Router::new().route(
            "/x",
            any(move || {
                let counter = counter.clone();
                async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let status = statuses[n.min(statuses.len() - 1)];
                    (AxumStatus::from_u16(status).unwrap(), format!("answer {n}"))
                }
            }),
        );
        (serve(router).await, hits)
    }

    #[tokio::test]
    async fn an_idempotent_get_is_retried_on_503_then_succeeds() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);

        let (base, hits) = scripted(&[503, 200]).await;
        let out = outbound(Duration::from_secs(2));
        let url = format!("{base}/x");
        let response = out.send(GET_CALL, |c| c.get(&url)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(read_text(GET_CALL, response).await.unwrap(), "answer 1");
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        let text = handle.render();
        let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
        assert!(
            has(
                r#"vlab_external_calls_total{service="keycloak",operation="kc_test_get",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"vlab_external_call_errors_total{service="keycloak",operation="kc_test_get",kind="status_5xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"vlab_external_call_retries_total{service="keycloak",operation="kc_test_get"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("vlab_external_call_duration_seconds"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn retries_stop_after_three_attempts_and_return_the_last_answer() {
        let (base, hits) = scripted(&[502, 504, 429, 200]).await;
        let out = outbound(Duration::from_secs(2));
        let url = format!("{base}/x");
        let response = out.send(GET_CALL, |c| c.get(&url)).await.unwrap();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_4xx_or_500_is_not_retried_even_when_idempotent() {
        for status in [&[500u16][..], &[404][..]] {
            let (base, hits) = scripted(status).await;
            let out = outbound(Duration::from_secs(2));
            let url = format!("{base}/x");
            let response = out.send(GET_CALL, |c| c.get(&url)).await.unwrap();
            assert_eq!(response.status().as_u16(), status[0]);
            assert_eq!(hits.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn a_connect_only_post_is_not_retried_on_503() {
        let (base, hits) = scripted(&[503, 200]).await;
        let out = outbound(Duration::from_secs(2));
        let url = format!("{base}/x");
        let response = out.send(POST_CALL, |c| c.post(&url)).await.unwrap();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// A server that waits `delay` before answering, counting requests.
    async fn slow(delay: Duration) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let router = Router::new().route(
            "/x",
            any(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    "late"
                }
            }),
        );
        (serve(router).await, hits)
    }

    #[tokio::test]
    async fn a_timeout_is_uncertain_and_a_connect_only_post_is_not_retried() {
        let (base, hits) = slow(Duration::from_secs(3)).await;
        let out = outbound(Duration::from_millis(150));
        let url = format!("{base}/x");
        let err = out.send(POST_CALL, |c| c.post(&url)).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Timeout {
                    operation: "acc_test_post"
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), FailureClass::Uncertain);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_timeout_is_retried_when_idempotent() {
        let (base, hits) = slow(Duration::from_secs(3)).await;
        let out = outbound(Duration::from_millis(100));
        let url = format!("{base}/x");
        let err = out.send(GET_CALL, |c| c.get(&url)).await.unwrap_err();
        assert!(err.is_uncertain());
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_definite_connect_failure_retried_even_for_posts() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);

        let url = format!("{}/x", closed_port().await);
        let out = outbound(Duration::from_secs(2));
        let err = out.send(POST_CALL, |c| c.post(&url)).await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert_eq!(err.class(), FailureClass::Definite);

        let text = handle.render();
        let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
        assert!(
            has(
                r#"vlab_external_call_errors_total{service="accounting",operation="acc_test_post",kind="connect"} 3"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"vlab_external_calls_total{service="accounting",operation="acc_test_post",outcome="definite_failure"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_after_the_request_is_broken_and_uncertain() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                drop(socket);
            }
        });
        let url = format!("http://{addr}/x");
        let out = outbound(Duration::from_secs(2));
        let err = out.send(GET_CALL, |c| c.get(&url)).await.unwrap_err();
        assert!(matches!(err, ClientError::Broken { .. }), "{err:?}");
        assert!(err.is_uncertain());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn every_attempt_carries_the_request_id_and_user_agent() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
        let store = seen.clone();
        let router = Router::new().route(
            "/x",
            get(move |headers: AxumHeaders| {
                let store = store.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let mut store = store.lock().unwrap();
                    store.push((header("x-request-id"), header("user-agent")));
                    if store.len() == 1 {
                        (AxumStatus::SERVICE_UNAVAILABLE, [("retry-after", "0")])
                    } else {
                        (AxumStatus::OK, [("retry-after", "0")])
                    }
                }
            }),
        );
        let url = format!("{}/x", serve(router).await);
        let out = outbound(Duration::from_secs(2));
        let response = request_context::scope("req-42".to_owned(), async {
            out.send(GET_CALL, |c| c.get(&url)).await
        })
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let expected = (
            "req-42".to_owned(),
            format!("vlab-courses/{}", env!("CARGO_PKG_VERSION")),
        );
        assert_eq!(*seen.lock().unwrap(), vec![expected.clone(), expected]);
    }

    #[test]
    fn retry_after_is_honoured_only_up_to_five_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, "6".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
        headers.insert(
            RETRY_AFTER,
            "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_segment("obp-realm"), "obp-realm");
        assert_eq!(encode_segment("my realm/x?y"), "my%20realm%2Fx%3Fy");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
