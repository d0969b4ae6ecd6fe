//! Fault injection, latency and the call log shared by every emulator.
//!
//! Each emulator owns one [`Control`]. Every call of a named operation goes through
//! [`Control::begin`] (which decides, at arrival, whether a fault applies and how long to wait)
//! and [`Control::finish`] (which stores the status that was answered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

/// What an injected fault does to a matching call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this status with a plausible error body; the operation is not performed.
    /// For SMTP, the reply code given to the end of `DATA` (the message is not stored).
    Status(u16),
    /// Stall this long, then close the connection without answering; not performed.
    TimeoutBefore(Duration),
    /// Perform the operation, stall this long, then close the connection without answering.
    TimeoutAfter(Duration),
    /// Close the TCP connection without answering; not performed.
    DropBefore,
    /// Perform the operation, then close the connection without answering.
    DropAfter,
}

/// A fault for the calls of one operation (e.g. `kc_add_member`, `acc_grant`, `smtp_send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The operation name, as in integrations.md.
    pub operation: String,
    /// Let this many matching calls pass first, i.e. fail the (skip + 1)th.
    pub skip: u32,
    /// How many matching calls fail once the skipped ones have passed.
    pub times: u32,
    /// What happens to a failing call.
    pub action: FaultAction,
}

impl Fault {
    /// A fault failing the next call of `operation` once.
    pub fn new(operation: impl Into<String>, action: FaultAction) -> Self {
        Self {
            operation: operation.into(),
            skip: 0,
            times: 1,
            action,
        }
    }

    /// Fail this many matching calls (default 1).
    #[must_use]
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Let this many matching calls pass first (default 0).
    #[must_use]
    pub fn skip(mut self, skip: u32) -> Self {
        self.skip = skip;
        self
    }
}

/// One call of a named operation, as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// The operation name (e.g. `kc_create_group`).
    pub operation: String,
    /// The HTTP method (for SMTP: `MAIL`).
    pub method: String,
    /// The request path (for SMTP: the envelope sender).
    pub path: String,
    /// The status (or SMTP reply code) answered; 0 when nothing was answered (a dropped or
    /// stalled call, or one still in flight).
    pub status: u16,
    /// The request's `Idempotency-Key` header, when it carried one (accounting records it so
    /// tests can check it; like the real service, the emulator does not act on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// What a call has to do, decided when it arrives.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Index of the call in the log, for [`Control::finish`].
    pub index: usize,
    /// How long to wait before handling it.
    pub latency: Duration,
    /// The fault that applies to it, if any.
    pub fault: Option<FaultAction>,
}

#[derive(Default)]
struct ControlState {
    faults: Vec<Fault>,
    latency: Duration,
    operation_latency: HashMap<String, Duration>,
    calls: Vec<CallRecord>,
}

