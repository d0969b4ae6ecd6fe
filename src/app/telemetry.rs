//! Tracing set-up (operations.md §4): `RUST_LOG` filter, JSON or pretty lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Where log lines go: the server logs to stdout, `expire-courses` to stderr (its stdout is
/// the JSON summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
}

/// Installs the global subscriber. Safe to call twice (the second call is ignored).
pub fn init(format: LogFormat, filter: &str, target: LogTarget) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(tracing_subscriber::fmt::time::ChronoUtc::rfc_3339())
        .with_target(true);
    let result = match (format, target) {
        (LogFormat::Json, LogTarget::Stdout) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        (LogFormat::Json, LogTarget::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .try_init(),
        // Colour codes only on a terminal: a log written to a file or a pipe stays plain text.
        (LogFormat::Pretty, LogTarget::Stdout) => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        (LogFormat::Pretty, LogTarget::Stderr) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // Already initialised (tests, vlab-dev): keep the first subscriber.
    let _ = result;
}
