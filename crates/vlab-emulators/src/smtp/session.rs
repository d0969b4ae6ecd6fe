//! One SMTP session (RFC 5321 subset, no TLS).

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::Store;
use crate::faults::{Admission, Control, FaultAction};

/// The `SIZE` advertised and enforced.
const MAX_MESSAGE: usize = 35_882_577;
/// Longest command line read (RFC 5321 asks for 512; AUTH responses can be longer).
const MAX_LINE: u64 = 64 * 1024;

/// A mail transaction, from `MAIL FROM` to the end of `DATA`.
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
    admission: Admission,
}

struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    store: Arc<Store>,
    control: Arc<Control>,
}

/// What a command handler wants next.
enum Next {
    Continue,
    /// Close the connection (after QUIT, or without answering for a fault).
    Close,
}

type Io = std::io::Result<Next>;

pub(super) async fn run(stream: TcpStream, store: Arc<Store>, control: Arc<Control>) {
    let (reader, writer) = stream.into_split();
    let mut session = Session {
        reader: BufReader::new(reader),
        writer,
        store,
        control,
    };
    if let Err(e) = session.serve().await {
        tracing::debug!(error = %e, "smtp session ended with an error");
    }
}

/// The address inside `<…>` after a `FROM:` / `TO:` keyword; `None` on a syntax error.
fn path_argument(arg: &str, keyword: &str) -> Option<String> {
    let arg = arg.trim_start();
    if !arg.get(..keyword.len())?.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg.get(keyword.len()..)?.trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].trim().to_owned())
}

impl Session {
    async fn reply(&mut self, code: u16, text: &str) -> std::io::Result<()> {
        self.writer
            .write_all(format!("{code} {text}\r\n").as_bytes())
            .await
    }

