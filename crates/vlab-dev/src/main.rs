//! `vlab-dev`: the whole stack in one process (operations.md §11) — the service, a Keycloak
//! emulator, an accounting emulator and a mail capture — for newcomers and demos.
//! Never deployed: the production image contains only `vlab-courses` and `expire-courses`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod demo;

use clap::Parser;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;
use vlab_courses::app::telemetry::{self, LogTarget};
use vlab_courses::app::{self, Application};
use vlab_courses::config::{Binary, Config};
use vlab_emulators::{
    AccountingEmulator, AccountingOptions, KeycloakEmulator, KeycloakOptions, SmtpCapture,
    SmtpOptions, UserSpec,
};

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/vlab_dev";
const SERVICE_ADMIN_GROUP: &str = "/service/virtual-lab-svc/admin";
const TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Parser, Debug)]
#[command(
    name = "vlab-dev",
    version,
    about = "vlab-courses with Keycloak, accounting and mail emulators, in one process"
)]
struct Cli {
    /// API port.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Keycloak emulator port.
    #[arg(long, default_value_t = 9090)]
    kc_port: u16,
    /// Accounting emulator port.
    #[arg(long, default_value_t = 9100)]
    accounting_port: u16,
    /// Mail capture, SMTP port.
    #[arg(long, default_value_t = 1025)]
    smtp_port: u16,
    /// Mail capture, HTTP port.
    #[arg(long, default_value_t = 8025)]
    mail_http_port: u16,
    /// Where emulator state and captured mail are kept.
    #[arg(long, default_value = ".vlab-dev")]
    state_dir: PathBuf,
    /// Drop every table of the schema and wipe the state directory first.
    #[arg(long)]
    reset: bool,
    /// Create demo data: a course lab, an active course with 10 seats, an accepted faculty
    /// invite.
    #[arg(long)]
    seed_demo: bool,
    /// Allow a DATABASE_URL whose host is not localhost.
    #[arg(long)]
    allow_remote_db: bool,
}

/// The seeded users of operations.md §11.3.
struct DevUser {
    username: &'static str,
    id: Uuid,
    role: &'static str,
}

