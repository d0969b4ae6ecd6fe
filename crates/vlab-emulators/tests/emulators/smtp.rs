use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use vlab_emulators::{Fault, FaultAction, SmtpCapture, SmtpOptions};

use crate::support::{client, temp_dir};

/// A line-by-line SMTP client.
pub struct Smtp {
    stream: BufReader<TcpStream>,
}

impl Smtp {
    pub async fn connect(capture: &SmtpCapture) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", capture.smtp_port()))
            .await
            .unwrap();
        let mut smtp = Self {
            stream: BufReader::new(stream),
        };
        assert_eq!(smtp.reply().await.0, 220);
        smtp
    }

    /// Reads one (possibly multi-line) reply: its code and its lines. Code 0 = closed.
    pub async fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return (0, lines);
            }
            let code = line[..3].parse().unwrap();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.trim_end().to_owned());
            if last {
                return (code, lines);
            }
        }
    }

    pub async fn send(&mut self, line: &str) -> u16 {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await.0
    }

    /// Writes the message body and the final dot; returns the reply code.
    pub async fn data(&mut self, body: &str) -> u16 {
        assert_eq!(self.send("DATA").await, 354);
        let stream = self.stream.get_mut();
        stream.write_all(body.as_bytes()).await.unwrap();
        stream.write_all(b".\r\n").await.unwrap();
        self.reply().await.0
    }

    /// EOF (or a reset) without any more bytes from the server.
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

const MESSAGE: &str = "From: noreply@example.org\r\n\
To: student@example.org\r\n\
Subject: You've been enrolled\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Click the link below:\r\n\
https://obp.example/course-enrolment?enrolment_id=42\r\n\
..a line that began with a dot\r\n\
Discover more: https://openbraininstitute.org\r\n";

async fn send_one(capture: &SmtpCapture) -> u16 {
    let mut smtp = Smtp::connect(capture).await;
    assert_eq!(smtp.send("EHLO client.test").await, 250);
    assert_eq!(smtp.send("MAIL FROM:<noreply@example.org>").await, 250);
    assert_eq!(smtp.send("RCPT TO:<student@example.org>").await, 250);
    smtp.data(MESSAGE).await
}

