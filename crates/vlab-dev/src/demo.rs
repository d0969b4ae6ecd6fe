//! `--seed-demo` (operations.md §11.4): a ready course, made through the service's own HTTP
//! API (so through its use cases, with the emulators doing the Keycloak, accounting and mail
//! work). Every call is recorded, so the seed can print itself as a guided course: the admin
//! half as the curl commands it ran with the answers it got, the student half up to the drop
//! as commands to run next.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use vlab_emulators::SmtpCapture;

pub const LAB_NAME: &str = "Demo Course Lab";
/// The number of seats the demo course gets.
pub const SEATS: u32 = 10;

pub struct Demo {
    pub lab_id: String,
    pub course_id: String,
    /// The calls the seed made, in order.
    pub steps: Vec<Step>,
}

/// Who makes a call: the shell variable holding their token in the printed script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Faculty,
}

impl Caller {
    pub fn variable(self) -> &'static str {
        match self {
            Self::Admin => "ADMIN",
            Self::Faculty => "FACULTY",
        }
    }
}

/// One call of the seed, as it was made and answered.
pub struct Step {
    /// What it does, and which roles may call it.
    pub title: &'static str,
    pub roles: &'static str,
    pub method: reqwest::Method,
    pub path: String,
    pub caller: Caller,
    pub body: Option<Value>,
    pub status: u16,
    pub answer: Value,
}

/// The tokens the seed calls with.
pub struct Tokens<'a> {
    pub admin: &'a str,
    pub faculty: &'a str,
}

struct Client<'a> {
    http: reqwest::Client,
    api: &'a str,
    tokens: Tokens<'a>,
    steps: Vec<Step>,
}

impl Client<'_> {
    /// Makes the call and records it; returns the status and the JSON answer.
    async fn call(
        &mut self,
        (title, roles): (&'static str, &'static str),
        method: reqwest::Method,
        path: String,
        caller: Caller,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let token = match caller {
            Caller::Admin => self.tokens.admin,
            Caller::Faculty => self.tokens.faculty,
        };
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .bearer_auth(token)
            .timeout(Duration::from_secs(60));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        self.steps.push(Step {
            title,
            roles,
            method,
            path,
            caller,
            body,
            status,
            answer: answer.clone(),
        });
        Ok((status, answer))
    }

    /// [`call`](Self::call), failing unless the answer is 200.
    async fn ok(
        &mut self,
        what: (&'static str, &'static str),
        method: reqwest::Method,
        path: String,
        caller: Caller,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self
            .call(what, method.clone(), path.clone(), caller, body)
            .await?;
        if status != 200 {
            bail!("{method} {path} answered {status}: {answer}");
        }
        Ok(answer)
    }
}

