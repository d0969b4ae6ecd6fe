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
/// Where the web frontend runs in development.
const FRONTEND_ORIGIN: &str = "http://localhost:3000";

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
    /// Create demo data through the API — a course lab, its template project, an active
    /// course with 10 seats, an accepted faculty invite — and print those calls as a guided
    /// course: the curl commands with the answers they got, then the student's steps up to
    /// the drop.
    #[arg(long)]
    seed_demo: bool,
    /// Write the dev users' access tokens, and the seeded course and lab ids, to this file as
    /// JSON once the stack is ready: {"tokens": {"<username>": "<jwt>", ...}, "course_id":
    /// "...", "virtual_lab_id": "..."} (the ids only with --seed-demo).
    #[arg(long, value_name = "PATH")]
    tokens_file: Option<PathBuf>,
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

/// The environment (`.env` included, real variables winning) plus the (dev) defaults, and
/// whether `CORS_ORIGINS` was given (else the dev default applies).
fn dev_variables(cli: &Cli) -> (HashMap<String, String>, bool) {
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
    let cors_given = vars
        .get("CORS_ORIGINS")
        .is_some_and(|v| !v.trim().is_empty());
    if !cors_given {
        let base = vars.get("INVITE_LINK_BASE").map(String::as_str);
        vars.insert(
            "CORS_ORIGINS".to_owned(),
            default_cors_origins(base).join(","),
        );
    }
    (vars, cors_given)
}

