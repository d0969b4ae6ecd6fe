//! What a use case needs: configuration, database and the outbound clients.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;

use super::tasks::UseCaseTasks;
use crate::clients::accounting::AccountingClient;
use crate::clients::http::Outbound;
use crate::clients::keycloak::KeycloakClient;
use crate::clients::mail::SmtpMailer;
use crate::clients::service_token::ServiceToken;
use crate::clients::{Accounting, KeycloakAdmin, Mailer};
use crate::config::Config;

/// Everything a use case needs: configuration, database and the outbound clients.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub keycloak: Arc<dyn KeycloakAdmin>,
    pub accounting: Arc<dyn Accounting>,
    pub mailer: Arc<dyn Mailer>,
    pub tasks: UseCaseTasks,
    /// Wakes this replica's background worker for work queued without a first attempt
    /// (`notify_one`; a wake-up sent during a pass starts the next one at once).
    pub worker_wake: Arc<Notify>,
}

impl Services {
    /// Builds the real clients from the configuration.
    pub fn new(config: Arc<Config>, db: PgPool, outbound: &Outbound) -> anyhow::Result<Self> {
        let token = ServiceToken::new(outbound.clone(), &config.external);
        let keycloak = KeycloakClient::new(outbound.clone(), token.clone(), &config.external);
        let accounting = AccountingClient::new(outbound.clone(), token, &config.external);
        let mailer = SmtpMailer::new(&config.mail, config.external.http_timeout)?;
        Ok(Self {
            config,
            db,
            keycloak: Arc::new(keycloak),
            accounting: Arc::new(accounting),
            mailer: Arc::new(mailer),
            tasks: UseCaseTasks::new(),
            worker_wake: Arc::new(Notify::new()),
        })
    }
}
