//! The configuration contract of spec/README.md §5: every variable, its default and its validation.
//!
//! Values come from the process environment; a `.env` file in the working directory is read
//! first and never overrides a real environment variable. A missing or invalid value is a
//! [`ConfigError`] that names the variable, and the binaries print it on one line and exit 1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use url::Url;
use uuid::Uuid;

/// One configuration problem, naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration error: {0} is required")]
    Missing(&'static str),
    #[error("configuration error: {var} {reason}")]
    Invalid { var: &'static str, reason: String },
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// SMTP transport security, from `MAIL_SSL_TLS` / `MAIL_STARTTLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailSecurity {
    Plain,
    StartTls,
    ImplicitTls,
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub server: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub use_credentials: bool,
    pub security: MailSecurity,
    pub validate_certs: bool,
    pub from: String,
    pub ses_configuration_set: String,
}

/// Everything the Keycloak and accounting clients need.
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    /// `KC_SERVER_URI` without its trailing `/`.
    pub kc_server_uri: String,
    pub kc_realm: String,
    pub kc_client_id: String,
    pub kc_client_secret: String,
    /// `ACCOUNTING_BASE_URL` without its trailing `/`.
    pub accounting_base_url: String,
    /// Per-attempt timeout of every outbound call.
    pub http_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub external: ExternalConfig,
    pub bind_addr: SocketAddr,
    pub base_path: String,
    pub run_migrations: bool,
    pub log_format: LogFormat,
    pub rust_log: String,
    pub mail: MailConfig,
    /// `INVITE_LINK_BASE` without its trailing `/`.
    pub invite_link_base: String,
    pub landing_namespace: String,
    /// Only the server needs it; `expire-courses` loads the configuration without it.
    pub invite_jwt_secret: String,
    pub invite_expires_in_days: u32,
    /// `CLAIM_RESEND_INTERVAL_MINUTES`: shortest gap between an enrolment's newest claim e-mail
    /// and a resend.
    pub claim_resend_interval_minutes: u32,
    /// `CLAIM_EMAILS_MAX_PER_DAY`: most claim e-mails one enrolment may have had queued in any
    /// rolling 24 h.
    pub claim_emails_max_per_day: u32,
    /// `CLAIM_TOKEN_FOR_NEW_ENROLMENTS`: the claim secret of a new enrolment.
    pub claim_token_for_new_enrolments: ClaimTokenMode,
    /// `FACULTY_TOP_UP_MAX_CREDITS`: most extra credits course admins who are not service
    /// admins may add to one enrolment in total; 0 means only service admins top up.
    pub faculty_top_up_max_credits: u32,
    pub credits_per_seat: i32,
    pub seat_expiry_days: u32,
    pub drop_recovery_margin_credits: i32,
    pub drop_window_max_days: u32,
    /// `COURSE_EVENT_RETENTION_DAYS`: audit events older than this are purged by the job.
    pub course_event_retention_days: u32,
    /// `EXPIRY_RUN_RETENTION_DAYS`: run records older than this are deleted by the job.
    pub expiry_run_retention_days: u32,
    /// Lead times of the pre-expiry notices, in days; 0 turns that notice off.
    pub notices: NoticeConfig,
    pub multiple_vlabs_allowed_user_id: Option<Uuid>,
    pub service_admin_group: String,
    pub cors_origins: Vec<String>,
    pub kc_expected_issuer: Option<String>,
    pub auth_groups_cache: Duration,
    pub external_concurrency: usize,
    /// The saga lease (5 min); `VLAB_SAGA_LEASE_SECONDS` shortens it in builds with the
    /// test-only `fault-injection` feature.
    pub saga_lease: Duration,
    /// `VLAB_FAULT=<use case>:<point>`, read only in builds with the `fault-injection` feature:
    /// the process aborts at that point.
    pub fault_point: Option<String>,
}

/// The saga lease of every build.
pub const SAGA_LEASE: Duration = Duration::from_secs(5 * 60);

/// The pre-expiry notices (addendum §9): lead times in days, `0` = off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoticeConfig {
    /// `FACULTY_DROP_DEADLINE_NOTICE_DAYS`.
    pub faculty_drop_deadline_days: u32,
    /// `FACULTY_END_NOTICE_DAYS`.
    pub faculty_end_days: u32,
    /// `STUDENT_END_NOTICE_DAYS`.
    pub student_end_days: u32,
    /// `COURSE_LINK_TEMPLATE`: placeholders `{virtual_lab_id}` and `{course_id}`; empty = no
    /// link.
    pub course_link_template: String,
}