fn dev_users() -> Vec<DevUser> {
    let id = |n: u128| Uuid::from_u128(0x00000000_0000_4000_a000_000000000000 | n);
    vec![
        DevUser {
            username: "obi-admin",
            id: id(1),
            role: "OBI admin (service admin)",
        },
        DevUser {
            username: "obi-virtual-lab",
            id: id(2),
            role: "OBI owner user",
        },
        DevUser {
            username: "faculty",
            id: id(3),
            role: "faculty (after accepting an admin invite)",
        },
        DevUser {
            username: "student-1",
            id: id(4),
            role: "student",
        },
        DevUser {
            username: "student-2",
            id: id(5),
            role: "student",
        },
        DevUser {
            username: "student-3",
            id: id(6),
            role: "student",
        },
    ]
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vlab-dev: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// The environment (`.env` included, real variables winning) plus the (dev) defaults.
fn dev_variables(cli: &Cli) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = HashMap::new();
    if let Ok(iter) = dotenvy::dotenv_iter() {
        vars.extend(iter.flatten());
    }
    vars.extend(std::env::vars());
    let defaults = [
        ("DATABASE_URL", DEFAULT_DATABASE_URL.to_owned()),
        (
            "KC_SERVER_URI",
            format!("http://127.0.0.1:{}/", cli.kc_port),
        ),
        ("KC_CLIENT_SECRET", "dev-secret".to_owned()),
        (
            "ACCOUNTING_BASE_URL",
            format!("http://127.0.0.1:{}", cli.accounting_port),
        ),
        ("MAIL_SERVER", "127.0.0.1".to_owned()),
        ("MAIL_PORT", cli.smtp_port.to_string()),
        ("INVITE_JWT_SECRET", "dev-invite-secret".to_owned()),
        (
            "MULTIPLE_VLABS_ALLOWED_USER_ID",
            "00000000-0000-4000-a000-000000000002".to_owned(),
        ),
        ("LOG_FORMAT", "pretty".to_owned()),
        ("RUN_MIGRATIONS", "true".to_owned()),
        ("BIND_ADDR", format!("127.0.0.1:{}", cli.port)),
    ];
    for (key, value) in defaults {
        if vars.get(key).is_none_or(|v| v.trim().is_empty()) {
            vars.insert(key.to_owned(), value);
        }
    }
    vars
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let vars = dev_variables(&cli);
    let config = Config::from_map(&vars, Binary::Server).map_err(|e| anyhow::anyhow!("{e}"))?;
    telemetry::init(config.log_format, &config.rust_log, LogTarget::Stdout);

    let db_url = url::Url::parse(&config.database_url)?;
    let host = db_url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']']);
    if !cli.allow_remote_db && !matches!(host, "localhost" | "127.0.0.1" | "::1") {
        anyhow::bail!(
            "DATABASE_URL points at {host}; vlab-dev only uses a local database unless --allow-remote-db is given"
        );
    }
    ensure_database(&config.database_url).await?;

    if cli.reset {
        reset(&config.database_url, &cli.state_dir).await?;
    }
    std::fs::create_dir_all(cli.state_dir.join("mail"))?;

    let keycloak = KeycloakEmulator::start(KeycloakOptions {
        bind: loopback(cli.kc_port),
        state_file: Some(cli.state_dir.join("keycloak.json")),
        ..KeycloakOptions::default()
    })
    .await?;
    let accounting = AccountingEmulator::start(AccountingOptions {
        bind: loopback(cli.accounting_port),
        state_file: Some(cli.state_dir.join("accounting.json")),
    })
    .await?;
    let smtp = SmtpCapture::start(SmtpOptions {
        smtp_bind: loopback(cli.smtp_port),
        http_bind: Some(loopback(cli.mail_http_port)),
        mail_dir: Some(cli.state_dir.join("mail")),
    })
    .await?;
    seed_users(&keycloak);

    let pool = app::prepare_database(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .map_err(|e| anyhow::anyhow!("could not bind {}: {e}", config.bind_addr))?;
    let api = format!("http://{}{}", config.bind_addr, config.base_path);
    let application = Application::build(config.clone(), pool, listener).await?;

    print_banner(&api, &cli, &keycloak, &accounting, &smtp, &config);
    let serving = tokio::spawn(application.run_until(app::shutdown_signal()));
    if cli.seed_demo {
        let users = dev_users();
        match demo::seed(&api, &keycloak, &smtp, users[0].id, users[2].id).await {
            Ok(Some(d)) => print_demo(&api, &d, &keycloak, &smtp),
            Ok(None) => println!(
                "--seed-demo: \"{}\" already exists (use --reset to start over)",
                demo::LAB_NAME
            ),
            Err(err) => eprintln!("--seed-demo failed: {err:#}"),
        }
    }
    serving.await??;
    keycloak.shutdown().await;
    accounting.shutdown().await;
    smtp.shutdown().await;
    Ok(())
}

/// Creates the database of `url` if it does not exist (a local trust-auth server).
async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let admin = options.clone().database("postgres");
    let mut conn = admin.connect().await.map_err(|e| {
        anyhow::anyhow!("could not reach PostgreSQL at {url}: {e}; start it or set DATABASE_URL")
    })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut conn)
            .await?;
        tracing::info!(database = %name, "created the development database");
    }
    conn.close().await?;
    Ok(())
}

/// `--reset`: an empty schema and an empty state directory.
async fn reset(url: &str, state_dir: &Path) -> anyhow::Result<()> {
    let mut conn = sqlx::postgres::PgConnection::connect(url).await?;
    sqlx::query("DROP SCHEMA public CASCADE")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE SCHEMA public")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    if state_dir.exists() {
        std::fs::remove_dir_all(state_dir)?;
    }
    tracing::info!("database schema and state directory reset");
    Ok(())
}

fn seed_users(keycloak: &KeycloakEmulator) {
    for user in dev_users() {
        keycloak.add_user(UserSpec {
            id: user.id,
            username: user.username.to_owned(),
            email: format!("{}@example.org", user.username),
            first_name: Some(user.username.to_owned()),
            last_name: Some("Dev".to_owned()),
            password: "test".to_owned(),
        });
    }
    let admin_group = keycloak.ensure_group_path(SERVICE_ADMIN_GROUP);
    keycloak.add_user_to_group(dev_users()[0].id, &admin_group);
}

