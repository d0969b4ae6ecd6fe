//! The Prometheus recorder (operations.md §5). One per process: tests start many servers in
//! one process, so the recorder is installed once and its handle shared.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Installs the global recorder on first use and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".to_owned()),
                    HTTP_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                // Another recorder is already global (an embedding program installed one):
                // render an empty registry rather than fail start-up.
                Err(err) => {
                    tracing::warn!(error = %err, "metrics recorder already installed elsewhere");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::gauge!("vlab_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::describe_counter!("vlab_http_requests_total", "Requests answered.");
    metrics::describe_histogram!("vlab_http_request_duration_seconds", "Request latency.");
    metrics::describe_gauge!("vlab_http_requests_in_flight", "Requests being served.");
    metrics::describe_counter!(
        "vlab_external_calls_total",
        "Keycloak, accounting and SMTP calls, after retries."
    );
    metrics::describe_counter!("vlab_compensations_total", "Ledger undo runs.");
    metrics::describe_counter!(
        "vlab_idempotent_requests_total",
        "Requests sent with an Idempotency-Key, by operation and outcome (new, replayed, resumed, in_progress, mismatch)."
    );
    metrics::describe_counter!(
        "vlab_sagas_total",
        "Journaled units of work, by kind and outcome (committed, compensated, failed)."
    );
    metrics::describe_gauge!(
        "vlab_sagas_open",
        "Sagas running, compensating or failed (refreshed every worker pass)."
    );
    metrics::describe_counter!(
        "vlab_course_events_total",
        "Audit events written, by event_type."
    );
}