impl NoticeConfig {
    /// The course-admin link of a course, or `None` when no template is configured.
    pub fn course_link(&self, virtual_lab_id: Uuid, course_id: Uuid) -> Option<String> {
        if self.course_link_template.is_empty() {
            return None;
        }
        Some(
            self.course_link_template
                .replace("{virtual_lab_id}", &virtual_lab_id.to_string())
                .replace("{course_id}", &course_id.to_string()),
        )
    }
}

/// The placeholders `COURSE_LINK_TEMPLATE` may hold.
const COURSE_LINK_PLACEHOLDERS: [&str; 2] = ["{virtual_lab_id}", "{course_id}"];

/// Refuses a `{…}` placeholder other than the known ones (and unbalanced braces).
fn check_course_link_template(template: &str) -> Result<(), ConfigError> {
    let mut rest = template.to_owned();
    for known in COURSE_LINK_PLACEHOLDERS {
        rest = rest.replace(known, "");
    }
    if rest.contains('{') || rest.contains('}') {
        return Err(invalid(
            "COURSE_LINK_TEMPLATE",
            "may only use the placeholders {virtual_lab_id} and {course_id}",
        ));
    }
    Ok(())
}

/// What a new enrolment's claim secret is (`CLAIM_TOKEN_FOR_NEW_ENROLMENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimTokenMode {
    /// The enrolment id, as in round 1 (the default).
    EnrolmentId,
    /// A random token of its own, so the id in the assign response cannot claim it.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Which binary is loading: `expire-courses` does not need the invite secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Server,
    ExpiryJob,
}

