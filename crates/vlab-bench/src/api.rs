//! Scenario set-up through the service's own HTTP API.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::stack::{ADMIN, FACULTY, Stack};

pub struct Api<'a> {
    pub stack: &'a Stack,
    pub client: reqwest::Client,
    admin_token: String,
}

pub struct Course {
    pub id: Uuid,
    /// A faculty token minted after the faculty joined this course's lab (a fresh token has
    /// no cached groups).
    pub faculty_token: String,
}

const HOUR: Duration = Duration::from_secs(3600);

impl<'a> Api<'a> {
    pub fn new(stack: &'a Stack) -> anyhow::Result<Self> {
        Ok(Self {
            stack,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            admin_token: stack.keycloak.mint_token(ADMIN, HOUR),
        })
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.stack.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {body}");
        }
        Ok(body)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// A course lab, template, course with open dates, activated, with the faculty as lab
    /// admin and `seats` provisioned.
    /// An active course that started yesterday, with `seats` provisioned seats.
    pub async fn active_course(&self, name: &str, seats: usize) -> anyhow::Result<Course> {
        let start = chrono::Utc::now() - chrono::Duration::days(1);
        self.active_course_from(name, seats, start).await
    }

    /// An active course starting at `start` (before it, assign adds a waitlisted group).
    pub async fn active_course_from(
        &self,
        name: &str,
        seats: usize,
        start: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Course> {
        let admin = self.admin_token.as_str();
        let lab = self
            .post(
                "/virtual-labs",
                admin,
                json!({"name": name, "description": "bench", "entity": "OBI", "is_course": true}),
            )
            .await?;
        let vlab_id = lab["id"].as_str().context("lab id")?.to_owned();
        let project = self
            .post(
                &format!("/virtual-labs/{vlab_id}/projects"),
                admin,
                json!({"name": "Template"}),
            )
            .await?;
        let institutions = self
            .call(reqwest::Method::GET, "/institutions/_search", admin, None)
            .await?;
        let now = chrono::Utc::now();
        let course = self
            .post(
                "/courses",
                admin,
                json!({
                    "virtual_lab_id": vlab_id,
                    "template_project_id": project["id"],
                    "institution_id": institutions["data"][0]["id"],
                    "start_date": start.to_rfc3339(),
                    "last_drop_date": (now + chrono::Duration::days(7)).to_rfc3339(),
                    "end_date": (now + chrono::Duration::days(90)).to_rfc3339(),
                }),
            )
            .await?;
        let course_id = course["data"]["id"]
            .as_str()
            .context("course id")?
            .to_owned();
        self.post(&format!("/courses/{course_id}/activate"), admin, json!({}))
            .await?;
        let mut left = seats;
        while left > 0 {
            let n = left.min(100);
            self.post(
                "/seats/provision",
                admin,
                json!({"course_id": course_id, "number_of_seats": n}),
            )
            .await?;
            left -= n;
        }
        let group = self
            .stack
            .keycloak
            .group_by_name(&format!("vlab/{vlab_id}/admin"))
            .context("the lab admin group exists")?;
        self.stack.keycloak.add_user_to_group(FACULTY, &group.id);
        Ok(Course {
            id: Uuid::parse_str(&course_id)?,
            faculty_token: self.stack.keycloak.mint_token(FACULTY, HOUR),
        })
    }

    /// Assigns `n` students; returns the seat ids and how many succeeded.
    pub async fn assign(
        &self,
        course: &Course,
        prefix: &str,
        n: usize,
    ) -> anyhow::Result<(Vec<String>, usize)> {
        let students: Vec<Value> = (0..n)
            .map(|i| json!({"student_id": format!("{prefix}-{i}"), "email": format!("{prefix}-{i}@uni.example.org")}))
            .collect();
        let body = self
            .post(
                &format!("/seats/courses/{}/assign", course.id),
                &course.faculty_token,
                json!({"students": students}),
            )
            .await?;
        let results = body["results"].as_array().context("assign results")?;
        let ok = results
            .iter()
            .filter(|r| r["assignment_successful"] == true)
            .count();
        let seats = results
            .iter()
            .filter_map(|r| r["seat_id"].as_str().map(str::to_owned))
            .collect();
        Ok((seats, ok))
    }

    /// Imports a roster of `n` students (`{prefix}-i`) as CSV; returns the summary.
    pub async fn roster_import(
        &self,
        course: &Course,
        prefix: &str,
        n: usize,
        dry_run: bool,
    ) -> anyhow::Result<Value> {
        let rows: String = (0..n)
            .map(|i| format!("{prefix}-{i},{prefix}-{i}@uni.example.org\n"))
            .collect();
        let body = self
            .post(
                &format!(
                    "/seats/courses/{}/roster-import?dry_run={dry_run}",
                    course.id
                ),
                &course.faculty_token,
                json!({"csv": format!("student_id,email\n{rows}"), "filename": "bench.csv"}),
            )
            .await?;
        Ok(body["summary"].clone())
    }

    /// Drops the given seats; returns how many were dropped.
    pub async fn drop_seats(&self, course: &Course, seats: &[String]) -> anyhow::Result<usize> {
        let body = self
            .post(
                &format!("/seats/courses/{}/drop", course.id),
                &course.faculty_token,
                json!({"seat_ids": seats}),
            )
            .await?;
        Ok(body["results"]
            .as_array()
            .context("drop results")?
            .iter()
            .filter(|r| r["is_dropped"] == true)
            .count())
    }
}
