//! SMTP mailer (integrations.md §4).
//!
//! [`render`] builds the message (a pure function, tested by parsing its output back) and
//! [`SmtpMailer`] sends it with lettre over an async, pooled SMTP transport. Templates are
//! embedded at compile time and rendered with minijinja in strict mode: an undefined variable is
//! an error, HTML is autoescaped and plain text is not.
//!
//! The logo (`src/assets/logo.png`) is a placeholder until the product team supplies the real
//! OBI logo; see `src/assets/README.md`.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use super::Mailer;
use crate::config::{MailConfig, MailSecurity};

/// An e-mail the service sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Email {
    /// The claim e-mail of an assigned student (integrations.md §4.3).
    EnrolmentClaim {
        to: String,
        course_name: String,
        claim_link: String,
        discover_link: String,
    },
    /// The lab invite e-mail (integrations.md §4.4).
    Invitation {
        to: String,
        inviter_name: String,
        invite_link: String,
        discover_link: String,
        invited_to: String,
    },
    /// A pre-expiry notice (addendum §9.2); its variables were fixed when it was queued.
    Notice { to: String, notice: Notice },
}

/// The three pre-expiry notices and their template variables; dates are already printed
/// (`14 September 2026, 00:00 UTC`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// To the course admins, before `last_drop_date`.
    DropDeadlineNotice {
        course_name: String,
        last_drop_date: String,
        enrolled: i64,
        unclaimed: i64,
        /// Null when the balances could not be read.
        recoverable_now: Option<i64>,
        margin_credits: i64,
        course_link: Option<String>,
        discover_link: String,
    },
    /// To the course admins, before `end_date`.
    CourseEndNotice {
        course_name: String,
        end_date: String,
        enrolled: i64,
        course_link: Option<String>,
        discover_link: String,
    },
    /// To a claimed student, before the course `end_date`.
    AccessEndNotice {
        course_name: String,
        access_end_date: String,
        /// A 2-decimal string; null when the balance could not be read.
        remaining_credits: Option<String>,
        platform_link: String,
        discover_link: String,
    },
}

impl Notice {
    /// The `email_outbox.kind` (and template base name) of the notice.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::DropDeadlineNotice { .. } => "drop_deadline_notice",
            Notice::CourseEndNotice { .. } => "course_end_notice",
            Notice::AccessEndNotice { .. } => "access_end_notice",
        }
    }

    fn subject(&self) -> String {
        let brand = "\u{2014} Open Brain Platform";
        match self {
            Notice::DropDeadlineNotice {
                course_name,
                last_drop_date,
                ..
            } => format!("Drop deadline on {last_drop_date}: {course_name} {brand}"),
            Notice::CourseEndNotice {
                course_name,
                end_date,
                ..
            } => format!("Course ends on {end_date}: {course_name} {brand}"),
            Notice::AccessEndNotice {
                course_name,
                access_end_date,
                ..
            } => format!("Your course access ends on {access_end_date}: {course_name} {brand}"),
        }
    }
}

/// A send that did not go through. The text is a clean sentence, safe to store in `last_error`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MailError {
    /// A 5xx reply: retrying the same message is unlikely to help.
    #[error("the mail server rejected the message permanently: {0}")]
    Permanent(String),
    /// A 4xx reply, a network error, a timeout or an authentication failure.
    #[error("the message could not be sent: {0}")]
    Transient(String),
    /// The message could not be built (template or address problem).
    #[error("the message could not be built: {0}")]
    Build(String),
}

/// The subject of the claim e-mail (an ASCII apostrophe and an em dash, U+2014).
pub const CLAIM_SUBJECT: &str = "You've been enrolled in a course \u{2014} Open Brain Platform";
/// The subject of the invite e-mail.
pub const INVITATION_SUBJECT: &str = "Invitation to OBI virtual lab";
/// The `origin` variable of the invite e-mail.
const INVITATION_ORIGIN: &str = "virtual lab";

/// The inline logo, referred to as `cid:logo` by the HTML templates.
const LOGO_PNG: &[u8] = include_bytes!("assets/logo.png");
const LOGO_CONTENT_ID: &str = "logo";
const LOGO_FILENAME: &str = "logo.png";

