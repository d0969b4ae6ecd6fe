//! Test-only crash points (addendum §8.6). In builds with the `fault-injection` feature the
//! process aborts at the point named by `VLAB_FAULT=<use case>:<point>[:<n>]` (read at
//! start-up), the `n`-th time it gets there (default: the first), so tests can see what a
//! kill -9 at that moment leaves behind. Other builds compile this away.

use crate::usecases::Services;

/// Aborts the process when `VLAB_FAULT` names `use_case:point` and this is its `n`-th pass.
#[cfg(feature = "fault-injection")]
pub fn point(services: &Services, use_case: &str, point: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Passes through the configured point so far (one point per process).
    static PASSES: AtomicU32 = AtomicU32::new(0);

    let Some(fault) = services.config.fault_point.as_deref() else {
        return;
    };
    let mut parts = fault.split(':');
    if parts.next() != Some(use_case) || parts.next() != Some(point) {
        return;
    }
    let nth: u32 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    if PASSES.fetch_add(1, Ordering::SeqCst) + 1 >= nth {
        tracing::warn!(use_case, point, "VLAB_FAULT: aborting the process");
        std::process::abort();
    }
}

/// Aborts the process when `VLAB_FAULT` names `use_case:point` (never, in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_services: &Services, _use_case: &str, _point: &str) {}
