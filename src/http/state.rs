//! The state every request handler sees.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::auth::Authenticator;
use crate::config::Config;
use crate::usecases::Services;

/// Whether `/ready` may answer 200.
#[derive(Debug, Default)]
pub struct Readiness {
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// The state shared by every request handler.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub auth: Arc<Authenticator>,
    pub readiness: Arc<Readiness>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl AppState {
    pub fn config(&self) -> &Config {
        &self.services.config
    }
}