const TEMPLATES: [(&str, &str); 13] = [
    // The shared parts: the HTML layout and its rows, and the plain-text footer.
    ("layout.html", include_str!("templates/layout.html")),
    ("rows.html", include_str!("templates/rows.html")),
    ("footer.txt", include_str!("templates/footer.txt")),
    (
        "course_enrolment_claim.txt",
        include_str!("templates/course_enrolment_claim.txt"),
    ),
    (
        "course_enrolment_claim.html",
        include_str!("templates/course_enrolment_claim.html"),
    ),
    ("invitation.txt", include_str!("templates/invitation.txt")),
    ("invitation.html", include_str!("templates/invitation.html")),
    (
        "drop_deadline_notice.txt",
        include_str!("templates/drop_deadline_notice.txt"),
    ),
    (
        "drop_deadline_notice.html",
        include_str!("templates/drop_deadline_notice.html"),
    ),
    (
        "course_end_notice.txt",
        include_str!("templates/course_end_notice.txt"),
    ),
    (
        "course_end_notice.html",
        include_str!("templates/course_end_notice.html"),
    ),
    (
        "access_end_notice.txt",
        include_str!("templates/access_end_notice.txt"),
    ),
    (
        "access_end_notice.html",
        include_str!("templates/access_end_notice.html"),
    ),
];

/// The template environment, built once. A template syntax error is kept and reported by every
/// render (a unit test makes sure it never happens).
static TEMPLATE_ENV: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(html_formatter);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|err| format!("template {name}: {err:#}"))?;
    }
    Ok(env)
});

/// Like minijinja's default formatter, except that HTML escaping leaves `/` alone, so links in
/// `href` attributes and text stay readable (`&`, `<`, `>`, `"` and `'` are still escaped).
fn html_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if state.auto_escape() != AutoEscape::Html || value.is_safe() {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = value.to_string();
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            other => escaped.push(other),
        }
    }
    out.write_str(&escaped).map_err(minijinja::Error::from)
}

/// Renders one embedded template with `context`. An undefined variable is an error.
pub fn render_template(name: &str, context: minijinja::Value) -> Result<String, MailError> {
    let env = TEMPLATE_ENV
        .as_ref()
        .map_err(|err| MailError::Build(err.clone()))?;
    env.get_template(name)
        .and_then(|template| template.render(context))
        .map_err(|err| MailError::Build(format!("template {name}: {err:#}")))
}

/// `X-SES-CONFIGURATION-SET`, carried by every message (integrations.md §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SesConfigurationSet(pub String);

impl Header for SesConfigurationSet {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-SES-CONFIGURATION-SET")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.trim().to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

impl Email {
    /// The recipient address.
    pub fn to(&self) -> &str {
        match self {
            Email::EnrolmentClaim { to, .. }
            | Email::Invitation { to, .. }
            | Email::Notice { to, .. } => to,
        }
    }

    /// The kind of e-mail, as the `kind` label of `vlab_emails_total` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Email::EnrolmentClaim { .. } => "enrolment_claim",
            Email::Invitation { .. } => "invite",
            Email::Notice { notice, .. } => notice.kind(),
        }
    }

    fn subject(&self) -> String {
        match self {
            Email::EnrolmentClaim { .. } => CLAIM_SUBJECT.to_owned(),
            Email::Invitation { .. } => INVITATION_SUBJECT.to_owned(),
            Email::Notice { notice, .. } => notice.subject(),
        }
    }

    /// The template base name and its variables.
    fn template(&self) -> (&'static str, minijinja::Value) {
        match self {
            Email::EnrolmentClaim {
                course_name,
                claim_link,
                discover_link,
                ..
            } => (
                "course_enrolment_claim",
                minijinja::context! { course_name, claim_link, discover_link },
            ),
            Email::Invitation {
                inviter_name,
                invite_link,
                discover_link,
                invited_to,
                ..
            } => (
                "invitation",
                minijinja::context! {
                    inviter_name,
                    invite_link,
                    discover_link,
                    invited_to,
                    origin => INVITATION_ORIGIN,
                },
            ),
            Email::Notice { notice, .. } => {
                (notice.kind(), minijinja::Value::from_serialize(notice))
            }
        }
    }
}

