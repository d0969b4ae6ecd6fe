//! The HTTP server (operations.md §1.1): `vlab-courses [serve]`, `migrate`, `openapi`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use vlab_courses::app::telemetry::{self, LogTarget};
use vlab_courses::app::{self, Application};
use vlab_courses::config::{Binary, Config};
use vlab_courses::http;
use vlab_courses::repo::db;

#[derive(Parser)]
#[command(
    name = "vlab-courses",
    version,
    about = "Courses, seats and enrolments on virtual labs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP server and the background worker (the default).
    Serve,
    /// Apply pending migrations and exit (needs only DATABASE_URL).
    Migrate,
    /// Print the OpenAPI 3.1 document and exit (needs no configuration).
    Openapi,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            println!("{}", http::openapi::document_json());
            ExitCode::SUCCESS
        }
        Command::Migrate => migrate().await,
        Command::Serve => serve().await,
    }
}

async fn migrate() -> ExitCode {
    let _ = dotenvy::dotenv();
    let Some(url) = std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty()) else {
        eprintln!("configuration error: DATABASE_URL is required");
        return ExitCode::FAILURE;
    };
    telemetry::init(
        vlab_courses::config::LogFormat::Json,
        "info",
        LogTarget::Stdout,
    );
    let pool = match db::connect(&url, 2, std::time::Duration::from_secs(60)).await {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!("could not connect to the database: {err}");
            return ExitCode::FAILURE;
        }
    };
    match db::migrate(&pool).await {
        Ok(()) => {
            tracing::info!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("migrations failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> ExitCode {
    let config = match Config::from_env(Binary::Server) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(config.log_format, &config.rust_log, LogTarget::Stdout);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "start-up failed");
            eprintln!("start-up failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let pool = app::prepare_database(&config).await?;
    let listener = TcpListener::bind(config.bind_addr)
        .await
        .map_err(|e| anyhow::anyhow!("could not bind {}: {e}", config.bind_addr))?;
    tracing::info!(addr = %config.bind_addr, base_path = %config.base_path, "listening");
    let application = Application::build(config, pool, listener).await?;
    application.run_until(app::shutdown_signal()).await
}
