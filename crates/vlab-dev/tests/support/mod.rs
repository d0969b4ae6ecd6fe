//! What the tests that start the real `vlab-dev` binary share: free ports, a throwaway
//! database on the `DATABASE_URL` server, and its removal.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use tokio::process::Command;

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    listener.local_addr().expect("addr").port()
}

/// The server of `DATABASE_URL` (or the local one) with a fresh database name.
pub fn test_database_url() -> (String, String) {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut url = url::Url::parse(&base).expect("DATABASE_URL");
    let name = format!("vlab_dev_test_{}", uuid::Uuid::new_v4().simple());
    url.set_path(&name);
    (url.to_string(), name)
}

pub async fn drop_database(database_url: &str, name: &str) {
    use sqlx::{ConnectOptions, Connection};
    let options: sqlx::postgres::PgConnectOptions = database_url.parse().expect("url");
    if let Ok(mut conn) = options.database("postgres").connect().await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// The build's `target` directory: `CARGO_TARGET_DIR`, else the workspace's.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// `vlab-dev --seed-demo` on free ports against `database_url`, keeping its state in `state_dir`
/// and writing its tokens to `tokens_file`, run from the temporary directory; with the API and
/// mail HTTP ports it was given. The caller adds its environment and output handling.
pub fn seeded_vlab_dev(
    database_url: &str,
    state_dir: &Path,
    tokens_file: &Path,
) -> (Command, u16, u16) {
    let (port, mail_port) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_vlab-dev"));
    command
        .args(["--port", &port.to_string()])
        .args(["--kc-port", &free_port().to_string()])
        .args(["--accounting-port", &free_port().to_string()])
        .args(["--smtp-port", &free_port().to_string()])
        .args(["--mail-http-port", &mail_port.to_string()])
        .arg("--seed-demo")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--tokens-file")
        .arg(tokens_file)
        .env("DATABASE_URL", database_url)
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true);
    (command, port, mail_port)
}