/// Builds the message of integrations.md §4.2: `multipart/related` holding a
/// `multipart/alternative` (text/plain first, text/html last) and the inline PNG logo.
/// `from` is the bare `MAIL_FROM` address; the `Message-ID` uses its domain.
pub fn render(
    email: &Email,
    from: &str,
    ses_configuration_set: &str,
) -> Result<Message, MailError> {
    let from_address: lettre::Address = from
        .trim()
        .parse()
        .map_err(|err| MailError::Build(format!("MAIL_FROM {from:?} is not an address: {err}")))?;
    let to_address: lettre::Address = email
        .to()
        .trim()
        .parse()
        .map_err(|err| MailError::Build(format!("the recipient is not an address: {err}")))?;

    let (template, context) = email.template();
    let text = render_template(&format!("{template}.txt"), context.clone())?;
    let html = render_template(&format!("{template}.html"), context)?;

    let png = ContentType::parse("image/png")
        .map_err(|err| MailError::Build(format!("content type: {err}")))?;
    let logo =
        Attachment::new_inline_with_name(LOGO_CONTENT_ID.to_owned(), LOGO_FILENAME.to_owned())
            .body(LOGO_PNG.to_vec(), png);
    let body = MultiPart::related()
        .multipart(MultiPart::alternative_plain_html(text, html))
        .singlepart(logo);

    let message_id = format!(
        "<{}@{}>",
        uuid::Uuid::new_v4().simple(),
        from_address.domain()
    );
    Message::builder()
        .from(Mailbox::new(None, from_address))
        .to(Mailbox::new(None, to_address))
        .subject(email.subject())
        .date_now()
        .message_id(Some(message_id))
        .header(SesConfigurationSet(ses_configuration_set.to_owned()))
        .multipart(body)
        .map_err(|err| MailError::Build(err.to_string()))
}

/// Sends e-mails through the configured SMTP relay (integrations.md §4.1).
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
    ses_configuration_set: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// Builds the transport: implicit TLS, required STARTTLS or plain, per `config.security`;
    /// `validate_certs = false` accepts invalid certificates and host names; credentials are
    /// used (AUTH PLAIN or LOGIN) only when `use_credentials` is set. `timeout` applies to every
    /// SMTP command. No connection is opened here, but the connection pool starts a background
    /// task, so this must be called from within a Tokio runtime.
    pub fn new(
        config: &MailConfig,
        timeout: Duration,
    ) -> Result<Self, lettre::transport::smtp::Error> {
        let tls_parameters = || {
            TlsParameters::builder(config.server.clone())
                .dangerous_accept_invalid_certs(!config.validate_certs)
                .dangerous_accept_invalid_hostnames(!config.validate_certs)
                .build_rustls()
        };
        let tls = match config.security {
            MailSecurity::ImplicitTls => Tls::Wrapper(tls_parameters()?),
            MailSecurity::StartTls => Tls::Required(tls_parameters()?),
            MailSecurity::Plain => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.server)
            .port(config.port)
            .tls(tls)
            .timeout(Some(timeout));
        if config.use_credentials {
            builder = builder
                .credentials(Credentials::new(
                    config.username.clone(),
                    config.password.clone(),
                ))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(Self {
            transport: builder.build(),
            from: config.from.clone(),
            ses_configuration_set: config.ses_configuration_set.clone(),
        })
    }
}

const SMTP_SEND: &str = "smtp_send";

fn record_smtp(outcome: &'static str, error_kind: Option<&'static str>, elapsed: Option<Duration>) {
    metrics::counter!(
        "vlab_external_calls_total",
        "service" => "smtp",
        "operation" => SMTP_SEND,
        "outcome" => outcome,
    )
    .increment(1);
    if let Some(kind) = error_kind {
        metrics::counter!(
            "vlab_external_call_errors_total",
            "service" => "smtp",
            "operation" => SMTP_SEND,
            "kind" => kind,
        )
        .increment(1);
    }
    if let Some(elapsed) = elapsed {
        metrics::histogram!(
            "vlab_external_call_duration_seconds",
            "service" => "smtp",
            "operation" => SMTP_SEND,
        )
        .record(elapsed.as_secs_f64());
    }
}