    /// One line including its line ending; `None` at end of stream.
    async fn read_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        Ok((n > 0).then_some(line))
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        self.reply(220, "localhost ESMTP vlab mail capture").await?;
        let mut greeted = false;
        let mut authenticated = false;
        let mut transaction: Option<Transaction> = None;
        while let Some(raw) = self.read_line().await? {
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
            let next = match verb.to_ascii_uppercase().as_str() {
                "EHLO" | "HELO" if arg.trim().is_empty() => {
                    self.reply(501, "5.5.4 Syntax: EHLO hostname").await?;
                    Next::Continue
                }
                "EHLO" => {
                    greeted = true;
                    transaction = None;
                    let lines = [
                        "localhost".to_owned(),
                        format!("SIZE {MAX_MESSAGE}"),
                        "8BITMIME".to_owned(),
                        "SMTPUTF8".to_owned(),
                        "AUTH PLAIN LOGIN".to_owned(),
                    ];
                    let mut text = String::new();
                    for (i, l) in lines.iter().enumerate() {
                        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                        text.push_str(&format!("250{sep}{l}\r\n"));
                    }
                    self.writer.write_all(text.as_bytes()).await?;
                    Next::Continue
                }
                "HELO" => {
                    greeted = true;
                    transaction = None;
                    self.reply(250, "localhost").await?;
                    Next::Continue
                }
                "AUTH" if !greeted => {
                    self.reply(503, "5.5.1 Error: send HELO/EHLO first").await?;
                    Next::Continue
                }
                "AUTH" if authenticated => {
                    self.reply(503, "5.5.1 Error: already authenticated")
                        .await?;
                    Next::Continue
                }
                "AUTH" => {
                    let next = self.auth(arg).await?;
                    if matches!(next, Some(true)) {
                        authenticated = true;
                    }
                    if next.is_none() {
                        Next::Close
                    } else {
                        Next::Continue
                    }
                }
                "MAIL" => self.mail(arg, greeted, &mut transaction).await?,
                "RCPT" => {
                    match (&mut transaction, path_argument(arg, "TO:")) {
                        (None, _) => self.reply(503, "5.5.1 Error: need MAIL command").await?,
                        (Some(_), None) => {
                            self.reply(501, "5.5.4 Syntax: RCPT TO:<address>").await?
                        }
                        (Some(_), Some(a)) if a.is_empty() => {
                            self.reply(501, "5.1.3 Bad recipient address syntax")
                                .await?;
                        }
                        (Some(t), Some(address)) => {
                            t.rcpt_to.push(address);
                            self.reply(250, "2.1.5 Ok").await?;
                        }
                    }
                    Next::Continue
                }
                "DATA" => match transaction.take() {
                    Some(t) if !t.rcpt_to.is_empty() && arg.is_empty() => self.data(t).await?,
                    Some(t) => {
                        let (code, text) = if arg.is_empty() {
                            (503, "5.5.1 Error: need RCPT command")
                        } else {
                            (501, "5.5.4 Syntax: DATA")
                        };
                        transaction = Some(t);
                        self.reply(code, text).await?;
                        Next::Continue
                    }
                    None => {
                        self.reply(503, "5.5.1 Error: need RCPT command").await?;
                        Next::Continue
                    }
                },
                "RSET" => {
                    transaction = None;
                    self.reply(250, "2.0.0 Ok").await?;
                    Next::Continue
                }
                "NOOP" => {
                    self.reply(250, "2.0.0 Ok").await?;
                    Next::Continue
                }
                "VRFY" => {
                    self.reply(252, "2.0.0 Cannot VRFY user").await?;
                    Next::Continue
                }
                "QUIT" => {
                    self.reply(221, "2.0.0 Bye").await?;
                    Next::Close
                }
                "" => {
                    self.reply(500, "5.5.2 Error: bad syntax").await?;
                    Next::Continue
                }
                _ => {
                    self.reply(502, "5.5.2 Error: command not recognized")
                        .await?;
                    Next::Continue
                }
            };
            if matches!(next, Next::Close) {
                break;
            }
        }
        Ok(())
    }

    /// AUTH PLAIN / LOGIN, accepting any credentials. `Some(true)` = authenticated,
    /// `Some(false)` = refused or cancelled, `None` = the client went away.
    async fn auth(&mut self, arg: &str) -> std::io::Result<Option<bool>> {
        let mut words = arg.split_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next();
        let prompts: &[&str] = match (mechanism.as_str(), initial) {
            ("PLAIN", None) => &[""],
            ("PLAIN", Some(_)) => &[],
            // "Username:" and "Password:", base64.
            ("LOGIN", None) => &["VXNlcm5hbWU6", "UGFzc3dvcmQ6"],
            ("LOGIN", Some(_)) => &["UGFzc3dvcmQ6"],
            _ => {
                self.reply(504, "5.5.4 Unrecognized authentication type")
                    .await?;
                return Ok(Some(false));
            }
        };
        for prompt in prompts {
            self.reply(334, prompt).await?;
            let Some(answer) = self.read_line().await? else {
                return Ok(None);
            };
            if answer.trim_ascii() == b"*" {
                self.reply(501, "5.7.0 Authentication cancelled").await?;
                return Ok(Some(false));
            }
        }
        self.reply(235, "2.7.0 Authentication successful").await?;
        Ok(Some(true))
    }

    async fn mail(
        &mut self,
        arg: &str,
        greeted: bool,
        transaction: &mut Option<Transaction>,
    ) -> Io {
        if !greeted {
            self.reply(503, "5.5.1 Error: send HELO/EHLO first").await?;
            return Ok(Next::Continue);
        }
        if transaction.is_some() {
            self.reply(503, "5.5.1 Error: nested MAIL command").await?;
            return Ok(Next::Continue);
        }
        let Some(mail_from) = path_argument(arg, "FROM:") else {
            self.reply(501, "5.5.4 Syntax: MAIL FROM:<address>").await?;
            return Ok(Next::Continue);
        };
        let admission = self.control.begin("smtp_send", "MAIL", &mail_from, None);
        match admission.fault {
            Some(FaultAction::DropBefore) => return Ok(Next::Close),
            Some(FaultAction::TimeoutBefore(stall)) => {
                tokio::time::sleep(stall).await;
                return Ok(Next::Close);
            }
            _ => {}
        }
        *transaction = Some(Transaction {
            mail_from,
            rcpt_to: Vec::new(),
            admission,
        });
        self.reply(250, "2.1.0 Ok").await?;
        Ok(Next::Continue)
    }

    /// Reads the message up to the lone `.`, undoing dot-stuffing, then stores it (or applies
    /// the transaction's fault).
    async fn data(&mut self, transaction: Transaction) -> Io {
        self.reply(354, "End data with <CR><LF>.<CR><LF>").await?;
        let mut message = Vec::new();
        let mut too_big = false;
        loop {
            let mut line = Vec::new();
            if self.reader.read_until(b'\n', &mut line).await? == 0 {
                return Ok(Next::Close);
            }
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if message.len() + line.len() > MAX_MESSAGE {
                too_big = true;
            } else {
                message.extend_from_slice(line);
            }
        }
        let Transaction {
            mail_from,
            rcpt_to,
            admission,
        } = transaction;
        if !admission.latency.is_zero() {
            tokio::time::sleep(admission.latency).await;
        }
        if too_big {
            self.control.finish(admission.index, 552);
            self.reply(552, "5.3.4 Error: message file too big").await?;
            return Ok(Next::Continue);
        }
        match admission.fault {
            Some(FaultAction::Status(code)) => {
                let code = if (400..600).contains(&code) {
                    code
                } else {
                    451
                };
                self.control.finish(admission.index, code);
                let class = code / 100;
                self.reply(
                    code,
                    &format!("{class}.3.0 Injected failure, message not accepted"),
                )
                .await?;
                Ok(Next::Continue)
            }
            Some(FaultAction::DropAfter) => {
                self.store.add(mail_from, rcpt_to, message);
                Ok(Next::Close)
            }
            Some(FaultAction::TimeoutAfter(stall)) => {
                self.store.add(mail_from, rcpt_to, message);
                tokio::time::sleep(stall).await;
                Ok(Next::Close)
            }
            // The "before" faults closed the connection at MAIL FROM already.
            Some(FaultAction::DropBefore | FaultAction::TimeoutBefore(_)) | None => {
                let stored = self.store.add(mail_from, rcpt_to, message);
                self.control.finish(admission.index, 250);
                self.reply(250, &format!("2.0.0 Ok: queued as {}", stored.id))
                    .await?;
                Ok(Next::Continue)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_from_mail_and_rcpt_arguments() {
        assert_eq!(
            path_argument("FROM:<a@b.org> SIZE=10 BODY=8BITMIME", "FROM:"),
            Some("a@b.org".to_owned())
        );
        assert_eq!(path_argument("from: <>", "FROM:"), Some(String::new()));
        assert_eq!(path_argument("TO:a@b.org", "TO:"), None);
        assert_eq!(path_argument("X", "FROM:"), None);
    }
}
