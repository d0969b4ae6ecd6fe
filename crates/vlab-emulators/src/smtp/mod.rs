//! Mail capture: an SMTP sink that keeps every message, and an HTTP view of them.
//!
//! It plays the SMTP relay of integrations.md §4 on a plain connection (no TLS, any
//! `AUTH PLAIN`/`LOGIN` accepted) and plays Mailpit's role on the optional HTTP port:
//!
//! * for programs, `GET /messages` (a JSON array, oldest first) and `GET /messages/{id}.eml`
//!   (`message/rfc822`), `DELETE /messages`;
//! * for people, the mailbox page (`page.rs`) at `/`, and at the same `/messages` paths when
//!   the request asks for `text/html` first, as a browser's navigation does: the list, newest
//!   first, reloading itself when mail arrives; one page per message (`/messages/{id}`) with
//!   the HTML part in a sandboxed frame (`/messages/{id}/html`), the plain-text part with
//!   clickable links, and the raw message (`/messages/{id}/raw`, shown inline, never a
//!   download); a clear button (`POST /messages/clear`).
//!
//! With a `mail_dir`, each message is also written to `<received_at>-<n>.eml`, and the
//! messages already there are listed again after a restart.
//!
//! The one operation is `smtp_send` (one per mail transaction, counted at `MAIL FROM`).

mod page;
mod session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDateTime, Utc};
use mail_parser::MessageParser;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::faults::{self, CallRecord, Control, Fault};
use crate::server::{self, Server};

/// How to start an [`SmtpCapture`].
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    /// The SMTP listener; port 0 picks a free port.
    pub smtp_bind: SocketAddr,
    /// The HTTP listener for `GET /messages` and the mailbox page; none when `None`.
    pub http_bind: Option<SocketAddr>,
    /// Where to write each message as an `.eml` file.
    pub mail_dir: Option<PathBuf>,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        Self {
            smtp_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_bind: None,
            mail_dir: None,
        }
    }
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedMessage {
    /// `<received_at>-<n>`, also the `.eml` file's stem.
    pub id: String,
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`).
    pub rcpt_to: Vec<String>,
    /// The message as received, dot-unstuffed.
    pub raw: Vec<u8>,
    pub subject: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The `http(s)` links of the text/plain part, in order.
    pub links: Vec<String>,
}

impl CapturedMessage {
    /// The text/plain part, decoded.
    pub fn text(&self) -> Option<String> {
        MessageParser::default()
            .parse(&self.raw)
            .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
    }
}

const FILE_TIME: &str = "%Y%m%dT%H%M%S%.3fZ";

/// The `http://` and `https://` links of a text, in order, without trailing punctuation.
pub(crate) fn find_links(text: &str) -> Vec<String> {
    link_spans(text)
        .into_iter()
        .map(|(start, end)| text[start..end].to_owned())
        .collect()
}

/// Where the links of [`find_links`] are: byte ranges into `text`, in order.
pub(crate) fn link_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut offset = 0;
    loop {
        let rest = &text[offset..];
        let start = match (rest.find("http://"), rest.find("https://")) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\''))
            .unwrap_or(tail.len());
        let link = tail[..end].trim_end_matches(['.', ',', ';', ':', ')', ']', '!', '?']);
        if !link.ends_with("://") {
            spans.push((offset + start, offset + start + link.len()));
        }
        offset += start + end.max(1);
    }
    spans
}

/// Subject and links of a raw message.
fn parse(raw: &[u8]) -> (Option<String>, Vec<String>) {
    match MessageParser::default().parse(raw) {
        Some(message) => {
            let subject = message.subject().map(str::to_owned);
            let links = message
                .body_text(0)
                .map(|t| find_links(&t))
                .unwrap_or_default();
            (subject, links)
        }
        None => (None, find_links(&String::from_utf8_lossy(raw))),
    }
}

/// The captured messages, shared by the SMTP sessions and the handle.
pub(crate) struct Store {
    messages: Mutex<Vec<CapturedMessage>>,
    next: Mutex<u64>,
    count: watch::Sender<usize>,
    mail_dir: Option<PathBuf>,
}

impl Store {
    fn messages(&self) -> MutexGuard<'_, Vec<CapturedMessage>> {
        // Plain data: a panic elsewhere cannot leave it in a state that matters here.
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_number(&self) -> u64 {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *next += 1;
        *next
    }

    pub(crate) fn add(
        &self,
        mail_from: String,
        rcpt_to: Vec<String>,
        raw: Vec<u8>,
    ) -> CapturedMessage {
        let received_at = Utc::now();
        let id = format!("{}-{}", received_at.format(FILE_TIME), self.next_number());
        let (subject, links) = parse(&raw);
        let message = CapturedMessage {
            id,
            mail_from,
            rcpt_to,
            raw,
            subject,
            received_at,
            links,
        };
        let to = message.rcpt_to.join(", ");
        let subject = message.subject.as_deref().unwrap_or("");
        let link = message.links.first().map_or("", String::as_str);
        match &self.mail_dir {
            Some(dir) => {
                let file = dir.join(format!("{}.eml", message.id));
                if let Err(e) = std::fs::write(&file, &message.raw) {
                    tracing::warn!(file = %file.display(), error = %e, "could not write the captured mail");
                }
                tracing::info!(%to, subject, link, file = %file.display(), "mail captured");
            }
            None => tracing::debug!(%to, subject, link, "mail captured"),
        }
        let count = {
            let mut messages = self.messages();
            messages.push(message.clone());
            messages.len()
        };
        self.count.send_replace(count);
        message
    }

