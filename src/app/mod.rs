//! Wiring: configuration → clients → services → HTTP server, and the shutdown sequence
//! (operations.md §2 and §6). Tests use [`Application::build`] with a listener on port 0.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::clients::http::Outbound;
use crate::config::Config;
use crate::http::auth::{AuthConfig, Authenticator};
use crate::http::state::{AppState, Readiness};
use crate::repo::db;
use crate::usecases::Services;

pub mod metrics;
pub mod telemetry;

/// How long shutdown waits for in-flight requests and use-case tasks.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A built server, bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Builds the state and binds `listener`. Migrations are the caller's business (the
    /// binary runs them per `RUN_MIGRATIONS`; tests get migrated databases).
    pub async fn build(
        config: Config,
        db: PgPool,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        let config = Arc::new(config);
        let outbound = Outbound::new(config.external.http_timeout)?;
        let services = Services::new(config.clone(), db, &outbound)?;
        let auth = Arc::new(Authenticator::new(
            AuthConfig::from_config(&config),
            outbound,
        ));
        let state = AppState {
            services,
            auth,
            readiness: Arc::new(Readiness::default()),
            metrics: metrics::handle(),
        };
        Ok(Application { listener, state })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Warms caches (failures only logged), then serves until `shutdown` resolves, then runs
    /// the graceful shutdown sequence.
    pub async fn run_until<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Application { listener, state } = self;
        if let Err(err) = state.auth.warm_up().await {
            tracing::warn!(error = %err, "could not fetch the JWKS at start-up; will retry on first request");
        }

        let readiness = state.readiness.clone();
        let tasks = state.services.tasks.clone();
        let stop_worker = tokio_util::sync::CancellationToken::new();
        let worker = crate::jobs::worker::spawn(state.services.clone(), stop_worker.clone());
        let app = crate::http::app(state.clone());

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let serve = axum::serve(listener, app.into_make_service()).with_graceful_shutdown({
            let readiness = readiness.clone();
            async move {
                shutdown.await;
                tracing::info!("shutdown requested: draining requests and use-case tasks");
                readiness.begin_shutdown();
                let _ = stop_tx.send(true);
            }
        });
        let mut stop_rx_for_grace = stop_rx.clone();
        let server = tokio::spawn(async move { serve.await });

        // Once shutdown starts, in-flight requests get the grace period; then we stop waiting.
        let _ = stop_rx_for_grace.wait_for(|stopped| *stopped).await;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        match tokio::time::timeout_at(deadline, server).await {
            Ok(joined) => joined??,
            Err(_) => tracing::error!("requests still running after the grace period"),
        }
        let left = tasks
            .shutdown(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        if left > 0 {
            tracing::error!(
                tasks = left,
                "use-case tasks still running after the grace period; exiting anyway"
            );
        }
        // The worker finishes the pass in hand, within what is left of the grace period.
        stop_worker.cancel();
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining, worker).await.is_err() {
            tracing::error!("the background worker did not stop within the grace period");
        }
        state.services.db.close().await;
        drop(stop_rx);
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Connects and, per `RUN_MIGRATIONS`, migrates: the server's start-up steps 2–3.
pub async fn prepare_database(config: &Config) -> anyhow::Result<PgPool> {
    let pool = db::connect(
        &config.database_url,
        db::SERVER_POOL_SIZE,
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "could not connect to the database {}: {e}",
            config.database_label()
        )
    })?;
    if config.run_migrations {
        db::migrate(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
        tracing::info!(database = %config.database_label(), "migrations applied");
    } else {
        match db::migration_status(&pool).await {
            Ok(status) if status.is_ok() => {}
            Ok(status) => {
                tracing::error!(
                    ?status,
                    "migrations are not applied; /ready answers 503 until they are"
                )
            }
            Err(err) => tracing::error!(error = %err, "could not read the migration status"),
        }
    }
    Ok(pool)
}