/// The web frontend in development (`http://localhost:3000`, where the e-mail links point by
/// default) and the origin of `INVITE_LINK_BASE`, when `CORS_ORIGINS` says nothing.
fn default_cors_origins(invite_link_base: Option<&str>) -> Vec<String> {
    let mut origins = vec![FRONTEND_ORIGIN.to_owned()];
    let origin = invite_link_base
        .filter(|b| !b.trim().is_empty())
        .and_then(|b| url::Url::parse(b.trim()).ok())
        .map(|u| u.origin())
        .filter(url::Origin::is_tuple)
        .map(|o| o.ascii_serialization());
    if let Some(origin) = origin
        && !origins.contains(&origin)
    {
        origins.push(origin);
    }
    origins
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (vars, cors_from_env) = dev_variables(&cli);
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

    let tokens: Vec<(&'static str, String)> = dev_users()
        .iter()
        .map(|u| (u.username, keycloak.mint_token(u.id, TOKEN_TTL)))
        .collect();
    let token_of = |name: &str| {
        tokens
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    };
    let banner = Banner {
        api: &api,
        cli: &cli,
        keycloak: &keycloak,
        accounting: &accounting,
        smtp: &smtp,
        config: &config,
        tokens: &tokens,
        cors_from_env,
    };
    banner.print();
    let serving = tokio::spawn(application.run_until(app::shutdown_signal()));
    let mut seeded: Option<(String, String)> = None;
    if cli.seed_demo {
        let (admin, faculty) = (token_of("obi-admin"), token_of("faculty"));
        let tokens = demo::Tokens {
            admin: &admin,
            faculty: &faculty,
        };
        match demo::seed(&api, &smtp, tokens).await {
            Ok(Some(d)) => {
                banner.print_course(&d, &token_of("student-1"));
                seeded = Some((d.course_id, d.lab_id));
            }
            Ok(None) => {
                println!(
                    "--seed-demo: \"{}\" already exists (use --reset to start over)",
                    demo::LAB_NAME
                );
                match demo::find_existing(&api, &admin).await {
                    Ok(ids) => seeded = Some(ids),
                    Err(err) => eprintln!("--seed-demo: could not read the demo course: {err:#}"),
                }
            }
            Err(err) => eprintln!("--seed-demo failed: {err:#}"),
        }
    }
    if let Some(path) = &cli.tokens_file {
        write_tokens_file(path, &tokens, seeded.as_ref())?;
        println!("Tokens and ids written to {}", path.display());
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

/// `--tokens-file`: the users' tokens and the seeded ids as one JSON object, written to a
/// temporary file first so a reader never sees half of it.
fn write_tokens_file(
    path: &Path,
    tokens: &[(&'static str, String)],
    seeded: Option<&(String, String)>,
) -> anyhow::Result<()> {
    let mut document = serde_json::Map::new();
    let tokens: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .map(|(name, token)| ((*name).to_owned(), serde_json::Value::from(token.as_str())))
        .collect();
    document.insert("tokens".to_owned(), tokens.into());
    if let Some((course_id, lab_id)) = seeded {
        document.insert("course_id".to_owned(), course_id.as_str().into());
        document.insert("virtual_lab_id".to_owned(), lab_id.as_str().into());
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(document))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text + "\n")
        .map_err(|e| anyhow::anyhow!("could not write {}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .map_err(|e| anyhow::anyhow!("could not write {}: {e}", path.display()))?;
    Ok(())
}

/// What the start-up banner and the guided course print.
struct Banner<'a> {
    api: &'a str,
    cli: &'a Cli,
    keycloak: &'a KeycloakEmulator,
    accounting: &'a AccountingEmulator,
    smtp: &'a SmtpCapture,
    config: &'a Config,
    tokens: &'a [(&'static str, String)],
    /// `CORS_ORIGINS` came from the environment or `.env`, not from the dev default.
    cors_from_env: bool,
}

impl Banner<'_> {
    fn mailbox(&self) -> String {
        self.smtp.http_base_url().unwrap_or_default()
    }

    fn token(&self, name: &str) -> &str {
        self.tokens
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, t)| t.as_str())
    }

    fn print(&self) {
        let (api, cli, keycloak, accounting, config) = (
            self.api,
            self.cli,
            self.keycloak,
            self.accounting,
            self.config,
        );
        println!();
        println!("vlab-dev is up");
        println!("  API         {api}");
        println!("  Swagger UI  {api}/docs");
        println!(
            "  Mailbox     {}/   (a page for the browser; JSON at /messages; files in {})",
            self.mailbox(),
            cli.state_dir.join("mail").display()
        );
        println!("  Balances    {}/_dev/balances", accounting.base_url());
        println!(
            "  Keycloak    {}   (issuer {})",
            keycloak.base_url(),
            keycloak.issuer()
        );
        let origins = config.cors_origins.join(", ");
        if self.cors_from_env {
            println!("  CORS        allows {origins}   (from CORS_ORIGINS)");
        } else {
            println!(
                "  CORS        allows {origins}   (the frontend and INVITE_LINK_BASE; set CORS_ORIGINS to change)"
            );
        }
        println!();
        println!("Users (password `test`), with access tokens valid for 30 days:");
        for user in dev_users() {
            println!();
            println!("  {:<16} {}  {}", user.username, user.id, user.role);
            println!("  {}", self.token(user.username));
        }
        println!();
        println!("Try it:");
        println!("  TOKEN={}", self.token("obi-admin"));
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

    /// The seed as a guided course: what it did, with the answers, then the student's half.
    fn print_course(&self, demo: &demo::Demo, student: &str) {
        let api = self.api;
        let mailbox = self.mailbox();
        let course = &demo.course_id;
        println!();
        println!(
            "Demo data: lab {} \"{}\", course {} (active, {} seats); faculty is a lab admin.",
            demo.lab_id,
            demo::LAB_NAME,
            demo.course_id,
            demo::SEATS
        );
        println!();
        println!("A course from start to end. The seed made these calls (answers shortened):");
        println!();
        println!("  ADMIN={}", self.token("obi-admin"));
        println!("  FACULTY={}", self.token("faculty"));
        println!("  STUDENT={student}");
        for (i, step) in demo.steps.iter().enumerate() {
            println!();
            println!("  # {}. {} — {}", i + 1, step.title, step.roles);
            println!("  {}", demo::curl(api, step));
            println!(
                "  #    → {} {}",
                step.status,
                demo::short(&step.answer, 300)
            );
        }
        let n = demo.steps.len();
        let q = demo::shell_quote;
        println!();
        println!("Your turn: the student's half, up to the drop (needs jq):");
        println!();
        println!(
            "  # {}. Assign a seat to a student (an e-mail with the claim link) — a course admin (the faculty)",
            n + 1
        );
        println!(
            "  ASSIGN=$(curl -s -H \"Authorization: Bearer $FACULTY\" -H 'content-type: application/json' -d '{{\"students\":[{{\"student_id\":\"stu-001\",\"email\":\"student-1@example.org\"}}]}}' {}); echo \"$ASSIGN\"",
            q(&format!("{api}/seats/courses/{course}/assign"))
        );
        println!(
            "  SEAT=$(echo \"$ASSIGN\" | jq -r '.results[0].seat_id'); ENROLMENT=$(echo \"$ASSIGN\" | jq -r '.results[0].enrolment_id')"
        );
        println!(
            "  # {}. The claim e-mail: open {mailbox}/ in a browser, or read its link (…/course-enrolment?enrolment_id=$ENROLMENT)",
            n + 2
        );
        println!("  curl -s {}/messages | jq -r '.[-1].links[0]'", mailbox);
        println!(
            "  # {}. The student claims the seat with the link's enrolment_id (POST /courses/claim; the course id is not in the path) — any signed-in user holding the link",
            n + 3
        );
        println!(
            "  curl -s -H \"Authorization: Bearer $STUDENT\" -H 'content-type: application/json' -d \"{{\\\"enrolment_id\\\":\\\"$ENROLMENT\\\"}}\" {api}/courses/claim"
        );
        println!(
            "  # {}. The student gets access to their project once the course has started — the student, for their own enrolments",
            n + 4
        );
        println!(
            "  curl -s -X POST -H \"Authorization: Bearer $STUDENT\" {api}/courses/activate-enrolments"
        );
        println!("  # {}. The course's enrolments — a course admin", n + 5);
        println!(
            "  curl -s -H \"Authorization: Bearer $FACULTY\" {api}/courses/{course}/enrolments"
        );
        println!(
            "  # {}. Drop the student (before the last drop date the seat is recovered) — a course admin",
            n + 6
        );
        println!(
            "  curl -s -H \"Authorization: Bearer $FACULTY\" -H 'content-type: application/json' -d \"{{\\\"seat_ids\\\":[\\\"$SEAT\\\"]}}\" {api}/seats/courses/{course}/drop"
        );
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontend_and_the_invite_link_origin_are_allowed_by_default() {
        assert_eq!(default_cors_origins(None), ["http://localhost:3000"]);
        assert_eq!(
            default_cors_origins(Some("http://localhost:3000/")),
            ["http://localhost:3000"]
        );
        assert_eq!(
            default_cors_origins(Some("https://app.example.org/labs")),
            ["http://localhost:3000", "https://app.example.org"]
        );
        assert_eq!(
            default_cors_origins(Some("not a url")),
            ["http://localhost:3000"]
        );
    }
}