fn print_banner(
    api: &str,
    cli: &Cli,
    keycloak: &KeycloakEmulator,
    accounting: &AccountingEmulator,
    smtp: &SmtpCapture,
    config: &Config,
) {
    let mailbox = smtp
        .http_base_url()
        .map(|u| format!("{u}/messages"))
        .unwrap_or_default();
    println!();
    println!("vlab-dev is up");
    println!("  API         {api}");
    println!("  Swagger UI  {api}/docs");
    println!(
        "  Mailbox     {mailbox}   (files in {})",
        cli.state_dir.join("mail").display()
    );
    println!("  Balances    {}/_dev/balances", accounting.base_url());
    println!(
        "  Keycloak    {}   (issuer {})",
        keycloak.base_url(),
        keycloak.issuer()
    );
    println!();
    println!("Users (password `test`), with access tokens valid for 30 days:");
    for user in dev_users() {
        println!();
        println!("  {:<16} {}  {}", user.username, user.id, user.role);
        println!("  {}", keycloak.mint_token(user.id, TOKEN_TTL));
    }
    let admin = keycloak.mint_token(dev_users()[0].id, TOKEN_TTL);
    println!();
    println!("Try it:");
    println!("  TOKEN={admin}");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {api}/institutions/_search");
    println!(
        "  curl -s -d grant_type=password -d client_id=obpapp -d client_secret=dev-secret -d username=faculty -d password=test -d scope=openid {}/realms/obp-realm/protocol/openid-connect/token",
        keycloak.base_url()
    );
    println!();
    println!("To run expire-courses against this stack:");
    println!(
        "  export DATABASE_URL={} KC_SERVER_URI={}/ KC_CLIENT_SECRET=dev-secret ACCOUNTING_BASE_URL={} MAIL_SERVER=127.0.0.1 MAIL_PORT={}",
        config.database_url,
        keycloak.base_url(),
        accounting.base_url(),
        cli.smtp_port
    );
    println!("  cargo run --bin expire-courses");
    println!();
    println!(
        "Fault injection: curl -X POST {}/_dev/faults -H 'content-type: application/json' -d '{{\"operation\":\"kc_create_group\",\"mode\":\"error\",\"times\":1}}'",
        keycloak.base_url()
    );
    println!();
}

fn print_demo(api: &str, demo: &demo::Demo, keycloak: &KeycloakEmulator, smtp: &SmtpCapture) {
    let faculty = keycloak.mint_token(dev_users()[2].id, TOKEN_TTL);
    let student = keycloak.mint_token(dev_users()[3].id, TOKEN_TTL);
    let mailbox = smtp.http_base_url().unwrap_or_default();
    println!();
    println!(
        "Demo data: lab {} \"{}\", course {} (active, 10 seats); faculty is a lab admin.",
        demo.lab_id,
        demo::LAB_NAME,
        demo.course_id
    );
    println!("Next:");
    println!("  FACULTY={faculty}");
    println!("  STUDENT={student}");
    println!("  # 1. assign a student (as faculty)");
    println!(
        "  curl -s -H \"Authorization: Bearer $FACULTY\" -H 'content-type: application/json' -d '{{\"students\":[{{\"student_id\":\"stu-001\",\"email\":\"student-1@example.org\"}}]}}' {api}/seats/courses/{}/assign",
        demo.course_id
    );
    println!("  # 2. read the claim link (enrolment_id=...) in the mailbox");
    println!("  curl -s {mailbox}/messages");
    println!("  # 3. claim and activate (as student-1)");
    println!(
        "  curl -s -H \"Authorization: Bearer $STUDENT\" -H 'content-type: application/json' -d '{{\"enrolment_id\":\"<id from the link>\"}}' {api}/courses/claim"
    );
    println!(
        "  curl -s -X POST -H \"Authorization: Bearer $STUDENT\" {api}/courses/activate-enrolments"
    );
    println!();
}