impl Config {
    /// Reads `.env` (if present), then the environment.
    pub fn from_env(binary: Binary) -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is worth a warning but not fatal.
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            eprintln!("warning: could not read .env: {err}");
        }
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_map(&vars, binary)
    }

    /// Parses a configuration from an explicit map (tests, `vlab-dev`).
    pub fn from_map(vars: &HashMap<String, String>, binary: Binary) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let mail_starttls = env.bool("MAIL_STARTTLS", false)?;
        let mail_ssl_tls = env.bool("MAIL_SSL_TLS", false)?;
        let security = match (mail_ssl_tls, mail_starttls) {
            (true, true) => {
                return Err(invalid(
                    "MAIL_SSL_TLS",
                    "and MAIL_STARTTLS cannot both be true",
                ));
            }
            (true, false) => MailSecurity::ImplicitTls,
            (false, true) => MailSecurity::StartTls,
            (false, false) => MailSecurity::Plain,
        };

        let database_url = env.required("DATABASE_URL")?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(invalid(
                "DATABASE_URL",
                "must be a postgres:// or postgresql:// URL",
            ));
        }

        let invite_jwt_secret = match binary {
            Binary::Server => env.required("INVITE_JWT_SECRET")?,
            Binary::ExpiryJob => env.optional("INVITE_JWT_SECRET").unwrap_or_default(),
        };

        let base_path = env.optional("BASE_PATH").unwrap_or_default();
        if !base_path.is_empty() && (!base_path.starts_with('/') || base_path.ends_with('/')) {
            return Err(invalid(
                "BASE_PATH",
                "must be empty, or start with '/' and not end with '/'",
            ));
        }

        let log_format = match env.optional("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(_) => return Err(invalid("LOG_FORMAT", "must be 'json' or 'pretty'")),
        };

        let claim_token_for_new_enrolments =
            match env.optional("CLAIM_TOKEN_FOR_NEW_ENROLMENTS").as_deref() {
                None | Some("enrolment_id") => ClaimTokenMode::EnrolmentId,
                Some("random") => ClaimTokenMode::Random,
                Some(_) => {
                    return Err(invalid(
                        "CLAIM_TOKEN_FOR_NEW_ENROLMENTS",
                        "must be 'enrolment_id' or 'random'",
                    ));
                }
            };

        let course_link_template = env.optional("COURSE_LINK_TEMPLATE").unwrap_or_default();
        check_course_link_template(&course_link_template)?;
        let notices = NoticeConfig {
            faculty_drop_deadline_days: env.int("FACULTY_DROP_DEADLINE_NOTICE_DAYS", 0, 0, 60)?
                as u32,
            faculty_end_days: env.int("FACULTY_END_NOTICE_DAYS", 0, 0, 60)? as u32,
            student_end_days: env.int("STUDENT_END_NOTICE_DAYS", 0, 0, 60)? as u32,
            course_link_template,
        };

        let multiple_vlabs_allowed_user_id = match env.optional("MULTIPLE_VLABS_ALLOWED_USER_ID") {
            None => None,
            Some(v) => Some(
                Uuid::parse_str(&v)
                    .map_err(|_| invalid("MULTIPLE_VLABS_ALLOWED_USER_ID", "must be a UUID"))?,
            ),
        };

        let cors_origins = env
            .optional("CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>();
        for origin in &cors_origins {
            if axum::http::HeaderValue::from_str(origin).is_err() {
                return Err(invalid(
                    "CORS_ORIGINS",
                    format!("contains an invalid origin: {origin}"),
                ));
            }
        }

        Ok(Self {
            database_url,
            external: ExternalConfig {
                kc_server_uri: env.url("KC_SERVER_URI")?,
                kc_realm: env.string("KC_REALM_NAME", "obp-realm")?,
                kc_client_id: env.string("KC_CLIENT_ID", "obpapp")?,
                kc_client_secret: env.required("KC_CLIENT_SECRET")?,
                accounting_base_url: env.url("ACCOUNTING_BASE_URL")?,
                http_timeout: Duration::from_secs(env.int("HTTP_TIMEOUT_SECONDS", 10, 1, 3600)?),
            },
            bind_addr: env
                .string("BIND_ADDR", "0.0.0.0:8000")?
                .parse()
                .map_err(|_| {
                    invalid("BIND_ADDR", "must be a socket address such as 0.0.0.0:8000")
                })?,
            base_path,
            run_migrations: env.bool("RUN_MIGRATIONS", true)?,
            log_format,
            rust_log: env.string("RUST_LOG", "info")?,
            mail: MailConfig {
                server: env.string("MAIL_SERVER", "localhost")?,
                port: env.int("MAIL_PORT", 1025, 1, 65535)? as u16,
                username: env.optional("MAIL_USERNAME").unwrap_or_default(),
                password: env.optional("MAIL_PASSWORD").unwrap_or_default(),
                use_credentials: env.bool("USE_CREDENTIALS", false)?,
                security,
                validate_certs: env.bool("VALIDATE_CERTS", true)?,
                from: env.string("MAIL_FROM", "obp@bbp.org")?,
                ses_configuration_set: env
                    .string("AWS_SES_CONFIGURATION_SET", "main-ses-config")?,
            },
            invite_link_base: env
                .string("INVITE_LINK_BASE", "http://localhost:3000")?
                .trim_end_matches('/')
                .to_owned(),
            landing_namespace: env.string("LANDING_NAMESPACE", "https://openbraininstitute.org")?,
            invite_jwt_secret,
            invite_expires_in_days: env.int("INVITE_EXPIRES_IN_DAYS", 7, 1, 3650)? as u32,
            claim_resend_interval_minutes: env.int("CLAIM_RESEND_INTERVAL_MINUTES", 10, 1, 1440)?
                as u32,
            claim_emails_max_per_day: env.int("CLAIM_EMAILS_MAX_PER_DAY", 5, 1, 100)? as u32,
            claim_token_for_new_enrolments,
            faculty_top_up_max_credits: env.int("FACULTY_TOP_UP_MAX_CREDITS", 0, 0, 100_000)?
                as u32,
            credits_per_seat: env.int("CREDITS_PER_SEAT", 200, 1, 1_000_000_000)? as i32,
            seat_expiry_days: env.int("SEAT_EXPIRY_DAYS", 365, 1, 36_500)? as u32,
            drop_recovery_margin_credits: env.int(
                "DROP_RECOVERY_MARGIN_CREDITS",
                50,
                0,
                1_000_000_000,
            )? as i32,
            drop_window_max_days: env.int("DROP_WINDOW_MAX_DAYS", 14, 1, 36_500)? as u32,
            course_event_retention_days: env.int("COURSE_EVENT_RETENTION_DAYS", 1095, 30, 3650)?
                as u32,
            expiry_run_retention_days: env.int("EXPIRY_RUN_RETENTION_DAYS", 365, 1, 3650)? as u32,
            notices,
            multiple_vlabs_allowed_user_id,
            service_admin_group: env
                .string("VLAB_SERVICE_ADMIN_GROUP", "/service/virtual-lab-svc/admin")?,
            cors_origins,
            kc_expected_issuer: env.optional("KC_EXPECTED_ISSUER"),
            auth_groups_cache: Duration::from_secs(env.int(
                "AUTH_GROUPS_CACHE_SECONDS",
                10,
                0,
                86_400,
            )?),
            external_concurrency: env.int("EXTERNAL_CONCURRENCY", 16, 1, 256)? as usize,
            saga_lease: saga_lease(&env)?,
            fault_point: fault_point(&env),
        })
    }

    /// The database host and name, for logs (never the full URL, which may hold a password).
    pub fn database_label(&self) -> String {
        database_label(&self.database_url)
    }
}