/// Classifies a failed send: a 5xx reply is permanent; a 4xx reply, a network or TLS error, a
/// timeout or an authentication failure is transient. Returns the error and the metric outcome
/// (`definite_failure` when the server answered with a reply code, `uncertain` otherwise).
fn classify_smtp(err: &lettre::transport::smtp::Error) -> (MailError, &'static str) {
    let text = err.to_string();
    if err.is_permanent() {
        (MailError::Permanent(text), "definite_failure")
    } else if err.is_transient() {
        (MailError::Transient(text), "definite_failure")
    } else {
        (MailError::Transient(text), "uncertain")
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = match render(email, &self.from, &self.ses_configuration_set) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(kind = email.kind(), error = %err, "an e-mail could not be built");
                record_smtp("definite_failure", None, None);
                return Err(err);
            }
        };
        let started = Instant::now();
        let result = self.transport.send(message).await;
        let elapsed = Some(started.elapsed());
        match result {
            Ok(_) => {
                record_smtp("success", None, elapsed);
                Ok(())
            }
            Err(err) => {
                let (error, outcome) = classify_smtp(&err);
                let kind = match error {
                    MailError::Permanent(_) => "smtp_permanent",
                    _ => "smtp_transient",
                };
                record_smtp(outcome, Some(kind), elapsed);
                tracing::warn!(
                    operation = SMTP_SEND,
                    kind = email.kind(),
                    error = %err,
                    "the SMTP send failed"
                );
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mail_parser::{MessageParser, MimeHeaders, PartType};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    const FROM: &str = "obp@bbp.org";

    fn claim(course_name: &str) -> Email {
        Email::EnrolmentClaim {
            to: "student@example.org".to_owned(),
            course_name: course_name.to_owned(),
            claim_link: "https://app.example/course-enrolment?enrolment_id=0b6f8e5c-1c2d-4e3f-9a8b-7c6d5e4f3a2b"
                .to_owned(),
            discover_link: "https://openbraininstitute.org".to_owned(),
        }
    }

    fn invitation() -> Email {
        Email::Invitation {
            to: "invitee@example.org".to_owned(),
            inviter_name: "Ada Lovelace".to_owned(),
            invite_link: "https://app.example/invite?token=abc.def.ghi".to_owned(),
            discover_link: "https://openbraininstitute.org".to_owned(),
            invited_to: "Neuro 101".to_owned(),
        }
    }

    fn formatted(email: &Email) -> Vec<u8> {
        render(email, FROM, "main-ses-config").unwrap().formatted()
    }

    fn unix_newlines(text: &str) -> String {
        text.replace("\r\n", "\n")
    }

    /// The content types of every part, in document order.
    fn part_types(message: &mail_parser::Message<'_>) -> Vec<String> {
        message
            .parts
            .iter()
            .map(|part| {
                let ct = part.content_type().unwrap();
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
            })
            .collect()
    }

    fn notices(course_name: &str, optional: bool) -> [Notice; 3] {
        let link = |l: &str| optional.then(|| l.to_owned());
        [
            Notice::DropDeadlineNotice {
                course_name: course_name.to_owned(),
                last_drop_date: "14 September 2026, 00:00 UTC".to_owned(),
                enrolled: 40,
                unclaimed: 3,
                recoverable_now: optional.then_some(12),
                margin_credits: 50,
                course_link: link("https://obi.example/app/virtual-lab/1"),
                discover_link: "https://openbraininstitute.org".to_owned(),
            },
            Notice::CourseEndNotice {
                course_name: course_name.to_owned(),
                end_date: "20 December 2026, 00:00 UTC".to_owned(),
                enrolled: 40,
                course_link: link("https://obi.example/app/virtual-lab/1"),
                discover_link: "https://openbraininstitute.org".to_owned(),
            },
            Notice::AccessEndNotice {
                course_name: course_name.to_owned(),
                access_end_date: "20 December 2026, 00:00 UTC".to_owned(),
                remaining_credits: link("169.50"),
                platform_link: "https://www.openbraininstitute.org/app".to_owned(),
                discover_link: "https://openbraininstitute.org".to_owned(),
            },
        ]
    }

    #[test]
    fn templates_render_text_and_html_and_escape_the_course_name() {
        let subjects = [
            "Drop deadline on 14 September 2026, 00:00 UTC: Intro <b>& more \u{2014} Open Brain Platform",
            "Course ends on 20 December 2026, 00:00 UTC: Intro <b>& more \u{2014} Open Brain Platform",
            "Your course access ends on 20 December 2026, 00:00 UTC: Intro <b>& more \u{2014} Open Brain Platform",
        ];
        let lines = [
            "12 could be dropped now with their seat returned.",
            "Manage the course: https://obi.example/app/virtual-lab/1",
            "You have 169.50 credits left.",
        ];
        for ((notice, subject), line) in notices("Intro <b>& more", true)
            .into_iter()
            .zip(subjects)
            .zip(lines)
        {
            let email = Email::Notice {
                to: "prof@uni.org".to_owned(),
                notice,
            };
            let raw = formatted(&email);
            let message = MessageParser::default().parse(&raw).unwrap();
            assert_eq!(message.subject(), Some(subject));
            assert_eq!(
                part_types(&message),
                [
                    "multipart/related",
                    "multipart/alternative",
                    "text/plain",
                    "text/html",
                    "image/png"
                ]
            );
            let text = unix_newlines(&message.body_text(0).unwrap());
            assert!(text.contains("Intro <b>& more"), "{text}");
            assert!(text.contains(line), "{text}");
            assert!(text.contains("What is Open Brain Institute?"), "{text}");
            let html = message.body_html(0).unwrap();
            assert!(html.contains("Intro &lt;b&gt;&amp; more"), "{html}");
            assert!(!html.contains("<b>&"), "{html}");
            assert!(html.contains("cid:logo"));
        }
    }

    #[test]
    fn notice_lines_for_missing_values_are_left_out() {
        for notice in notices("Neuro", false) {
            let email = Email::Notice {
                to: "prof@uni.org".to_owned(),
                notice,
            };
            let raw = formatted(&email);
            let message = MessageParser::default().parse(&raw).unwrap();
            let text = message.body_text(0).unwrap();
            assert!(!text.contains("could be dropped now"), "{text}");
            assert!(!text.contains("Manage the course"), "{text}");
            assert!(!text.contains("credits left"), "{text}");
            let html = message.body_html(0).unwrap();
            assert!(!html.contains("Manage the course"), "{html}");
        }
    }

    #[test]
    fn the_templates_parse() {
        assert!(TEMPLATE_ENV.is_ok(), "{:?}", TEMPLATE_ENV.as_ref().err());
    }

    #[test]
    fn the_claim_email_has_the_documented_layout_and_headers() {
        let raw = formatted(&claim("Neuro 101"));
        let message = MessageParser::default().parse(&raw).unwrap();

        assert_eq!(
            part_types(&message),
            [
                "multipart/related",
                "multipart/alternative",
                "text/plain",
                "text/html",
                "image/png"
            ]
        );
        let related = &message.parts[0];
        let PartType::Multipart(children) = &related.body else {
            panic!("the root is not multipart");
        };
        assert_eq!(children.len(), 2, "alternative + logo");
        for part in &message.parts[2..4] {
            let ct = part.content_type().unwrap();
            assert_eq!(
                ct.attribute("charset")
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("utf-8")
            );
        }

        let logo = &message.parts[4];
        assert_eq!(logo.content_id(), Some("logo"));
        let disposition = logo.content_disposition().unwrap();
        assert_eq!(disposition.ctype(), "inline");
        assert_eq!(disposition.attribute("filename"), Some("logo.png"));
        assert_eq!(logo.contents(), LOGO_PNG);
        assert!(LOGO_PNG.starts_with(b"\x89PNG\r\n\x1a\n"));

        assert_eq!(
            message.subject(),
            Some("You've been enrolled in a course \u{2014} Open Brain Platform")
        );
        let from = message.from().unwrap().first().unwrap();
        assert_eq!((from.name(), from.address()), (None, Some(FROM)));
        let to = message.to().unwrap().first().unwrap();
        assert_eq!(
            (to.name(), to.address()),
            (None, Some("student@example.org"))
        );
        assert!(message.date().is_some());
        assert!(
            message.message_id().unwrap().ends_with("@bbp.org"),
            "{:?}",
            message.message_id()
        );
        assert_eq!(
            message.header_raw("X-SES-CONFIGURATION-SET").map(str::trim),
            Some("main-ses-config")
        );
        assert_eq!(
            message.header_raw("MIME-Version").map(str::trim),
            Some("1.0")
        );

        let link = "https://app.example/course-enrolment?enrolment_id=0b6f8e5c-1c2d-4e3f-9a8b-7c6d5e4f3a2b";
        let html = message.body_html(0).unwrap();
        assert!(html.contains(&format!(r#"href="{link}""#)), "{html}");
        assert!(html.contains("cid:logo"));
        assert!(html.contains("<title>OBI Course Enrolment</title>"));
        assert!(html.contains("Claim your seat"));
        assert!(html.contains("Discover more"));
        assert!(html.contains(r#"href="https://openbraininstitute.org""#));
        assert!(html.contains("<strong style=\"font-weight:bold;\">Neuro 101</strong>"));
        assert!(!html.contains("expire"));
        assert!(
            !html.contains("http://") && !html.contains("src=\"https"),
            "no external resources"
        );

        let text = unix_newlines(&message.body_text(0).unwrap());
        assert!(text.contains(link));
        assert_eq!(
            text.trim_end(),
            format!(
                "Course Enrolment \u{2014} Open Brain Platform\n\n\
                 You've been enrolled in a course on the Open Brain Platform.\n\n\
                 Course: Neuro 101\n\n\
                 Click the link below to claim your seat and get started:\n\
                 {link}\n\n\
                 If you did not expect this email, you can safely ignore it.\n\n\
                 What is Open Brain Institute?\n\
                 The Open Brain Institute is the next-generation platform that connects explorative features\n\
                 with model-building tools, so that you can explore, build and simulate brain models.\n\
                 Discover more: https://openbraininstitute.org"
            )
        );
    }

    #[test]
    fn the_invitation_email_has_its_subject_and_text() {
        let raw = formatted(&invitation());
        let message = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(message.subject(), Some("Invitation to OBI virtual lab"));
        assert_eq!(
            part_types(&message)[2..],
            ["text/plain", "text/html", "image/png"]
        );
        let text = unix_newlines(&message.body_text(0).unwrap());
        assert_eq!(
            text.trim_end(),
            "Invitation to OBI virtual lab\n\n\
             Great news! Ada Lovelace invited you to join the virtual lab Neuro 101 on the Open Brain Platform.\n\n\
             Accept the invitation:\n\
             https://app.example/invite?token=abc.def.ghi\n\n\
             What is Open Brain Institute?\n\
             The Open Brain Institute is the next-generation platform that connects explorative features\n\
             with model-building tools, so that you can explore, build and simulate brain models.\n\
             Discover more: https://openbraininstitute.org"
        );
        let html = message.body_html(0).unwrap();
        assert!(html.contains(r#"href="https://app.example/invite?token=abc.def.ghi""#));
        assert!(html.contains(">Accept</a>"));
        assert!(html.contains("Invitation to OBI virtual lab"));
        assert!(html.contains("cid:logo"));
    }

    #[test]
    fn html_is_escaped_and_plain_text_is_not() {
        let raw = formatted(&claim("Intro <b>& more"));
        let message = MessageParser::default().parse(&raw).unwrap();
        let html = message.body_html(0).unwrap();
        assert!(html.contains("Intro &lt;b&gt;&amp; more"), "{html}");
        assert!(!html.contains("<b>&"));
        let text = message.body_text(0).unwrap();
        assert!(text.contains("Course: Intro <b>& more"), "{text}");
    }

    #[test]
    fn a_missing_template_variable_is_an_error() {
        let err = render_template(
            "course_enrolment_claim.txt",
            minijinja::context! { course_name => "x", claim_link => "y" },
        )
        .unwrap_err();
        assert!(matches!(err, MailError::Build(_)), "{err:?}");
        let err = render_template("invitation.html", minijinja::context! {}).unwrap_err();
        assert!(matches!(err, MailError::Build(_)), "{err:?}");
    }

    #[test]
    fn a_bad_address_is_a_build_error() {
        let mut email = claim("x");
        if let Email::EnrolmentClaim { to, .. } = &mut email {
            *to = "not an address".to_owned();
        }
        assert!(matches!(
            render(&email, FROM, "s"),
            Err(MailError::Build(_))
        ));
        assert!(matches!(
            render(&claim("x"), "nope", "s"),
            Err(MailError::Build(_))
        ));
    }

    /// A minimal SMTP server on loopback: answers `rcpt_reply` to RCPT TO and records each
    /// accepted DATA payload.
    async fn smtp_server(rcpt_reply: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                    let mut data: Option<String> = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(buffer) = data.as_mut() {
                            if line == "." {
                                store.lock().unwrap().push(std::mem::take(buffer));
                                data = None;
                                write.write_all(b"250 2.0.0 queued\r\n").await.unwrap();
                            } else {
                                buffer.push_str(&line);
                                buffer.push('\n');
                            }
                            continue;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") {
                            b"250-test\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("RCPT") {
                            rcpt_reply.as_bytes()
                        } else if upper.starts_with("DATA") {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, received)
    }

    fn mail_config(port: u16) -> MailConfig {
        MailConfig {
            server: "127.0.0.1".to_owned(),
            port,
            username: String::new(),
            password: String::new(),
            use_credentials: false,
            security: MailSecurity::Plain,
            validate_certs: true,
            from: FROM.to_owned(),
            ses_configuration_set: "main-ses-config".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_message_is_sent_over_plain_smtp() {
        let (port, received) = smtp_server("250 ok\r\n").await;
        let mailer = SmtpMailer::new(&mail_config(port), Duration::from_secs(2)).unwrap();
        mailer.send(&claim("Neuro 101")).await.unwrap();
        let received = received.lock().unwrap().clone();
        assert_eq!(received.len(), 1);
        let message = MessageParser::default()
            .parse(received[0].as_bytes())
            .unwrap();
        assert_eq!(
            message.header_raw("X-SES-CONFIGURATION-SET").map(str::trim),
            Some("main-ses-config")
        );
        assert!(message.body_text(0).unwrap().contains("Course: Neuro 101"));
    }

    #[tokio::test]
    async fn a_claim_email_goes_through_the_smtp_capture_emulator() {
        let capture = vlab_emulators::SmtpCapture::start(vlab_emulators::SmtpOptions::default())
            .await
            .unwrap();
        let mailer =
            SmtpMailer::new(&mail_config(capture.smtp_port()), Duration::from_secs(2)).unwrap();
        mailer.send(&claim("Neuro 101")).await.unwrap();
        let messages = capture.wait_for_messages(1, Duration::from_secs(5)).await;
        assert_eq!(messages.len(), 1);
        let captured = &messages[0];
        assert_eq!(captured.mail_from, FROM);
        assert_eq!(captured.rcpt_to, ["student@example.org"]);
        let message = MessageParser::default().parse(&captured.raw).unwrap();
        assert_eq!(message.subject(), Some(CLAIM_SUBJECT));
        assert_eq!(
            part_types(&message)[2..],
            ["text/plain", "text/html", "image/png"]
        );
        assert_eq!(
            message.header_raw("X-SES-CONFIGURATION-SET").map(str::trim),
            Some("main-ses-config")
        );
        assert!(message.body_text(0).unwrap().contains("Course: Neuro 101"));
        assert!(message.body_html(0).unwrap().contains("Claim your seat"));
        capture.shutdown().await;
    }

    #[tokio::test]
    async fn a_5xx_reply_is_permanent_and_a_4xx_reply_is_transient() {
        let (port, _) = smtp_server("550 5.1.1 no such user\r\n").await;
        let mailer = SmtpMailer::new(&mail_config(port), Duration::from_secs(2)).unwrap();
        let err = mailer.send(&invitation()).await.unwrap_err();
        assert!(matches!(err, MailError::Permanent(_)), "{err:?}");

        let (port, _) = smtp_server("451 4.3.0 try later\r\n").await;
        let mailer = SmtpMailer::new(&mail_config(port), Duration::from_secs(2)).unwrap();
        let err = mailer.send(&invitation()).await.unwrap_err();
        assert!(matches!(err, MailError::Transient(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_transient() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mailer = SmtpMailer::new(&mail_config(port), Duration::from_secs(2)).unwrap();
        let err = mailer.send(&invitation()).await.unwrap_err();
        assert!(matches!(err, MailError::Transient(_)), "{err:?}");
    }

    #[tokio::test]
    async fn tls_transports_can_be_built_and_hide_the_password() {
        for (security, validate_certs) in [
            (MailSecurity::ImplicitTls, true),
            (MailSecurity::StartTls, false),
        ] {
            let mut config = mail_config(465);
            config.security = security;
            config.validate_certs = validate_certs;
            config.use_credentials = true;
            config.username = "user".to_owned();
            config.password = "hunter2".to_owned();
            let mailer = SmtpMailer::new(&config, Duration::from_secs(2)).unwrap();
            assert!(!format!("{mailer:?}").contains("hunter2"));
        }
    }
}
