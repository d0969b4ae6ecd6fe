//! What a benchmark runs against: a fresh database, the emulators in this process, and the
//! release `vlab-courses` binary as a child process (so its memory can be read from /proc and
//! the load comes from another process).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{ConnectOptions, Connection};
use tokio::process::{Child, Command};
use uuid::Uuid;
use vlab_emulators::{
    AccountingEmulator, AccountingOptions, KeycloakEmulator, KeycloakOptions, SmtpCapture,
    SmtpOptions, UserSpec,
};

pub const ADMIN: Uuid = Uuid::from_u128(0x00000000_0000_4000_a000_000000000001);
pub const FACULTY: Uuid = Uuid::from_u128(0x00000000_0000_4000_a000_000000000003);

pub struct Stack {
    pub keycloak: KeycloakEmulator,
    pub accounting: AccountingEmulator,
    /// Kept alive so the server's claim e-mails are accepted.
    _smtp: SmtpCapture,
    pub database_url: String,
    pub api: String,
    pub vars: HashMap<String, String>,
    server: Child,
    database: String,
    admin_url: String,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The directory holding this binary, where cargo also put `vlab-courses` and
/// `expire-courses`.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .context("the benchmark binary has no directory")?
        .join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p vlab-courses --bins`",
            path.display()
        );
    }
    Ok(path)
}

impl Stack {
    pub async fn start(server_url: &str, concurrency: usize) -> anyhow::Result<Stack> {
        let keycloak = KeycloakEmulator::start(KeycloakOptions::default()).await?;
        let accounting = AccountingEmulator::start(AccountingOptions::default()).await?;
        let smtp = SmtpCapture::start(SmtpOptions::default()).await?;
        for (id, name) in [(ADMIN, "obi-admin"), (FACULTY, "faculty")] {
            keycloak.add_user(UserSpec::new(id, name));
        }
        let group = keycloak.ensure_group_path("/service/virtual-lab-svc/admin");
        keycloak.add_user_to_group(ADMIN, &group);

        let mut url = url::Url::parse(server_url)?;
        let admin_url = url.to_string();
        let database = format!("vlab_bench_{}", Uuid::new_v4().simple());
        create_database(&admin_url, &database).await?;
        url.set_path(&database);
        let database_url = url.to_string();

        let port = free_port()?;
        let vars: HashMap<String, String> = [
            ("DATABASE_URL", database_url.clone()),
            ("KC_SERVER_URI", format!("{}/", keycloak.base_url())),
            ("KC_CLIENT_SECRET", "dev-secret".to_owned()),
            ("ACCOUNTING_BASE_URL", accounting.base_url()),
            ("INVITE_JWT_SECRET", "bench".to_owned()),
            ("MAIL_SERVER", "127.0.0.1".to_owned()),
            ("MAIL_PORT", smtp.smtp_port().to_string()),
            ("BIND_ADDR", format!("127.0.0.1:{port}")),
            ("EXTERNAL_CONCURRENCY", concurrency.to_string()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        // The allocator setting of the production image (Dockerfile), unless overridden.
        .chain(std::iter::once((
            "MALLOC_ARENA_MAX".to_owned(),
            std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".to_owned()),
        )))
        .collect();

        let server = spawn_server(&vars)?;
        let api = format!("http://127.0.0.1:{port}");
        wait_ready(&api).await?;
        Ok(Stack {
            keycloak,
            accounting,
            _smtp: smtp,
            database_url,
            api,
            vars,
            server,
            database,
            admin_url,
        })
    }

    /// Kills the server with SIGKILL (a `kill -9`: no shutdown, no compensation) and waits
    /// for it to be gone.
    pub async fn kill_server(&mut self) -> anyhow::Result<()> {
        self.server.kill().await.context("killing vlab-courses")
    }

    /// Starts the server again on the same address and database; returns once it is ready.
    pub async fn restart_server(&mut self) -> anyhow::Result<()> {
        self.server = spawn_server(&self.vars)?;
        wait_ready(&self.api).await
    }

    pub fn server_pid(&self) -> Option<u32> {
        self.server.id()
    }

    /// Current and peak resident memory of the server, in MiB.
    pub fn server_memory(&self) -> Option<(f64, f64)> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.server_pid()?)).ok()?;
        let field = |name: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Sets the latency of every Keycloak and accounting call.
    pub fn set_latency(&self, latency: Duration) {
        self.keycloak.set_latency(latency);
        self.accounting.set_latency(latency);
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.server.kill().await;
        drop_database(&self.admin_url, &self.database).await
    }
}

fn spawn_server(vars: &HashMap<String, String>) -> anyhow::Result<Child> {
    Command::new(sibling_binary("vlab-courses")?)
        .env_clear()
        .envs(vars)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting vlab-courses")
}

async fn wait_ready(api: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{api}/ready")).send().await
            && r.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("vlab-courses did not become ready")
}

async fn create_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let options: sqlx::postgres::PgConnectOptions = server_url.parse()?;
    let mut conn = options
        .connect()
        .await
        .context("connecting to PostgreSQL (set DATABASE_URL)")?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

async fn drop_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let options: sqlx::postgres::PgConnectOptions = server_url.parse()?;
    let mut conn = options.connect().await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
