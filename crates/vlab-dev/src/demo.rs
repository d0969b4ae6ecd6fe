//! `--seed-demo` (operations.md §11.4): a ready course, created through the service's own
//! HTTP API (so through its use cases, with the emulators doing the Keycloak, accounting and
//! mail work), then the next commands to try.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use uuid::Uuid;
use vlab_emulators::{KeycloakEmulator, SmtpCapture};

pub const LAB_NAME: &str = "Demo Course Lab";

pub struct Demo {
    pub lab_id: String,
    pub course_id: String,
}

struct Client<'a> {
    http: reqwest::Client,
    api: &'a str,
}

impl Client<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, body) = self.call(method.clone(), path, token, body).await?;
        if status != 200 {
            bail!("{method} {path} answered {status}: {body}");
        }
        Ok(body)
    }
}

/// Creates the demo data, or returns `None` when the demo lab already exists.
pub async fn seed(
    api: &str,
    keycloak: &KeycloakEmulator,
    smtp: &SmtpCapture,
    admin: Uuid,
    faculty: Uuid,
) -> anyhow::Result<Option<Demo>> {
    use reqwest::Method;
    let client = Client {
        http: reqwest::Client::new(),
        api,
    };
    let hour = Duration::from_secs(3600);
    let admin_token = keycloak.mint_token(admin, hour);

    let (status, lab) = client
        .call(
            Method::POST,
            "/virtual-labs",
            &admin_token,
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
            Method::POST,
            &format!("/virtual-labs/{lab_id}/projects"),
            &admin_token,
            Some(json!({"name": "Template"})),
        )
        .await?;
    let institutions = client
        .ok(
            Method::GET,
            "/institutions/_search?q=Open%20Brain%20Institute",
            &admin_token,
            None,
        )
        .await?;
    let now = chrono::Utc::now();
    let course = client
        .ok(
            Method::POST,
            "/courses",
            &admin_token,
            Some(json!({
                "virtual_lab_id": lab_id,
                "template_project_id": template["id"],
                "institution_id": institutions["data"][0]["id"],
                "start_date": (now - chrono::Duration::days(1)).to_rfc3339(),
                "last_drop_date": (now + chrono::Duration::days(7)).to_rfc3339(),
                "end_date": (now + chrono::Duration::days(90)).to_rfc3339(),
            })),
        )
        .await?;
    let course_id = course["data"]["id"]
        .as_str()
        .context("course id")?
        .to_owned();
    client
        .ok(
            Method::POST,
            &format!("/courses/{course_id}/activate"),
            &admin_token,
            None,
        )
        .await?;
    client
        .ok(
            Method::POST,
            "/seats/provision",
            &admin_token,
            Some(json!({"course_id": course_id, "number_of_seats": 10})),
        )
        .await?;

    // The faculty joins through a real admin invite: read the link from the captured e-mail.
    let before = smtp.messages().len();
    client
        .ok(
            Method::POST,
            &format!("/virtual-labs/{lab_id}/invites"),
            &admin_token,
            Some(json!({"email": "faculty@example.org", "role": "admin"})),
        )
        .await?;
    let messages = smtp
        .wait_for_messages(before + 1, Duration::from_secs(10))
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
            Method::POST,
            &format!("/invites?token={token}"),
            &keycloak.mint_token(faculty, hour),
            None,
        )
        .await?;
    Ok(Some(Demo { lab_id, course_id }))
}
