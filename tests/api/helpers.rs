#![allow(dead_code)] // The rig serves every test module; not each uses every helper.

//! The test rig: the real server on port 0 with its own fresh Postgres database (from
//! `#[sqlx::test]`) and in-process Keycloak, accounting and SMTP emulators on loopback.
//!
//! The vocabulary every test module speaks:
//! - requests: `app.as_admin().post_course(&body)` and friends, one typed helper per route on
//!   a [`Caller`] (`as_admin`, `as_faculty`, `as_user`, `with_token`, `anonymous`), each
//!   returning a [`Reply`] `(status, body)`;
//! - answers: [`ReplyExt`] (`ok_body`, `error_with`, `invalid`, `denied`, ...), the error body
//!   of api.md §2.1 ([`assert_error_body`]), key order ([`assert_keys`]), [`uuid_of`];
//! - set-up the API cannot do: [`exec`], [`refuse_inserts`]; scenarios live in `fixtures.rs`.
//!
//! `TEST_LOG=1` prints the server's logs (filtered by `RUST_LOG`); the default is quiet.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Once;
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
        init_test_log();
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
        self.spawn_process_with(&[]).await
    }

    /// [`spawn_process`](Self::spawn_process) with extra environment variables (they override
    /// the app's; `RUST_LOG` defaults to `warn`). Its output (stdout and stderr: the log) is kept in a file,
    /// read with [`ServerProcess::log`].
    pub async fn spawn_process_with(&self, env: &[(&str, &str)]) -> ServerProcess {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("addr").port()
        };
        let log = std::env::temp_dir().join(format!("vlab-courses-{}.log", Uuid::new_v4()));
        let stdout = std::fs::File::create(&log).expect("the log file");
        let stderr = stdout.try_clone().expect("the log file");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vlab-courses"));
        command
            .env_clear()
            .envs(&self.vars)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RUN_MIGRATIONS", "false")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::from(stdout))
            .stderr(std::process::Stdio::from(stderr))
            .kill_on_drop(true);
        let child = command.spawn().expect("start vlab-courses");
        let base_url = format!("http://127.0.0.1:{port}{}", self.config.base_path);
        for _ in 0..200 {
            if let Ok(r) = self.client.get(format!("{base_url}/ready")).send().await
                && r.status() == StatusCode::OK
            {
                return ServerProcess {
                    base_url,
                    log,
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

    /// Requests as the caller holding `token`.
    pub fn with_token(&self, token: &str) -> Caller<'_> {
        Caller {
            app: self,
            token: Some(token.to_owned()),
        }
    }

    /// Requests as `user`, with a fresh 1-hour token.
    pub fn as_user(&self, user: &TestUser) -> Caller<'_> {
        self.with_token(&self.token(user))
    }

    /// Requests as the service admin.
    pub fn as_admin(&self) -> Caller<'_> {
        self.with_token(&self.admin_token())
    }

    /// Requests as the seeded faculty user.
    pub fn as_faculty(&self) -> Caller<'_> {
        self.with_token(&self.faculty_token())
    }

    /// Requests with this bearer token, or none.
    pub fn caller(&self, token: Option<&str>) -> Caller<'_> {
        Caller {
            app: self,
            token: token.map(str::to_owned),
        }
    }

    /// Requests without credentials.
    pub fn anonymous(&self) -> Caller<'_> {
        Caller {
            app: self,
            token: None,
        }
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
    /// Where its output goes.
    log: std::path::PathBuf,
    _child: tokio::process::Child,
}

impl ServerProcess {
    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A status and a parsed JSON body: what every typed request helper returns.
pub type Reply = (StatusCode, Value);

/// The test app seen by one caller: one typed helper per route, each returning a [`Reply`].
/// "Empty" helpers send no body at all (no content type), as a bare `POST` does.
pub struct Caller<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl Caller<'_> {
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        json(
            self.app
                .request(method, path, self.token.as_deref(), body)
                .await,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }

    /// POST with extra request headers; the whole response, for its headers and exact text.
    pub async fn post_with_headers(
        &self,
        path: &str,
        headers: &[(&str, reqwest::header::HeaderValue)],
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self.app.client.post(self.app.url(path)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (name, value) in headers {
            req = req.header(*name, value.clone());
        }
        req.send().await.expect("request failed")
    }

    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(Method::POST, path, None).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    // ---- /virtual-labs

    pub async fn post_virtual_lab(&self, body: &Value) -> Reply {
        self.post("/virtual-labs", body).await
    }

    /// `query` is the whole query string with its `?`, or empty.
    pub async fn get_virtual_labs(&self, query: &str) -> Reply {
        self.get(&format!("/virtual-labs{query}")).await
    }

    pub async fn get_virtual_lab(&self, vlab: impl Display, query: &str) -> Reply {
        self.get(&format!("/virtual-labs/{vlab}{query}")).await
    }

    pub async fn patch_virtual_lab(&self, vlab: impl Display, body: &Value) -> Reply {
        self.patch(&format!("/virtual-labs/{vlab}"), body).await
    }

    pub async fn delete_virtual_lab(&self, vlab: impl Display) -> Reply {
        self.delete(&format!("/virtual-labs/{vlab}")).await
    }

    // ---- /virtual-labs/{id}/projects

    pub async fn post_project(&self, vlab: impl Display, query: &str, body: &Value) -> Reply {
        self.post(&format!("/virtual-labs/{vlab}/projects{query}"), body)
            .await
    }

    pub async fn get_projects(&self, vlab: impl Display, query: &str) -> Reply {
        self.get(&format!("/virtual-labs/{vlab}/projects{query}"))
            .await
    }

    pub async fn get_project(
        &self,
        vlab: impl Display,
        project: impl Display,
        query: &str,
    ) -> Reply {
        self.get(&format!("/virtual-labs/{vlab}/projects/{project}{query}"))
            .await
    }

    // ---- invites

    pub async fn post_invite(&self, vlab: impl Display, email: &str, role: &str) -> Reply {
        self.post(
            &format!("/virtual-labs/{vlab}/invites"),
            &serde_json::json!({"email": email, "role": role}),
        )
        .await
    }

    pub async fn cancel_invite(&self, vlab: impl Display, email: &str, role: &str) -> Reply {
        self.post(
            &format!("/virtual-labs/{vlab}/invites/cancel"),
            &serde_json::json!({"email": email, "role": role}),
        )
        .await
    }

    pub async fn get_invite(&self, invite_token: &str) -> Reply {
        self.get(&format!("/invites?token={invite_token}")).await
    }

    pub async fn accept_invite(&self, invite_token: &str) -> Reply {
        self.post_empty(&format!("/invites?token={invite_token}"))
            .await
    }

    // ---- /institutions

    pub async fn post_institution(&self, body: &Value) -> Reply {
        self.post("/institutions", body).await
    }

    pub async fn get_institution(&self, id: impl Display) -> Reply {
        self.get(&format!("/institutions/{id}")).await
    }

    pub async fn patch_institution(&self, id: impl Display, body: &Value) -> Reply {
        self.patch(&format!("/institutions/{id}"), body).await
    }

    /// `query` is the whole query string with its `?`, or empty.
    pub async fn search_institutions(&self, query: &str) -> Reply {
        self.get(&format!("/institutions/_search{query}")).await
    }

    // ---- /courses

    pub async fn post_course(&self, body: &Value) -> Reply {
        self.post("/courses", body).await
    }

    /// `query` is the query string without its `?`.
    pub async fn search_courses(&self, query: &str) -> Reply {
        self.get(&format!("/courses?{query}")).await
    }

    pub async fn get_course(&self, course: impl Display) -> Reply {
        self.get(&format!("/courses/{course}")).await
    }

    pub async fn patch_course(&self, course: impl Display, body: &Value) -> Reply {
        self.patch(&format!("/courses/{course}"), body).await
    }

    pub async fn delete_course(&self, course: impl Display) -> Reply {
        self.delete(&format!("/courses/{course}")).await
    }

    /// `POST /courses/{id}/activate` with no body.
    pub async fn activate_course(&self, course: impl Display) -> Reply {
        self.post_empty(&format!("/courses/{course}/activate"))
            .await
    }

    /// `POST /courses/{id}/void` with an empty JSON object.
    pub async fn void_course(&self, course: impl Display) -> Reply {
        self.post(&format!("/courses/{course}/void"), &serde_json::json!({}))
            .await
    }

    pub async fn claim(&self, enrolment_id: impl serde::Serialize) -> Reply {
        self.post(
            "/courses/claim",
            &serde_json::json!({ "enrolment_id": enrolment_id }),
        )
        .await
    }

    /// `POST /courses/activate-enrolments` with no body.
    pub async fn activate_enrolments(&self) -> Reply {
        self.post_empty("/courses/activate-enrolments").await
    }

    /// `POST /courses/{course}/enrolment/activate` with no body.
    pub async fn activate_enrolment(&self, course: impl Display) -> Reply {
        self.post_empty(&format!("/courses/{course}/enrolment/activate"))
            .await
    }

    pub async fn get_enrolments(&self, course: impl Display) -> Reply {
        self.get(&format!("/courses/{course}/enrolments")).await
    }

    // ---- /seats

    pub async fn provision(&self, body: &Value) -> Reply {
        self.post("/seats/provision", body).await
    }

    pub async fn transfer(&self, body: &Value) -> Reply {
        self.post("/seats/transfer", body).await
    }

    pub async fn post_assign(&self, course: impl Display, body: &Value) -> Reply {
        self.post(&format!("/seats/courses/{course}/assign"), body)
            .await
    }

    /// `query` is the whole query string with its `?` (`?dry_run=true`), or empty.
    pub async fn post_roster_import(
        &self,
        course: impl Display,
        query: &str,
        body: &Value,
    ) -> Reply {
        self.post(
            &format!("/seats/courses/{course}/roster-import{query}"),
            body,
        )
        .await
    }

    pub async fn post_drop(&self, course: impl Display, seat_ids: &[Uuid]) -> Reply {
        self.post(
            &format!("/seats/courses/{course}/drop"),
            &serde_json::json!({ "seat_ids": seat_ids }),
        )
        .await
    }

    pub async fn get_course_seats(&self, course: impl Display) -> Reply {
        self.get(&format!("/seats/courses/{course}")).await
    }

    /// `query` is the whole query string with its `?`, or empty.
    pub async fn search_batches(&self, query: &str) -> Reply {
        self.get(&format!("/seats/batches{query}")).await
    }

    pub async fn get_batch(&self, batch: impl Display) -> Reply {
        self.get(&format!("/seats/batches/{batch}")).await
    }

    /// `POST …/enrolments/{enrolment}/resend-claim-email` with no body.
    pub async fn resend_claim_email(&self, course: impl Display, enrolment: impl Display) -> Reply {
        json(self.resend_claim_email_response(course, enrolment).await).await
    }

    /// The same, as the raw response (for its headers).
    pub async fn resend_claim_email_response(
        &self,
        course: impl Display,
        enrolment: impl Display,
    ) -> reqwest::Response {
        self.app
            .request(
                Method::POST,
                &format!("/seats/courses/{course}/enrolments/{enrolment}/resend-claim-email"),
                self.token.as_deref(),
                None,
            )
            .await
    }

    /// `POST /seats/courses/{course}/enrolments/{enrolment}/top-up`.
    pub async fn top_up(
        &self,
        course: impl Display,
        enrolment: impl Display,
        body: &Value,
    ) -> Reply {
        self.post(
            &format!("/seats/courses/{course}/enrolments/{enrolment}/top-up"),
            body,
        )
        .await
    }

    /// `POST /seats/courses/{course}/resend-claim-emails`, without a body when `body` is `None`.
    pub async fn resend_claim_emails(&self, course: impl Display, body: Option<&Value>) -> Reply {
        self.send(
            Method::POST,
            &format!("/seats/courses/{course}/resend-claim-emails"),
            body,
        )
        .await
    }
}

/// Assertions on a [`Reply`] that hand back its body.
pub trait ReplyExt {
    /// Asserts a 200 and returns the body.
    fn ok_body(self) -> Value;
    /// Asserts the error body of api.md §2.1 with this status and code (see
    /// [`assert_error_body`]) and returns it.
    fn error_body(self, expected: StatusCode, code: &str) -> Value;
    /// [`ReplyExt::error_body`] that also asserts the message.
    fn error_with(self, expected: StatusCode, code: &str, message: &str) -> Value;
    /// The answer for a missing or deleted lab: a 404 with `DATABASE_ERROR` (the upstream's
    /// code, kept on purpose).
    fn lab_not_found(self) -> Value;
    /// A 422 `INVALID_REQUEST`: the request's shape or values were refused.
    fn invalid(self) -> Value;
    /// A 401 `AUTHORIZATION_ERROR`: no usable credentials.
    fn unauthenticated(self) -> Value;
    /// A 403 `AUTHORIZATION_ERROR`: the caller's tier is too low.
    fn denied(self) -> Value;
    /// A 403 `NOT_ALLOWED_OP`: the caller holds no role on the resource.
    fn not_allowed(self) -> Value;
}

impl ReplyExt for Reply {
    fn ok_body(self) -> Value {
        let (status, body) = self;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    fn error_body(self, expected: StatusCode, code: &str) -> Value {
        let (status, body) = self;
        assert_error_body(&body, status, expected, code);
        body
    }

    fn error_with(self, expected: StatusCode, code: &str, message: &str) -> Value {
        let body = self.error_body(expected, code);
        assert_eq!(body["message"], message, "{body}");
        body
    }

    fn lab_not_found(self) -> Value {
        self.error_with(
            StatusCode::NOT_FOUND,
            "DATABASE_ERROR",
            "No virtual lab with this id found",
        )
    }

    fn invalid(self) -> Value {
        self.error_body(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST")
    }

    fn unauthenticated(self) -> Value {
        self.error_body(StatusCode::UNAUTHORIZED, "AUTHORIZATION_ERROR")
    }

    fn denied(self) -> Value {
        self.error_body(StatusCode::FORBIDDEN, "AUTHORIZATION_ERROR")
    }

    fn not_allowed(self) -> Value {
        self.error_body(StatusCode::FORBIDDEN, "NOT_ALLOWED_OP")
    }
}

/// Installs a tracing subscriber that prints the server's logs through the test writer when
/// `TEST_LOG` is set (`RUST_LOG` filters them, `info` by default), once per process. Without
/// `TEST_LOG` the tests stay quiet.
fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_none() {
            return;
        }
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Two racing requests: asserts one got 200 and the other `lost` (in either order); returns
/// `(winner, loser)`.
pub fn one_wins<'r>(a: &'r Reply, b: &'r Reply, lost: StatusCode) -> (&'r Reply, &'r Reply) {
    let mut statuses = [a.0, b.0];
    statuses.sort();
    let mut expected = [StatusCode::OK, lost];
    expected.sort();
    assert_eq!(statuses, expected, "{a:?} {b:?}");
    if a.0 == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    }
}

/// Makes every insert into `table` fail with a database error that is not a constraint
/// violation (the trigger is created once per test database).
pub async fn refuse_inserts(db: &PgPool, table: &str) {
    let sql = format!(
        "CREATE FUNCTION fail_{table}_insert() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'insert refused'; END $$;
         CREATE TRIGGER fail_{table}_insert BEFORE INSERT ON {table}
             FOR EACH ROW EXECUTE FUNCTION fail_{table}_insert();"
    );
    sqlx::raw_sql(&sql)
        .execute(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs only the migrations that come before the one whose description contains `name`
/// (`"waitlist"`, `"course event"`, `"claim tracking"`): an upgrade test fills such a database
/// with older rows, then runs `MIGRATOR` for the rest.
pub async fn migrate_before(db: &PgPool, name: &str) {
    use vlab_courses::repo::db::MIGRATOR;
    let version = MIGRATOR
        .migrations
        .iter()
        .find(|m| m.description.contains(name))
        .unwrap_or_else(|| panic!("no migration named {name}"))
        .version;
    let earlier = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    earlier
        .run(db)
        .await
        .unwrap_or_else(|err| panic!("the migrations before {name}: {err}"));
}

/// Runs one statement with one bind parameter (test set-up that the API cannot do).
pub async fn exec<'q, T>(db: &PgPool, sql: &'q str, param: T)
where
    T: 'q + Send + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query(sql)
        .bind(param)
        .execute(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Reads the one row a query with one bind parameter returns.
pub async fn fetch_row<'q, R, T>(db: &PgPool, sql: &'q str, param: T) -> R
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    T: 'q + Send + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query_as(sql)
        .bind(param)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Reads the one value a query with one bind parameter returns.
pub async fn fetch_scalar<'q, O, T>(db: &PgPool, sql: &'q str, param: T) -> O
where
    (O,): for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    O: Send + Unpin,
    T: 'q + Send + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query_scalar(sql)
        .bind(param)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A JSON string holding a UUID, parsed; anything else fails the test.
pub fn uuid_of(value: &Value) -> Uuid {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a uuid string: {value}"))
        .parse()
        .unwrap_or_else(|_| panic!("not a uuid: {value}"))
}

/// The `key` string of each item of a listing's `data` array, in order.
pub fn data_strings(page: &Value, key: &str) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {page}"))
        .iter()
        .map(|item| {
            item[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} string: {item}"))
                .to_owned()
        })
        .collect()
}

/// The names in a listing's `data`, in order.
pub fn names(page: &Value) -> Vec<String> {
    data_strings(page, "name")
}

/// The keys of a JSON object, in the order the body lists them.
pub fn keys_of(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// Asserts a JSON object has exactly these keys, in this order.
pub fn assert_keys(value: &Value, expected: &[&str]) {
    assert_eq!(keys_of(value), expected, "{value}");
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
    assert!(body.is_object(), "error body is an object: {body}");
    assert_keys(body, &["error_code", "message", "details", "data"]);
    assert_eq!(body["error_code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}
