//! Starts the real `vlab-dev` binary on free ports with its own database and state directory,
//! then uses what it prints like a newcomer would.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    listener.local_addr().expect("addr").port()
}

/// The server of `DATABASE_URL` (or the local one) with a fresh database name.
fn test_database_url() -> (String, String) {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut url = url::Url::parse(&base).expect("DATABASE_URL");
    let name = format!("vlab_dev_test_{}", uuid::Uuid::new_v4().simple());
    url.set_path(&name);
    (url.to_string(), name)
}

#[tokio::test]
async fn the_dev_stack_starts_and_its_printed_tokens_work() {
    let (database_url, db_name) = test_database_url();
    let state_dir = std::env::temp_dir().join(format!("vlab-dev-{db_name}"));
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vlab-dev"))
        .args(["--port", &port.to_string()])
        .args(["--kc-port", &free_port().to_string()])
        .args(["--accounting-port", &free_port().to_string()])
        .args(["--smtp-port", &free_port().to_string()])
        .args(["--mail-http-port", &free_port().to_string()])
        .arg("--seed-demo")
        .arg("--state-dir")
        .arg(&state_dir)
        .env("DATABASE_URL", &database_url)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start vlab-dev");

    // Read the banner: each user's token is on the line after its row; then the demo line.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let read_banner = async {
        let mut tokens = std::collections::HashMap::new();
        let mut user: Option<String> = None;
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some(name) = user.take() {
                tokens.insert(name, line.trim().to_owned());
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or_default();
            if ["obi-admin", "faculty"].contains(&first)
                && line.starts_with("  ")
                && !line.contains("Bearer")
            {
                user = Some(first.to_owned());
            }
            if let Some(rest) = line.strip_prefix("Demo data: lab ") {
                let course = rest
                    .split("course ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next());
                return (
                    tokens,
                    course.expect("course id in the demo line").to_owned(),
                );
            }
        }
        panic!("vlab-dev exited before printing the demo data");
    };
    let (tokens, course_id) = tokio::time::timeout(Duration::from_secs(120), read_banner)
        .await
        .expect("vlab-dev printed its banner and demo data in time");
    let token = tokens["obi-admin"].clone();

    let api = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{api}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);

    let search = format!("{api}/institutions/_search");
    let ok = client
        .get(&search)
        .bearer_auth(&token)
        .send()
        .await
        .expect("search");
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.expect("json");
    assert_eq!(body["data"][0]["name"], "Open Brain Institute");

    // The demo course is active with 10 seats, and the faculty joined its lab by invite.
    let course: serde_json::Value = client
        .get(format!("{api}/courses/{course_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("course")
        .json()
        .await
        .expect("json");
    assert_eq!(course["data"]["status"], "active", "{course}");
    let seats = client
        .get(format!("{api}/seats/courses/{course_id}"))
        .bearer_auth(&tokens["faculty"])
        .send()
        .await
        .expect("seats");
    assert_eq!(seats.status(), 200);
    let seats: serde_json::Value = seats.json().await.expect("json");
    assert_eq!(seats["pagination"]["total_items"], 10);

    // Flip one character in the middle of the signature.
    let signature_start = token.rfind('.').expect("a JWT") + 1;
    let i = signature_start + (token.len() - signature_start) / 2;
    let flipped = if &token[i..=i] == "A" { "B" } else { "A" };
    let tampered = format!("{}{}{}", &token[..i], flipped, &token[i + 1..]);
    let refused = client
        .get(&search)
        .bearer_auth(&tampered)
        .send()
        .await
        .expect("search");
    assert_eq!(refused.status(), 401);

    child.kill().await.expect("stop vlab-dev");
    let _ = std::fs::remove_dir_all(&state_dir);
    drop_database(&database_url, &db_name).await;
}

async fn drop_database(database_url: &str, name: &str) {
    use sqlx::{ConnectOptions, Connection};
    let options: sqlx::postgres::PgConnectOptions = database_url.parse().expect("url");
    if let Ok(mut conn) = options.database("postgres").connect().await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}
