//! The mailbox page: the captured messages as server-rendered HTML for a browser, in the
//! spirit of Mailpit and MailHog — a list (newest first) that reloads itself when mail
//! arrives, and one page per message with its HTML alternative in a sandboxed frame, its
//! plain-text part with clickable links, and the raw message. No scripts or styles from
//! anywhere else: the machine may have no network.

use std::fmt::Write as _;

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use mail_parser::{Message, MessageParser, MimeHeaders as _};

use super::{CapturedMessage, link_spans};

/// How often the list page asks whether new mail has arrived.
const POLL_MS: u32 = 2000;

/// The policy of the pages themselves: only their own inline style and script, and fetches
/// and frames from this server.
pub(super) const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     script-src 'unsafe-inline'; connect-src 'self'; frame-src 'self'; img-src 'self' data:; \
     form-action 'self'; base-uri 'none'";

/// The policy of an e-mail's HTML part: a sandbox (no scripts, an opaque origin, links may
/// open a new tab), inline styles and embedded images only.
pub(super) const PART_CSP: &str = "sandbox allow-popups allow-popups-to-escape-sandbox; \
     default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// True when the client asks for HTML before JSON: a browser's navigation does, `fetch`,
/// curl and reqwest (`*/*` or nothing) do not.
pub(super) fn wants_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let quality = |wanted: &str| -> Option<f32> {
        accept.split(',').find_map(|entry| {
            let mut fields = entry.split(';').map(str::trim);
            let media = fields.next()?;
            if !media.eq_ignore_ascii_case(wanted) {
                return None;
            }
            let q = fields
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            Some(q)
        })
    };
    match (quality("text/html"), quality("application/json")) {
        (Some(html), Some(json)) => html > 0.0 && html >= json,
        (Some(html), None) => html > 0.0,
        _ => false,
    }
}