    /// Forgets every message; with `remove_files`, also deletes their `.eml` files. Returns
    /// how many there were.
    fn clear(&self, remove_files: bool) -> usize {
        let removed = std::mem::take(&mut *self.messages());
        self.count.send_replace(0);
        if let (true, Some(dir)) = (remove_files, &self.mail_dir) {
            for message in &removed {
                let file = dir.join(format!("{}.eml", message.id));
                if let Err(e) = std::fs::remove_file(&file)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(file = %file.display(), error = %e, "could not delete the captured mail");
                }
            }
        }
        removed.len()
    }

    fn find(&self, id: &str) -> Option<CapturedMessage> {
        self.messages().iter().find(|m| m.id == id).cloned()
    }

    /// Lists the `.eml` files already in `dir`, oldest first.
    fn load(dir: &Path) -> anyhow::Result<(Vec<CapturedMessage>, u64)> {
        let mut found = Vec::new();
        let mut highest = 0u64;
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".eml"))
            else {
                continue;
            };
            let raw =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let (time, number) = stem.rsplit_once('-').unwrap_or((stem, "0"));
            let number: u64 = number.parse().unwrap_or(0);
            highest = highest.max(number);
            let received_at = NaiveDateTime::parse_from_str(time, FILE_TIME)
                .map(|t| t.and_utc())
                .or_else(|_| {
                    std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(DateTime::<Utc>::from)
                })
                .unwrap_or_else(|_| Utc::now());
            let parsed = MessageParser::default().parse(&raw);
            let address = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
                a.map(|a| {
                    a.iter()
                        .filter_map(|a| a.address())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
            };
            let mail_from = address(parsed.as_ref().and_then(|m| m.from()))
                .into_iter()
                .next()
                .unwrap_or_default();
            let rcpt_to = address(parsed.as_ref().and_then(|m| m.to()));
            let (subject, links) = parse(&raw);
            found.push((
                number,
                CapturedMessage {
                    id: stem.to_owned(),
                    mail_from,
                    rcpt_to,
                    raw,
                    subject,
                    received_at,
                    links,
                },
            ));
        }
        found.sort_by(|a, b| a.1.received_at.cmp(&b.1.received_at).then(a.0.cmp(&b.0)));
        Ok((found.into_iter().map(|(_, m)| m).collect(), highest))
    }
}

#[derive(Clone)]
struct Http {
    store: Arc<Store>,
}

/// The JSON list (oldest first), or the mailbox page for a browser.
async fn list_messages(State(http): State<Http>, headers: HeaderMap) -> Response {
    if page::wants_html(&headers) {
        return mailbox_page(State(http)).await;
    }
    let list: Vec<Value> = http
        .store
        .messages()
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "to": m.rcpt_to,
                "subject": m.subject,
                "received_at": m.received_at,
                "links": m.links,
            })
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

/// A server-rendered page: never cached, confined by its content security policy.
fn html_response(csp: &'static str, html: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

/// Text shown in the browser tab, never offered as a download.
fn inline_text(text: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "inline"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "no such message"})),
    )
        .into_response()
}

async fn mailbox_page(State(http): State<Http>) -> Response {
    let messages = http.store.messages().clone();
    html_response(page::PAGE_CSP, page::list_page(&messages))
}

#[derive(serde::Deserialize)]
struct ViewQuery {
    view: Option<String>,
}

/// `/messages/{id}` and `/messages/{id}.eml`: the message as `message/rfc822` for programs;
/// for a browser, the message page (or, for the `.eml` name, the raw text inline).
async fn one_message(
    State(http): State<Http>,
    UrlPath(file): UrlPath<String>,
    Query(query): Query<ViewQuery>,
    headers: HeaderMap,
) -> Response {
    let (id, eml) = match file.strip_suffix(".eml") {
        Some(id) => (id, true),
        None => (file.as_str(), false),
    };
    let Some(message) = http.store.find(id) else {
        return not_found();
    };
    match (page::wants_html(&headers), eml) {
        (false, _) => ([(header::CONTENT_TYPE, "message/rfc822")], message.raw).into_response(),
        (true, true) => inline_text(message.raw),
        (true, false) => html_response(
            page::PAGE_CSP,
            page::message_page(&message, page::View::parse(query.view.as_deref())),
        ),
    }
}

/// `/messages/{id}/raw`: the message as received, as text in the browser.
async fn raw_text(State(http): State<Http>, UrlPath(id): UrlPath<String>) -> Response {
    match http.store.find(&id) {
        Some(message) => inline_text(message.raw),
        None => not_found(),
    }
}