/// Faults, latency and the call log of one emulator.
#[derive(Default)]
pub(crate) struct Control {
    state: Mutex<ControlState>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        // A panic while holding this lock cannot leave the plain data inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push(fault);
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    pub fn set_operation_latency(&self, operation: &str, latency: Duration) {
        let mut state = self.lock();
        if latency.is_zero() {
            state.operation_latency.remove(operation);
        } else {
            state
                .operation_latency
                .insert(operation.to_owned(), latency);
        }
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    pub fn call_count(&self, operation: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// Logs a call and decides its latency and fault.
    ///
    /// Every fault of the operation sees every call: one still skipping counts the call down,
    /// and the first one done skipping fails it.
    pub fn begin(
        &self,
        operation: &str,
        method: &str,
        path: &str,
        idempotency_key: Option<&str>,
    ) -> Admission {
        let mut state = self.lock();
        let index = state.calls.len();
        state.calls.push(CallRecord {
            operation: operation.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            status: 0,
            idempotency_key: idempotency_key.map(str::to_owned),
        });
        let latency = state.latency
            + state
                .operation_latency
                .get(operation)
                .copied()
                .unwrap_or_default();
        let mut fault = None;
        for f in state.faults.iter_mut().filter(|f| f.operation == operation) {
            if f.skip > 0 {
                f.skip -= 1;
            } else if fault.is_none() && f.times > 0 {
                f.times -= 1;
                fault = Some(f.action.clone());
            }
        }
        state.faults.retain(|f| f.times > 0);
        Admission {
            index,
            latency,
            fault,
        }
    }

    /// Stores the status answered to the call `index`.
    pub fn finish(&self, index: usize, status: u16) {
        if let Some(call) = self.lock().calls.get_mut(index) {
            call.status = status;
        }
    }
}

/// How long a `"mode": "timeout"` fault from `POST /_dev/faults` stalls: longer than any
/// sensible `HTTP_TIMEOUT_SECONDS`.
pub(crate) const DEV_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
struct DevFault {
    operation: String,
    mode: DevMode,
    #[serde(default = "one")]
    times: u32,
    #[serde(default)]
    skip: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum DevMode {
    Error,
    Timeout,
}

#[derive(Serialize)]
struct DevFaultView {
    operation: String,
    action: String,
    skip: u32,
    times: u32,
}

#[derive(Clone)]
struct DevState {
    control: Arc<Control>,
    error_status: u16,
}

/// `/_dev/faults` (POST adds, DELETE clears, GET lists) and `GET /_dev/calls`.
///
/// `"mode": "error"` answers `error_status`; `"mode": "timeout"` stalls for [`DEV_TIMEOUT`]
/// without performing the operation.
pub(crate) fn dev_routes(control: Arc<Control>, error_status: u16) -> Router {
    Router::new()
        .route(
            "/_dev/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_dev/calls", get(list_calls))
        .with_state(DevState {
            control,
            error_status,
        })
}

async fn add_fault(State(dev): State<DevState>, body: axum::body::Bytes) -> Response {
    let request: DevFault = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({
                    "error": format!("expected {{\"operation\", \"mode\": \"error\"|\"timeout\", \"times\"}}: {e}")
                })),
            )
                .into_response();
        }
    };
    let action = match request.mode {
        DevMode::Error => FaultAction::Status(dev.error_status),
        DevMode::Timeout => FaultAction::TimeoutBefore(DEV_TIMEOUT),
    };
    let fault = Fault {
        operation: request.operation,
        skip: request.skip,
        times: request.times,
        action,
    };
    let view = view(&fault);
    dev.control.inject(fault);
    (StatusCode::CREATED, Json(view)).into_response()
}

async fn clear_faults(State(dev): State<DevState>) -> StatusCode {
    dev.control.clear_faults();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(dev): State<DevState>) -> Json<Vec<DevFaultView>> {
    Json(dev.control.faults().iter().map(view).collect())
}

async fn list_calls(State(dev): State<DevState>) -> Json<Vec<CallRecord>> {
    Json(dev.control.calls())
}

fn view(fault: &Fault) -> DevFaultView {
    DevFaultView {
        operation: fault.operation.clone(),
        action: format!("{:?}", fault.action),
        skip: fault.skip,
        times: fault.times,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_fails_the_next_call_after_the_skipped_ones() {
        let control = Control::default();
        control.inject(Fault::new("op", FaultAction::DropBefore).skip(2).times(2));
        let faults: Vec<bool> = (0..5)
            .map(|_| control.begin("op", "GET", "/", None).fault.is_some())
            .collect();
        assert_eq!(faults, [false, false, true, true, false]);
    }

    #[test]
    fn every_fault_of_an_operation_counts_every_call() {
        let control = Control::default();
        control.inject(Fault::new("op", FaultAction::Status(500)));
        control.inject(Fault::new("op", FaultAction::Status(503)).skip(2));
        control.begin("other", "GET", "/", None);
        let got: Vec<Option<FaultAction>> = (0..4)
            .map(|_| control.begin("op", "GET", "/", None).fault)
            .collect();
        assert_eq!(
            got,
            [
                Some(FaultAction::Status(500)),
                None,
                Some(FaultAction::Status(503)),
                None
            ]
        );
        assert_eq!(control.call_count("op"), 4);
        assert_eq!(control.call_count("other"), 1);
    }

    #[test]
    fn latency_adds_the_global_and_the_operation_delay() {
        let control = Control::default();
        control.set_latency(Duration::from_millis(10));
        control.set_operation_latency("op", Duration::from_millis(5));
        assert_eq!(
            control.begin("op", "GET", "/", None).latency,
            Duration::from_millis(15)
        );
        assert_eq!(
            control.begin("x", "GET", "/", None).latency,
            Duration::from_millis(10)
        );
    }
}
