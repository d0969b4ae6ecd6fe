#![allow(dead_code)] // The rig serves every test module; not each uses every helper.

//! The test rig: the real server on port 0 with its own fresh Postgres database (from
//! `#[sqlx::test]`) and in-process Keycloak, accounting and SMTP emulators on loopback.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;
use vlab_courses::app::Application;
use vlab_courses::config::{Binary, Config};
use vlab_emulators::{
    AccountingEmulator, AccountingOptions, KeycloakEmulator, KeycloakOptions, SmtpCapture,
    SmtpOptions, UserSpec,
};

pub const SERVICE_ADMIN_GROUP: &str = "/service/virtual-lab-svc/admin";
pub const INVITE_SECRET: &str = "test-invite-secret";

/// A seeded Keycloak user of the test realm.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub username: String,
    pub email: String,
}

/// The users every test realm has.
#[derive(Debug, Clone)]
pub struct TestUsers {
    /// In the service-admin group.
    pub admin: TestUser,
    /// `MULTIPLE_VLABS_ALLOWED_USER_ID`.
    pub owner: TestUser,
    pub faculty: TestUser,
    pub students: Vec<TestUser>,
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub db: PgPool,
    pub client: reqwest::Client,
    pub keycloak: KeycloakEmulator,
    pub accounting: AccountingEmulator,
    pub smtp: SmtpCapture,
    pub users: TestUsers,
    pub config: Config,
    /// The configuration variables the server was started with (reused by `spawn_process`).
    pub vars: HashMap<String, String>,
    services: vlab_courses::usecases::Services,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

fn user(n: u128, username: &str) -> TestUser {
    TestUser {
        id: Uuid::from_u128(0x00000000_0000_4000_a000_000000000000 | n),
        username: username.to_owned(),
        email: format!("{username}@example.org"),
    }
}

impl TestApp {
    pub async fn spawn(db: PgPool) -> TestApp {
        Self::spawn_with(db, |_| {}).await
    }

    /// Starts the emulators and the server; `tweak` may override configuration variables.
    pub async fn spawn_with(
        db: PgPool,
        tweak: impl FnOnce(&mut HashMap<String, String>),
    ) -> TestApp {
        let keycloak = KeycloakEmulator::start(KeycloakOptions::default())
            .await
            .expect("keycloak emulator");
        let accounting = AccountingEmulator::start(AccountingOptions::default())
            .await
            .expect("accounting emulator");
        let smtp = SmtpCapture::start(SmtpOptions::default())
            .await
            .expect("smtp capture");

        let users = TestUsers {
            admin: user(1, "obi-admin"),
            owner: user(2, "obi-virtual-lab"),
            faculty: user(3, "faculty"),
            students: (0..3)
                .map(|i| user(4 + i, &format!("student-{}", i + 1)))
                .collect(),
        };
        let all = [&users.admin, &users.owner, &users.faculty]
            .into_iter()
            .chain(users.students.iter());
        for u in all {
            keycloak.add_user(UserSpec {
                id: u.id,
                username: u.username.clone(),
                email: u.email.clone(),
                first_name: Some(u.username.clone()),
                last_name: Some("Test".to_owned()),
                password: "test".to_owned(),
            });
        }
        let admin_group = keycloak.ensure_group_path(SERVICE_ADMIN_GROUP);
        keycloak.add_user_to_group(users.admin.id, &admin_group);

        let connect = db.connect_options();
        let database_url = format!(
            "postgres://{}@{}:{}/{}",
            "postgres",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or("postgres")
        );
        let mut vars: HashMap<String, String> = [
            ("DATABASE_URL", database_url),
            ("KC_SERVER_URI", format!("{}/", keycloak.base_url())),
            ("KC_CLIENT_SECRET", "dev-secret".to_owned()),
            ("ACCOUNTING_BASE_URL", accounting.base_url()),
            ("INVITE_JWT_SECRET", INVITE_SECRET.to_owned()),
            ("MAIL_SERVER", "127.0.0.1".to_owned()),
            ("MAIL_PORT", smtp.smtp_port().to_string()),
            ("MULTIPLE_VLABS_ALLOWED_USER_ID", users.owner.id.to_string()),
            ("BIND_ADDR", "127.0.0.1:0".to_owned()),
            ("HTTP_TIMEOUT_SECONDS", "2".to_owned()),
            ("LOG_FORMAT", "pretty".to_owned()),
            ("KC_EXPECTED_ISSUER", keycloak.issuer()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        tweak(&mut vars);
        let config = Config::from_map(&vars, Binary::Server).expect("test configuration");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let application = Application::build(config.clone(), db.clone(), listener)
            .await
            .expect("build application");
        let port = application.port();
        let services = application.state().services.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until(async move {
            let _ = rx.await;
        }));

        TestApp {
            address: format!("http://127.0.0.1:{port}{}", config.base_path),
            port,
            db,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            keycloak,
            accounting,
            smtp,
            users,
            config,
            vars,
            services,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// The server's use-case dependencies, to drive worker passes and job steps directly.
    pub fn services(&self) -> vlab_courses::usecases::Services {
        self.services.clone()
    }

    /// Starts the real `vlab-courses` binary as a second server process on the same database
    /// and emulators. It is killed when the returned handle is dropped.
    pub async fn spawn_process(&self) -> ServerProcess {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("addr").port()
        };
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vlab-courses"));
        command
            .env_clear()
            .envs(&self.vars)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RUN_MIGRATIONS", "false")
            .env("RUST_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().expect("start vlab-courses");
        let base_url = format!("http://127.0.0.1:{port}{}", self.config.base_path);
        for _ in 0..200 {
            if let Ok(r) = self.client.get(format!("{base_url}/ready")).send().await
                && r.status() == StatusCode::OK
            {
                return ServerProcess {
                    base_url,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the second vlab-courses process did not become ready");
    }

    /// A 1-hour token for a seeded user.
    pub fn token(&self, user: &TestUser) -> String {
        self.keycloak.mint_token(user.id, Duration::from_secs(3600))
    }

    pub fn admin_token(&self) -> String {
        self.token(&self.users.admin)
    }

    pub fn faculty_token(&self) -> String {
        self.token(&self.users.faculty)
    }

    pub fn student_token(&self, i: usize) -> String {
        self.token(&self.users.students[i])
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.expect("request failed")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(35), server).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A `vlab-courses` child process serving the same database and emulators.
pub struct ServerProcess {
    pub base_url: String,
    _child: tokio::process::Child,
}

/// Reads a response as `(status, json)`; a non-JSON body fails the test.
pub async fn json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("response {status} is not JSON: {text}"));
    (status, value)
}

/// Asserts the error body of api.md §2.1: exactly the four keys, in order.
pub fn assert_error_body(body: &Value, status: StatusCode, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "unexpected status, body: {body}");
    let object = body.as_object().expect("error body is an object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys, ["error_code", "message", "details", "data"], "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}