/// `/messages/{id}/html`: the HTML alternative alone, sandboxed by its own policy too.
async fn html_part(State(http): State<Http>, UrlPath(id): UrlPath<String>) -> Response {
    match http.store.find(&id).as_ref().and_then(page::html_part) {
        Some(html) => html_response(page::PART_CSP, html),
        None => not_found(),
    }
}

/// `DELETE /messages`: forget every message and delete its file.
async fn delete_messages(State(http): State<Http>) -> axum::Json<Value> {
    let deleted = http.store.clear(true);
    axum::Json(json!({ "deleted": deleted }))
}

/// `POST /messages/clear`: the page's clear button; back to the (empty) mailbox.
async fn clear_from_page(State(http): State<Http>) -> Response {
    http.store.clear(true);
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
}

struct Inner {
    smtp: Server,
    http: Option<Server>,
    store: Arc<Store>,
    control: Arc<Control>,
}

/// A running mail capture. Clones share it; it stops on [`shutdown`](Self::shutdown) or when
/// the last clone is dropped.
#[derive(Clone)]
pub struct SmtpCapture {
    inner: Arc<Inner>,
}

impl SmtpCapture {
    /// Binds the SMTP (and HTTP) listeners and starts serving.
    pub async fn start(opts: SmtpOptions) -> anyhow::Result<Self> {
        let (messages, highest) = match &opts.mail_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Store::load(dir)?
            }
            None => (Vec::new(), 0),
        };
        let store = Arc::new(Store {
            count: watch::Sender::new(messages.len()),
            messages: Mutex::new(messages),
            next: Mutex::new(highest),
            mail_dir: opts.mail_dir,
        });
        let control = Arc::new(Control::default());
        let smtp = {
            let (store, control) = (store.clone(), control.clone());
            Server::start(server::listen(opts.smtp_bind).await?, move |stream| {
                session::run(stream, store.clone(), control.clone())
            })?
        };
        let http = match opts.http_bind {
            Some(addr) => {
                let router = Router::new()
                    .route("/", get(mailbox_page))
                    .route("/messages", get(list_messages).delete(delete_messages))
                    .route("/messages/clear", post(clear_from_page))
                    .route("/messages/{file}", get(one_message))
                    .route("/messages/{id}/raw", get(raw_text))
                    .route("/messages/{id}/html", get(html_part))
                    .with_state(Http {
                        store: store.clone(),
                    })
                    // `"mode": "error"` answers 451 to the end of DATA.
                    .merge(faults::dev_routes(control.clone(), 451));
                Some(Server::start_http(server::listen(addr).await?, router)?)
            }
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                smtp,
                http,
                store,
                control,
            }),
        })
    }

    pub fn smtp_port(&self) -> u16 {
        self.inner.smtp.addr().port()
    }

    /// `http://127.0.0.1:<port>` when an HTTP listener was asked for.
    pub fn http_base_url(&self) -> Option<String> {
        self.inner
            .http
            .as_ref()
            .map(|h| format!("http://{}", h.addr()))
    }

    /// Every message so far, oldest first.
    pub fn messages(&self) -> Vec<CapturedMessage> {
        self.inner.store.messages().clone()
    }

    /// Forgets the messages kept in memory (files in `mail_dir` stay).
    pub fn clear_messages(&self) {
        self.inner.store.clear(false);
    }

    /// Waits until at least `n` messages are stored, or `timeout` has passed; returns them all.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<CapturedMessage> {
        let mut count = self.inner.store.count.subscribe();
        let reached = async move {
            // The `Ref` is dropped inside, so this future stays `Send`.
            let _ = count.wait_for(|c| *c >= n).await;
        };
        let _ = tokio::time::timeout(timeout, reached).await;
        self.messages()
    }

    /// Operation `smtp_send`: `Status(code)` answers `code` to the end of DATA (not stored),
    /// `DropBefore` / `TimeoutBefore` close the connection at MAIL FROM, `DropAfter` /
    /// `TimeoutAfter` store the message and close without answering.
    pub fn inject(&self, fault: Fault) {
        self.inner.control.inject(fault);
    }

    pub fn clear_faults(&self) {
        self.inner.control.clear_faults();
    }

    /// Delay the answer to the end of each DATA by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.inner.control.set_latency(d);
    }

    /// One record per mail transaction (method `MAIL`, path = the envelope sender).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.inner.control.calls()
    }

    pub fn call_count(&self, operation: &str) -> usize {
        self.inner.control.call_count(operation)
    }

    /// Stops both listeners and closes every session.
    pub async fn shutdown(&self) {
        self.inner.smtp.shutdown().await;
        if let Some(http) = &self.inner.http {
            http.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_in_order_without_trailing_punctuation() {
        let text = "Claim: https://x.org/course-enrolment?enrolment_id=1.\n\
                    see (http://a.b/c), and <https://d.e/f>; also http:// alone";
        assert_eq!(
            find_links(text),
            [
                "https://x.org/course-enrolment?enrolment_id=1",
                "http://a.b/c",
                "https://d.e/f"
            ]
        );
    }
}