#[cfg(feature = "fault-injection")]
fn saga_lease(env: &Env<'_>) -> Result<Duration, ConfigError> {
    let max = SAGA_LEASE.as_secs();
    Ok(Duration::from_secs(env.int(
        "VLAB_SAGA_LEASE_SECONDS",
        max,
        1,
        max,
    )?))
}

#[cfg(not(feature = "fault-injection"))]
fn saga_lease(_env: &Env<'_>) -> Result<Duration, ConfigError> {
    Ok(SAGA_LEASE)
}

#[cfg(feature = "fault-injection")]
fn fault_point(env: &Env<'_>) -> Option<String> {
    env.optional("VLAB_FAULT")
}

#[cfg(not(feature = "fault-injection"))]
fn fault_point(_env: &Env<'_>) -> Option<String> {
    None
}

/// `host/dbname` of a database URL, safe to log.
pub fn database_label(database_url: &str) -> String {
    match Url::parse(database_url) {
        Ok(url) => format!(
            "{}{}",
            url.host_str().unwrap_or("?"),
            url.path().trim_end_matches('/')
        ),
        Err(_) => "<unparseable DATABASE_URL>".to_owned(),
    }
}

/// Typed reads of the raw variables. Empty values count as unset.
struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    fn optional(&self, var: &str) -> Option<String> {
        self.0
            .get(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var).ok_or(ConfigError::Missing(var))
    }

    fn string(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        Ok(self.optional(var).unwrap_or_else(|| default.to_owned()))
    }

    fn url(&self, var: &'static str) -> Result<String, ConfigError> {
        let raw = self.required(var)?;
        let parsed = Url::parse(&raw).map_err(|_| invalid(var, "must be an absolute URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(var, "must be an http:// or https:// URL"));
        }
        Ok(raw.trim_end_matches('/').to_owned())
    }

    fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(var) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(invalid(var, "must be true or false")),
            },
        }
    }

    fn int(&self, var: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let value = match self.optional(var) {
            None => return Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| invalid(var, "must be a whole number"))?,
        };
        if value < min || value > max {
            return Err(invalid(var, format!("must be between {min} and {max}")));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x"),
            ("KC_SERVER_URI", "http://127.0.0.1:9090/"),
            ("KC_CLIENT_SECRET", "s"),
            ("ACCOUNTING_BASE_URL", "http://127.0.0.1:9100"),
            ("INVITE_JWT_SECRET", "i"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn defaults_apply_when_only_required_values_are_set() {
        let c = Config::from_map(&base(), Binary::Server).unwrap();
        assert_eq!(c.external.kc_server_uri, "http://127.0.0.1:9090");
        assert_eq!(c.external.kc_realm, "obp-realm");
        assert_eq!(c.credits_per_seat, 200);
        assert_eq!(c.external_concurrency, 16);
        assert_eq!(c.mail.security, MailSecurity::Plain);
        assert_eq!(c.bind_addr.to_string(), "0.0.0.0:8000");
        assert!(c.multiple_vlabs_allowed_user_id.is_none());
        assert!(c.cors_origins.is_empty());
        assert_eq!(c.claim_resend_interval_minutes, 10);
        assert_eq!(c.claim_emails_max_per_day, 5);
        assert_eq!(c.expiry_run_retention_days, 365);
        assert_eq!(c.notices, NoticeConfig::default());
        assert_eq!(
            c.claim_token_for_new_enrolments,
            ClaimTokenMode::EnrolmentId
        );
        assert_eq!(c.faculty_top_up_max_credits, 0);
    }

    #[test]
    fn the_course_link_fills_its_placeholders() {
        let mut vars = base();
        vars.insert(
            "COURSE_LINK_TEMPLATE".to_owned(),
            "https://obi.org/app/virtual-lab/{virtual_lab_id}?course={course_id}".to_owned(),
        );
        vars.insert("STUDENT_END_NOTICE_DAYS".to_owned(), "7".to_owned());
        let c = Config::from_map(&vars, Binary::ExpiryJob).unwrap();
        assert_eq!(c.notices.student_end_days, 7);
        let (lab, course) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(
            c.notices.course_link(lab, course).unwrap(),
            format!("https://obi.org/app/virtual-lab/{lab}?course={course}")
        );
        assert_eq!(NoticeConfig::default().course_link(lab, course), None);
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let mut vars = base();
        vars.remove("KC_CLIENT_SECRET");
        let err = Config::from_map(&vars, Binary::Server).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: KC_CLIENT_SECRET is required"
        );
    }

    #[test]
    fn the_job_does_not_need_the_invite_secret() {
        let mut vars = base();
        vars.remove("INVITE_JWT_SECRET");
        assert!(Config::from_map(&vars, Binary::ExpiryJob).is_ok());
        assert_eq!(
            Config::from_map(&vars, Binary::Server).unwrap_err(),
            ConfigError::Missing("INVITE_JWT_SECRET")
        );
    }

    #[test]
    fn invalid_values_are_rejected_with_the_variable_name() {
        for (var, value) in [
            ("BASE_PATH", "api/"),
            ("BASE_PATH", "/api/"),
            ("EXTERNAL_CONCURRENCY", "0"),
            ("EXTERNAL_CONCURRENCY", "257"),
            ("CREDITS_PER_SEAT", "0"),
            ("HTTP_TIMEOUT_SECONDS", "abc"),
            ("MULTIPLE_VLABS_ALLOWED_USER_ID", "not-a-uuid"),
            ("LOG_FORMAT", "xml"),
            ("RUN_MIGRATIONS", "maybe"),
            ("KC_SERVER_URI", "not a url"),
            ("CLAIM_RESEND_INTERVAL_MINUTES", "0"),
            ("CLAIM_RESEND_INTERVAL_MINUTES", "1441"),
            ("CLAIM_EMAILS_MAX_PER_DAY", "0"),
            ("CLAIM_EMAILS_MAX_PER_DAY", "101"),
            ("CLAIM_TOKEN_FOR_NEW_ENROLMENTS", "uuid"),
            ("EXPIRY_RUN_RETENTION_DAYS", "0"),
            ("EXPIRY_RUN_RETENTION_DAYS", "3651"),
            ("FACULTY_TOP_UP_MAX_CREDITS", "-1"),
            ("FACULTY_TOP_UP_MAX_CREDITS", "100001"),
            ("FACULTY_TOP_UP_MAX_CREDITS", "1.5"),
            ("FACULTY_DROP_DEADLINE_NOTICE_DAYS", "61"),
            ("FACULTY_END_NOTICE_DAYS", "-1"),
            ("STUDENT_END_NOTICE_DAYS", "61"),
            ("COURSE_LINK_TEMPLATE", "https://x/{lab_id}"),
            ("COURSE_LINK_TEMPLATE", "https://x/{course_id"),
        ] {
            let mut vars = base();
            vars.insert(var.to_owned(), value.to_owned());
            let err = Config::from_map(&vars, Binary::Server).unwrap_err();
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
    }

    #[test]
    fn both_tls_modes_at_once_is_a_configuration_error() {
        let mut vars = base();
        vars.insert("MAIL_SSL_TLS".into(), "true".into());
        vars.insert("MAIL_STARTTLS".into(), "true".into());
        assert!(Config::from_map(&vars, Binary::Server).is_err());
    }

    #[test]
    fn the_test_only_fault_variables_need_the_feature() {
        let mut vars = base();
        vars.insert("VLAB_SAGA_LEASE_SECONDS".into(), "2".into());
        vars.insert("VLAB_FAULT".into(), "assign:after_groups".into());
        let config = Config::from_map(&vars, Binary::Server).unwrap();
        if cfg!(feature = "fault-injection") {
            assert_eq!(config.saga_lease, Duration::from_secs(2));
            assert_eq!(config.fault_point.as_deref(), Some("assign:after_groups"));
            vars.insert("VLAB_SAGA_LEASE_SECONDS".into(), "301".into());
            assert!(Config::from_map(&vars, Binary::Server).is_err());
        } else {
            assert_eq!(config.saga_lease, SAGA_LEASE);
            assert_eq!(config.fault_point, None);
        }
    }

    #[test]
    fn drop_margin_may_be_zero() {
        let mut vars = base();
        vars.insert("DROP_RECOVERY_MARGIN_CREDITS".into(), "0".into());
        assert_eq!(
            Config::from_map(&vars, Binary::Server)
                .unwrap()
                .drop_recovery_margin_credits,
            0
        );
    }

    #[test]
    fn database_label_hides_credentials() {
        assert_eq!(
            database_label("postgres://u:secret@db.example:5432/vlab"),
            "db.example/vlab"
        );
    }
}