/// `&`, `<`, `>`, `"` and `'` escaped, for text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The text escaped, with every `http(s)` link made an anchor that opens in a new tab.
fn linkify(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for (start, end) in link_spans(text) {
        out.push_str(&escape(&text[at..start]));
        let link = escape(&text[start..end]);
        let _ = write!(
            out,
            "<a href=\"{link}\" target=\"_blank\" rel=\"noopener noreferrer\">{link}</a>"
        );
        at = end;
    }
    out.push_str(&escape(&text[at..]));
    out
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#1a1a2e;background:#f6f7f9}
header{display:flex;align-items:center;gap:1rem;padding:.75rem 1.25rem;background:#002766;color:#fff}
header h1{font-size:1.1rem;margin:0;flex:1}
header a{color:#fff}
main{padding:1rem 1.25rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.5rem .75rem;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;color:#5a6270}
tbody tr:hover{background:#eef3fb}
td a{color:#0b4fb3;text-decoration:none}
td a:hover{text-decoration:underline}
.empty{padding:2rem;text-align:center;color:#5a6270;background:#fff}
button{font:inherit;padding:.35rem .9rem;border:1px solid #c9ced6;border-radius:4px;background:#fff;cursor:pointer}
header button{background:#fff;color:#002766}
nav.tabs{display:flex;gap:.25rem;margin:1rem 0 0}
nav.tabs a{padding:.4rem .9rem;border:1px solid #c9ced6;border-bottom:none;border-radius:4px 4px 0 0;background:#e9ecf0;color:#1a1a2e;text-decoration:none}
nav.tabs a.on{background:#fff;font-weight:600}
.pane{background:#fff;border:1px solid #c9ced6;padding:0}
.pane pre{margin:0;padding:1rem;white-space:pre-wrap;word-break:break-word;font-size:.9rem}
iframe{display:block;width:100%;height:75vh;border:0;background:#fff}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0;background:#fff;padding:1rem;border:1px solid #e3e6ea}
dt{color:#5a6270}
dd{margin:0;word-break:break-all}
ul.links{margin:.25rem 0 0;padding-left:1.2rem}
.muted{color:#5a6270;font-size:.85rem}
";

fn document(title: &str, head_extra: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n{head_extra}</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

fn time(m: &CapturedMessage) -> String {
    m.received_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The mailbox: every message, newest first, with recipient, subject and time.
pub(super) fn list_page(messages: &[CapturedMessage]) -> String {
    let latest = messages.last().map_or("", |m| m.id.as_str());
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1>Mailbox — {} message{}</h1>\
         <form method=\"post\" action=\"/messages/clear\" \
         onsubmit=\"return confirm('Delete every captured message?')\">\
         <button type=\"submit\" id=\"clear\">Clear</button></form></header>\n<main>\n",
        messages.len(),
        if messages.len() == 1 { "" } else { "s" }
    );
    if messages.is_empty() {
        body.push_str(
            "<p class=\"empty\">No mail yet. This page reloads itself when a message arrives.</p>\n",
        );
    } else {
        body.push_str(
            "<table id=\"messages\">\n<thead><tr><th>To</th><th>Subject</th><th>Received</th></tr></thead>\n<tbody>\n",
        );
        for m in messages.iter().rev() {
            let href = format!("/messages/{}", escape(&m.id));
            let subject = m.subject.as_deref().unwrap_or("(no subject)");
            let _ = writeln!(
                body,
                "<tr data-id=\"{id}\"><td><a href=\"{href}\">{to}</a></td>\
                 <td><a href=\"{href}\">{subject}</a></td><td>{time}</td></tr>",
                id = escape(&m.id),
                to = escape(&m.rcpt_to.join(", ")),
                subject = escape(subject),
                time = time(m),
            );
        }
        body.push_str("</tbody>\n</table>\n");
    }
    let _ = write!(
        body,
        "<p class=\"muted\">JSON: <a href=\"/messages\" type=\"application/json\">GET /messages</a> \
         with <code>Accept: application/json</code>. Reloads itself when mail arrives.</p>\n</main>\n\
         <script>\n(() => {{\n  const seen = {seen};\n  const count = {count};\n  \
         setInterval(async () => {{\n    try {{\n      \
         const r = await fetch('/messages', {{headers: {{Accept: 'application/json'}}, cache: 'no-store'}});\n      \
         const list = await r.json();\n      \
         const latest = list.length ? list[list.length - 1].id : '';\n      \
         if (latest !== seen || list.length !== count) location.reload();\n    \
         }} catch (e) {{ /* the capture is restarting; try again */ }}\n  }}, {POLL_MS});\n}})();\n</script>\n",
        seen = serde_json::Value::from(latest),
        count = messages.len(),
    );
    document(
        "Mailbox",
        "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>\n",
        &body,
    )
}

/// Which part of a message its page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    Html,
    Text,
    Raw,
}

impl View {
    pub(super) fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            Some("html") => Some(Self::Html),
            Some("text") => Some(Self::Text),
            Some("raw") => Some(Self::Raw),
            _ => None,
        }
    }
}

/// The real `text/html` alternative, if the message has one.
fn html_alternative<'a>(message: &'a Message<'a>) -> Option<&'a str> {
    let part = message.html_part(0)?;
    if part.is_text_html() {
        part.text_contents()
    } else {
        None
    }
}

/// The plain-text part, or the HTML part turned into text when there is none.
fn text_alternative(message: &Message<'_>) -> Option<String> {
    message.body_text(0).map(|t| t.into_owned())
}

/// One message: its headers, the links it carries, and the HTML / text / raw views.
pub(super) fn message_page(m: &CapturedMessage, view: Option<View>) -> String {
    let parsed = MessageParser::default().parse(&m.raw);
    let has_html = parsed.as_ref().and_then(html_alternative).is_some();
    let view = view.unwrap_or(if has_html { View::Html } else { View::Text });
    let subject = m.subject.as_deref().unwrap_or("(no subject)");
    let from = parsed
        .as_ref()
        .and_then(|p| p.from())
        .and_then(|a| a.first())
        .map(|a| match (a.name(), a.address()) {
            (Some(name), Some(address)) => format!("{name} <{address}>"),
            (_, Some(address)) => address.to_owned(),
            (Some(name), None) => name.to_owned(),
            (None, None) => String::new(),
        })
        .unwrap_or_else(|| m.mail_from.clone());
    let id = escape(&m.id);

    let mut body = String::new();
    let _ = write!(
        body,
        "<header><a href=\"/\">← Mailbox</a><h1 id=\"subject\">{}</h1></header>\n<main>\n<dl>\
         <dt>From</dt><dd>{}</dd><dt>To</dt><dd id=\"to\">{}</dd><dt>Received</dt><dd>{}</dd>",
        escape(subject),
        escape(&from),
        escape(&m.rcpt_to.join(", ")),
        time(m),
    );
    if !m.links.is_empty() {
        body.push_str("<dt>Links</dt><dd><ul class=\"links\" id=\"links\">");
        for link in &m.links {
            let link = escape(link);
            let _ = write!(
                body,
                "<li><a href=\"{link}\" target=\"_blank\" rel=\"noopener noreferrer\">{link}</a></li>"
            );
        }
        body.push_str("</ul></dd>");
    }
    body.push_str("</dl>\n<nav class=\"tabs\">");
    let tabs = [
        (View::Html, "html", "HTML", has_html),
        (View::Text, "text", "Plain text", true),
        (View::Raw, "raw", "Raw", true),
    ];
    for (tab, key, label, enabled) in tabs {
        if enabled {
            let class = if tab == view { " class=\"on\"" } else { "" };
            let _ = write!(
                body,
                "<a href=\"/messages/{id}?view={key}\"{class}>{label}</a>"
            );
        }
    }
    body.push_str("</nav>\n<div class=\"pane\">");
    match view {
        View::Html if has_html => {
            let _ = write!(
                body,
                "<iframe id=\"html-part\" title=\"HTML part\" src=\"/messages/{id}/html\" \
                 sandbox=\"allow-popups allow-popups-to-escape-sandbox\" referrerpolicy=\"no-referrer\"></iframe>"
            );
        }
        View::Html | View::Text => {
            let text = parsed
                .as_ref()
                .and_then(text_alternative)
                .unwrap_or_default();
            let _ = write!(body, "<pre id=\"text-part\">{}</pre>", linkify(&text));
        }
        View::Raw => {
            let _ = write!(
                body,
                "<pre id=\"raw\">{}</pre>",
                escape(&String::from_utf8_lossy(&m.raw))
            );
        }
    }
    let _ = write!(
        body,
        "</div>\n<p class=\"muted\">Raw message as text: <a href=\"/messages/{id}/raw\">/messages/{id}/raw</a>; \
         HTML part alone: <a href=\"/messages/{id}/html\">/messages/{id}/html</a></p>\n</main>\n"
    );
    document(subject, "", &body)
}

/// The HTML alternative as a document of its own, for the sandboxed frame: links open a new
/// tab, and `cid:` images are embedded as `data:` URIs (the frame may load nothing else).
pub(super) fn html_part(m: &CapturedMessage) -> Option<String> {
    let parsed = MessageParser::default().parse(&m.raw)?;
    let html = html_alternative(&parsed)?;
    let mut html = html.to_owned();
    for part in parsed.parts.iter() {
        let Some(cid) = part.content_id() else {
            continue;
        };
        let cid = cid.trim_matches(['<', '>']);
        let reference = format!("cid:{cid}");
        if cid.is_empty() || !html.contains(&reference) {
            continue;
        }
        let media = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{sub}", ct.ctype()),
                None => ct.ctype().to_owned(),
            })
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let data = base64::engine::general_purpose::STANDARD.encode(part.contents());
        html = html.replace(&reference, &format!("data:{media};base64,{data}"));
    }
    let base = "<base target=\"_blank\">";
    match html.find("<head>") {
        Some(i) => html.insert_str(i + "<head>".len(), base),
        None => html.insert_str(0, base),
    }
    Some(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        h
    }

    #[test]
    fn a_browser_gets_html_and_fetch_curl_and_json_clients_do_not() {
        let chromium =
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(wants_html(&headers(chromium)));
        assert!(wants_html(&headers("text/html")));
        assert!(!wants_html(&headers("*/*")));
        assert!(!wants_html(&headers("application/json")));
        assert!(!wants_html(&headers("application/json, text/html;q=0.5")));
        assert!(!wants_html(&headers("text/html;q=0")));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn text_is_escaped_and_its_links_become_anchors() {
        assert_eq!(
            linkify("<b> go to https://x.org/a?b=1&c=2.\n"),
            "&lt;b&gt; go to <a href=\"https://x.org/a?b=1&amp;c=2\" target=\"_blank\" \
             rel=\"noopener noreferrer\">https://x.org/a?b=1&amp;c=2</a>.\n"
        );
    }
}