/// Creates the demo data, or returns `None` when the demo lab already exists.
pub async fn seed(
    api: &str,
    smtp: &SmtpCapture,
    tokens: Tokens<'_>,
) -> anyhow::Result<Option<Demo>> {
    use reqwest::Method;
    let mut client = Client {
        http: reqwest::Client::new(),
        api,
        tokens,
        steps: Vec::new(),
    };

    let (status, lab) = client
        .call(
            (
                "Create a course lab",
                "a service admin, or the OBI owner user",
            ),
            Method::POST,
            "/virtual-labs".to_owned(),
            Caller::Admin,
            Some(json!({"name": LAB_NAME, "description": "A course lab for trying vlab-courses", "entity": "Open Brain Institute", "is_course": true})),
        )
        .await?;
    if status == 409 {
        return Ok(None);
    }
    if status != 200 {
        bail!("creating the demo lab answered {status}: {lab}");
    }
    let lab_id = lab["id"].as_str().context("lab id")?.to_owned();
    let template = client
        .ok(
            (
                "Create the template project every student's project is copied from",
                "a lab admin (the lab's creator is one)",
            ),
            Method::POST,
            format!("/virtual-labs/{lab_id}/projects"),
            Caller::Admin,
            Some(json!({"name": "Template"})),
        )
        .await?;
    let institutions = client
        .ok(
            (
                "Find the institution that buys the seats",
                "a service admin",
            ),
            Method::GET,
            "/institutions/_search?q=Open%20Brain%20Institute".to_owned(),
            Caller::Admin,
            None,
        )
        .await?;
    let course = client
        .ok(
            (
                "Create the course, a draft (its template project is funded)",
                "a service admin",
            ),
            Method::POST,
            "/courses".to_owned(),
            Caller::Admin,
            Some(json!({
                "virtual_lab_id": lab_id,
                "template_project_id": template["id"],
                "institution_id": institutions["data"][0]["id"],
            })),
        )
        .await?;
    let course_id = course["data"]["id"]
        .as_str()
        .context("course id")?
        .to_owned();
    let day = |days: i64| {
        (chrono::Utc::now().date_naive() + chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    };
    client
        .ok(
            (
                "Set its dates: start < last drop <= start + 14 days < end (drafts only)",
                "a service admin",
            ),
            Method::PATCH,
            format!("/courses/{course_id}"),
            Caller::Admin,
            Some(json!({
                "start_date": day(-1),
                "last_drop_date": day(7),
                "end_date": day(90),
            })),
        )
        .await?;
    client
        .ok(
            ("Activate the course", "a service admin"),
            Method::POST,
            format!("/courses/{course_id}/activate"),
            Caller::Admin,
            None,
        )
        .await?;

    // The faculty joins through a real admin invite: read the link from the captured e-mail.
    let before = smtp.messages().len();
    client
        .ok(
            (
                "Invite the faculty member as a lab admin (an e-mail with the invite link)",
                "a lab admin",
            ),
            Method::POST,
            format!("/virtual-labs/{lab_id}/invites"),
            Caller::Admin,
            Some(json!({"email": "faculty@example.org", "role": "admin"})),
        )
        .await?;
    let messages = smtp
        .wait_for_messages(before + 1, Duration::from_secs(30))
        .await;
    let link = messages
        .iter()
        .skip(before)
        .flat_map(|m| m.links.iter())
        .find(|l| l.contains("/invite?token="))
        .context("the invite e-mail carries the invite link")?;
    let token = link.split("token=").nth(1).context("invite token")?;
    client
        .ok(
            (
                "The faculty member accepts, with the token of the e-mail's link",
                "any signed-in user holding the link",
            ),
            Method::POST,
            format!("/invites?token={token}"),
            Caller::Faculty,
            None,
        )
        .await?;
    client
        .ok(
            ("Provision seats in the course", "a service admin"),
            Method::POST,
            "/seats/provision".to_owned(),
            Caller::Admin,
            Some(json!({"course_id": course_id, "number_of_seats": SEATS})),
        )
        .await?;
    Ok(Some(Demo {
        lab_id,
        course_id,
        steps: client.steps,
    }))
}

/// The demo course of an earlier `--seed-demo`: `(course_id, virtual_lab_id)`.
pub async fn find_existing(api: &str, admin: &str) -> anyhow::Result<(String, String)> {
    let answer: Value = reqwest::Client::new()
        .get(format!("{api}/courses"))
        .query(&[("vlab_name", LAB_NAME)])
        .bearer_auth(admin)
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let course = answer["data"]
        .as_array()
        .and_then(|courses| {
            courses
                .iter()
                .find(|c| c["virtual_lab_name"] == LAB_NAME)
                .or_else(|| courses.first())
        })
        .context("no course of the demo lab")?;
    let course_id = course["id"].as_str().context("course id")?.to_owned();
    let lab_id = course["virtual_lab_id"]
        .as_str()
        .context("course virtual_lab_id")?
        .to_owned();
    Ok((course_id, lab_id))
}

/// A shell word: single-quoted unless it is plainly safe.
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// An answer on one line, shortened past `limit` characters.
pub fn short(answer: &Value, limit: usize) -> String {
    let text = answer.to_string();
    if text.chars().count() <= limit {
        text
    } else {
        let cut: String = text.chars().take(limit).collect();
        format!("{cut}…")
    }
}

/// The curl command of a step, calling `api` with the caller's token variable.
pub fn curl(api: &str, step: &Step) -> String {
    let mut command = String::from("curl -s");
    // curl sends GET without a body and POST with one; anything else is spelled out.
    let implied = match step.body {
        None => step.method == reqwest::Method::GET,
        Some(_) => step.method == reqwest::Method::POST,
    };
    if !implied {
        command.push_str(&format!(" -X {}", step.method));
    }
    command.push_str(&format!(
        " -H \"Authorization: Bearer ${}\"",
        step.caller.variable()
    ));
    if let Some(body) = &step.body {
        command.push_str(" -H 'content-type: application/json' -d ");
        command.push_str(&shell_quote(&body.to_string()));
    }
    command.push(' ');
    command.push_str(&shell_quote(&format!("{api}{}", step.path)));
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_commands_quote_bodies_and_urls_for_a_posix_shell() {
        let step = Step {
            title: "t",
            roles: "r",
            method: reqwest::Method::PATCH,
            path: "/courses/1".to_owned(),
            caller: Caller::Admin,
            body: Some(json!({"name": "it's"})),
            status: 200,
            answer: Value::Null,
        };
        assert_eq!(
            curl("http://127.0.0.1:8000", &step),
            r#"curl -s -X PATCH -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' -d '{"name":"it'\''s"}' http://127.0.0.1:8000/courses/1"#
        );
        let post = Step {
            method: reqwest::Method::POST,
            body: None,
            path: "/invites?token=a.b".to_owned(),
            caller: Caller::Faculty,
            ..step
        };
        assert_eq!(
            curl("http://h", &post),
            r#"curl -s -X POST -H "Authorization: Bearer $FACULTY" 'http://h/invites?token=a.b'"#
        );
    }

    #[test]
    fn long_answers_are_shortened() {
        assert_eq!(short(&json!({"a": 1}), 100), r#"{"a":1}"#);
        assert_eq!(short(&json!("abcdef"), 3), "\"ab…");
    }
}
