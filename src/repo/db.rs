//! The PostgreSQL pool and the embedded migrations (operations.md §2, §3).

use std::collections::HashMap;
use std::time::Duration;

use backon::Retryable;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::domain::backoff;

/// Every migration in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Pool sizes of README §5.1.
pub const SERVER_POOL_SIZE: u32 = 10;
pub const JOB_POOL_SIZE: u32 = 4;

/// Creates the pool, retrying the first connection with backoff (1, 2, 4 … s) for up to
/// `give_up_after`, so that a pod starting before its database does not crash-loop.
pub async fn connect(
    database_url: &str,
    max_connections: u32,
    give_up_after: Duration,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = database_url.parse()?;
    let connect = || {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
    };
    connect
        .retry(backoff::doubling_within(
            Duration::from_secs(1),
            Duration::from_secs(16),
            give_up_after,
        ))
        .sleep(tokio::time::sleep)
        .notify(|err, delay| {
            tracing::warn!(error = %err, retry_in_s = delay.as_secs(), "database not reachable yet");
        })
        .await
}

/// What the database holds compared with the migrations embedded in this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStatus {
    /// Every embedded migration is applied with a matching checksum.
    UpToDate { unknown_newer: usize },
    /// Some embedded migrations are missing.
    Pending(Vec<i64>),
    /// An applied migration's checksum differs from the embedded one.
    Mismatch(i64),
}

impl MigrationStatus {
    pub fn is_ok(&self) -> bool {
        matches!(self, MigrationStatus::UpToDate { .. })
    }
}

/// Compares `_sqlx_migrations` with [`MIGRATOR`]. A database ahead of the binary is tolerated
/// so that an image can be rolled back (operations.md §3).
pub async fn migration_status(pool: &PgPool) -> Result<MigrationStatus, sqlx::Error> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied: HashMap<i64, Vec<u8>> = if table_exists {
        sqlx::query("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| (row.get::<i64, _>(0), row.get::<Vec<u8>, _>(1)))
            .collect()
    } else {
        HashMap::new()
    };

    let mut pending = Vec::new();
    for migration in MIGRATOR.iter() {
        match applied.get(&migration.version) {
            None => pending.push(migration.version),
            Some(checksum) if checksum.as_slice() != migration.checksum.as_ref() => {
                return Ok(MigrationStatus::Mismatch(migration.version));
            }
            Some(_) => {}
        }
    }
    if !pending.is_empty() {
        return Ok(MigrationStatus::Pending(pending));
    }
    let known: std::collections::HashSet<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let unknown_newer = applied.keys().filter(|v| !known.contains(v)).count();
    Ok(MigrationStatus::UpToDate { unknown_newer })
}

/// Applies pending migrations. sqlx holds a Postgres advisory lock meanwhile, so replicas that
/// start together apply each migration once. Unknown newer migrations are tolerated.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    tolerant_migrator().run(pool).await
}

// The embedded migrator with `ignore_missing` on (`Migrator` is not `Clone`).
fn tolerant_migrator() -> Migrator {
    Migrator {
        migrations: MIGRATOR.migrations.clone(),
        ignore_missing: true,
        locking: true,
        no_tx: false,
    }
}