#[tokio::test]
async fn a_message_is_captured_unstuffed_parsed_saved_and_served_over_http() {
    let dir = temp_dir("mail");
    let capture = SmtpCapture::start(SmtpOptions {
        http_bind: Some(([127, 0, 0, 1], 0).into()),
        mail_dir: Some(dir.clone()),
        ..SmtpOptions::default()
    })
    .await
    .unwrap();
    let mut smtp = Smtp::connect(&capture).await;
    smtp.stream
        .get_mut()
        .write_all(b"EHLO client.test\r\n")
        .await
        .unwrap();
    let (code, lines) = smtp.reply().await;
    assert_eq!(code, 250);
    let extensions = lines.join("\n");
    for ext in ["AUTH PLAIN LOGIN", "8BITMIME", "SMTPUTF8", "SIZE"] {
        assert!(extensions.contains(ext), "{ext} in {extensions}");
    }
    assert_eq!(smtp.send("AUTH PLAIN AHVzZXIAcGFzcw==").await, 235);
    assert_eq!(
        smtp.send("MAIL FROM:<noreply@example.org> BODY=8BITMIME")
            .await,
        250
    );
    assert_eq!(smtp.send("RCPT TO:<student@example.org>").await, 250);
    assert_eq!(smtp.data(MESSAGE).await, 250);
    assert_eq!(smtp.send("QUIT").await, 221);

    let messages = capture.wait_for_messages(1, Duration::from_secs(2)).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.mail_from, "noreply@example.org");
    assert_eq!(m.rcpt_to, ["student@example.org"]);
    assert_eq!(m.subject.as_deref(), Some("You've been enrolled"));
    assert_eq!(
        m.links,
        [
            "https://obp.example/course-enrolment?enrolment_id=42",
            "https://openbraininstitute.org"
        ]
    );
    let raw = String::from_utf8(m.raw.clone()).unwrap();
    assert!(raw.contains("\r\n.a line that began with a dot\r\n"));
    assert!(!raw.contains(".."));
    let file = dir.join(format!("{}.eml", m.id));
    assert_eq!(std::fs::read(&file).unwrap(), m.raw);

    let base = capture.http_base_url().unwrap();
    let list: Value = client()
        .get(format!("{base}/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["id"], m.id.as_str());
    assert_eq!(list[0]["to"][0], "student@example.org");
    assert_eq!(list[0]["subject"], "You've been enrolled");
    assert_eq!(list[0]["links"][0], m.links[0].as_str());
    assert!(list[0]["received_at"].is_string());
    let eml = client()
        .get(format!("{base}/messages/{}.eml", m.id))
        .send()
        .await
        .unwrap();
    assert_eq!(eml.headers()["content-type"], "message/rfc822");
    assert_eq!(eml.bytes().await.unwrap().as_ref(), m.raw.as_slice());
    let fault = client()
        .post(format!("{base}/_dev/faults"))
        .json(&serde_json::json!({"operation": "smtp_send", "mode": "error", "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), reqwest::StatusCode::CREATED);
    assert_eq!(send_one(&capture).await, 451);
    assert_eq!(capture.messages().len(), 1);
    capture.shutdown().await;

    // A restart lists the stored files again.
    let again = SmtpCapture::start(SmtpOptions {
        mail_dir: Some(dir.clone()),
        ..SmtpOptions::default()
    })
    .await
    .unwrap();
    let reloaded = again.messages();
    assert_eq!(reloaded.len(), 1);
    assert_eq!(reloaded[0].id, m.id);
    assert_eq!(reloaded[0].links, m.links);
    assert_eq!(reloaded[0].rcpt_to, m.rcpt_to);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn commands_out_of_sequence_and_unknown_ones_are_refused() {
    let capture = SmtpCapture::start(SmtpOptions::default()).await.unwrap();
    let mut smtp = Smtp::connect(&capture).await;
    assert_eq!(smtp.send("MAIL FROM:<a@b.c>").await, 503);
    assert_eq!(smtp.send("HELO client.test").await, 250);
    assert_eq!(smtp.send("RCPT TO:<a@b.c>").await, 503);
    assert_eq!(smtp.send("MAIL FROM:<a@b.c>").await, 250);
    assert_eq!(smtp.send("DATA").await, 503);
    assert_eq!(smtp.send("RSET").await, 250);
    assert_eq!(smtp.send("NOOP").await, 250);
    assert_eq!(smtp.send("STARTTLS").await, 502);
    assert_eq!(smtp.send("FROB").await, 502);
    assert_eq!(smtp.send("AUTH LOGIN").await, 334);
    assert_eq!(smtp.send("dXNlcg==").await, 334);
    assert_eq!(smtp.send("cGFzcw==").await, 235);
    assert_eq!(smtp.send("QUIT").await, 221);
    assert!(capture.messages().is_empty());
}

#[tokio::test]
async fn smtp_faults_refuse_at_data_or_drop_at_mail_from() {
    let capture = SmtpCapture::start(SmtpOptions::default()).await.unwrap();
    capture.inject(Fault::new("smtp_send", FaultAction::Status(451)));
    assert_eq!(send_one(&capture).await, 451);
    assert!(capture.messages().is_empty());
    assert_eq!(send_one(&capture).await, 250);
    assert_eq!(capture.messages().len(), 1);

    capture.inject(Fault::new("smtp_send", FaultAction::Status(550)).skip(1));
    assert_eq!(send_one(&capture).await, 250);
    assert_eq!(send_one(&capture).await, 550);
    assert_eq!(capture.messages().len(), 2);

    capture.inject(Fault::new("smtp_send", FaultAction::DropBefore));
    let mut smtp = Smtp::connect(&capture).await;
    assert_eq!(smtp.send("EHLO client.test").await, 250);
    assert_eq!(smtp.send("MAIL FROM:<noreply@example.org>").await, 0);
    assert!(smtp.closed().await);

    capture.inject(Fault::new("smtp_send", FaultAction::DropAfter));
    assert_eq!(send_one(&capture).await, 0);
    assert_eq!(capture.messages().len(), 3);
    let statuses: Vec<u16> = capture.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [451, 250, 250, 550, 0, 0]);

    capture.set_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(send_one(&capture).await, 250);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

const ALTERNATIVE: &str = "From: OBI <noreply@example.org>\r\n\
To: student@example.org\r\n\
Subject: Claim <your> seat\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/related; boundary=\"rel\"\r\n\
\r\n\
--rel\r\n\
Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
\r\n\
--alt\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Claim: https://obp.example/course-enrolment?enrolment_id=42&x=<1>\r\n\
--alt\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<html><head><title>t</title></head><body><img src=\"cid:logo\">\
<a href=\"https://obp.example/course-enrolment?enrolment_id=42\">Claim your seat</a>\
<script>alert(1)</script></body></html>\r\n\
--alt--\r\n\
--rel\r\n\
Content-Type: image/png\r\n\
Content-ID: <logo>\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
iVBORw0KGgo=\r\n\
--rel--\r\n";

const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

#[tokio::test]
async fn the_mailbox_page_shows_each_message_to_a_browser_and_clears() {
    let dir = temp_dir("mail-page");
    let capture = SmtpCapture::start(SmtpOptions {
        http_bind: Some(([127, 0, 0, 1], 0).into()),
        mail_dir: Some(dir.clone()),
        ..SmtpOptions::default()
    })
    .await
    .unwrap();
    let base = capture.http_base_url().unwrap();
    let get = |path: &str, accept: Option<&str>| {
        let mut request = client().get(format!("{base}{path}"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send()
    };

    // Empty: the page says so; the JSON list is empty.
    let page = get("/", Some("text/html")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("No mail yet"));

    assert_eq!(send_one(&capture).await, 250);
    let mut smtp = Smtp::connect(&capture).await;
    assert_eq!(smtp.send("EHLO client.test").await, 250);
    assert_eq!(smtp.send("MAIL FROM:<noreply@example.org>").await, 250);
    assert_eq!(smtp.send("RCPT TO:<student@example.org>").await, 250);
    assert_eq!(smtp.data(ALTERNATIVE).await, 250);
    let messages = capture.wait_for_messages(2, Duration::from_secs(2)).await;
    let (first, second) = (&messages[0], &messages[1]);

    // The list: newest first, escaped, with links to each message; JSON stays for programs.
    let page = get("/messages", Some(BROWSER_ACCEPT)).await.unwrap();
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = page.text().await.unwrap();
    let (at_second, at_first) = (
        page.find(&format!("/messages/{}\"", second.id)).unwrap(),
        page.find(&format!("/messages/{}\"", first.id)).unwrap(),
    );
    assert!(at_second < at_first, "newest first");
    assert!(page.contains("Claim &lt;your&gt; seat"));
    assert!(!page.contains("Claim <your> seat"));
    assert!(page.contains("student@example.org"));
    let json: Value = get("/messages", None).await.unwrap().json().await.unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let json: Value = get("/messages", Some("*/*"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json[1]["id"], second.id.as_str());

    // One message: the HTML part in a sandboxed frame, the links, the tabs.
    let page = get(&format!("/messages/{}", second.id), Some(BROWSER_ACCEPT))
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.unwrap();
    assert!(page.contains(&format!(
        "src=\"/messages/{}/html\" sandbox=\"allow-popups allow-popups-to-escape-sandbox\"",
        second.id
    )));
    assert!(page.contains(
        "<a href=\"https://obp.example/course-enrolment?enrolment_id=42&amp;x=\" target=\"_blank\""
    ));
    assert!(page.contains("OBI &lt;noreply@example.org&gt;"));
    for view in ["html", "text", "raw"] {
        assert!(page.contains(&format!("?view={view}")), "{view} tab");
    }
    let text = get(
        &format!("/messages/{}?view=text", second.id),
        Some("text/html"),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(text.contains("id=\"text-part\">Claim: <a href=\"https://obp.example/course-enrolment?enrolment_id=42&amp;x=\""));
    assert!(text.contains("&lt;1&gt;"));
    let raw_view = get(
        &format!("/messages/{}?view=raw", second.id),
        Some("text/html"),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(raw_view.contains("Content-ID: &lt;logo&gt;"));
    // A text-only message opens on its text.
    let plain = get(&format!("/messages/{}", first.id), Some("text/html"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(plain.contains("id=\"text-part\""));
    assert!(!plain.contains("<iframe"));

    // The HTML part alone: sandboxed by its own policy, links to a new tab, the cid image inline.
    let part = get(&format!("/messages/{}/html", second.id), None)
        .await
        .unwrap();
    assert_eq!(part.status(), 200);
    let csp = part.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("sandbox allow-popups"), "{csp}");
    assert!(!csp.contains("allow-scripts"), "{csp}");
    let part = part.text().await.unwrap();
    assert!(part.contains("<head><base target=\"_blank\">"));
    assert!(part.contains("src=\"data:image/png;base64,iVBORw0KGgo=\""));
    assert!(part.contains("href=\"https://obp.example/course-enrolment?enrolment_id=42\""));
    let none = get(&format!("/messages/{}/html", first.id), None)
        .await
        .unwrap();
    assert_eq!(none.status(), 404);

    // Never a download for a browser; message/rfc822 for programs, as before.
    for path in [
        format!("/messages/{}.eml", second.id),
        format!("/messages/{}/raw", second.id),
    ] {
        let raw = get(&path, Some(BROWSER_ACCEPT)).await.unwrap();
        assert_eq!(
            raw.headers()["content-type"],
            "text/plain; charset=utf-8",
            "{path}"
        );
        assert_eq!(raw.headers()["content-disposition"], "inline", "{path}");
        assert_eq!(raw.bytes().await.unwrap().as_ref(), second.raw.as_slice());
    }
    let eml = get(&format!("/messages/{}", second.id), None)
        .await
        .unwrap();
    assert_eq!(eml.headers()["content-type"], "message/rfc822");
    let missing = get("/messages/nope", Some(BROWSER_ACCEPT)).await.unwrap();
    assert_eq!(missing.status(), 404);

    // The clear button: back to an empty mailbox, files gone.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cleared = no_redirect
        .post(format!("{base}/messages/clear"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 303);
    assert_eq!(cleared.headers()["location"], "/");
    assert!(capture.messages().is_empty());
    assert!(!dir.join(format!("{}.eml", first.id)).exists());
    assert!(!dir.join(format!("{}.eml", second.id)).exists());
    assert_eq!(send_one(&capture).await, 250);
    let deleted: Value = client()
        .delete(format!("{base}/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], 1);
    capture.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
