//! The claim secret: the enrolment id by default, a random token when configured (§3.1).

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::emailed_secret;
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp, fetch_scalar};

#[sqlx::test]
async fn claim_with_enrolment_id_still_works_by_default(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let enrolment_id = students[0].enrolment_id;
    // The e-mailed link carries the enrolment id, and no token is stored.
    assert_eq!(emailed_secret(&app, "stu-1@uni.org", 0).await, enrolment_id);
    let token: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claim_token FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await;
    assert_eq!(token, None);
    let body = app
        .as_user(&app.users.students[0])
        .claim(enrolment_id)
        .await
        .ok_body();
    assert_eq!(body["data"]["id"], enrolment_id.to_string());
}

#[sqlx::test]
async fn random_token_mode_refuses_the_enrolment_id_but_accepts_the_emailed_link(db: PgPool) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert(
            "CLAIM_TOKEN_FOR_NEW_ENROLMENTS".to_owned(),
            "random".to_owned(),
        );
    })
    .await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let enrolment_id = students[0].enrolment_id;
    let secret = emailed_secret(&app, "stu-1@uni.org", 0).await;
    assert_ne!(secret, enrolment_id);
    let token: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claim_token FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await;
    assert_eq!(token, Some(secret));
    let student = app.as_user(&app.users.students[0]);
    student.claim(enrolment_id).await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        "Enrolment not found",
    );
    let body = student.claim(secret).await.ok_body();
    // The answer names the enrolment, never the token.
    assert_eq!(body["data"]["id"], enrolment_id.to_string());
    assert!(!body.to_string().contains(&secret.to_string()));
    let claimed_by: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claimed_by FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await;
    assert_eq!(claimed_by, Some(app.users.students[0].id));
    // The roster never shows the token either.
    let roster = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    assert!(!roster.to_string().contains(&secret.to_string()));
}

/// §3.7 19: in random-token mode, no claim secret — current or revoked — appears in any
/// response of the API or in the server's log at `debug`, only in the e-mails.
#[sqlx::test]
async fn claim_tokens_never_appear_in_any_response_or_log_line(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let server = app
        .spawn_process_with(&[
            ("CLAIM_TOKEN_FOR_NEW_ENROLMENTS", "random"),
            ("RUST_LOG", "debug"),
        ])
        .await;
    let course = fixtures::course_with_faculty(&app, "Secret 101").await;
    fixtures::provision(&app, course.course_id, 2).await;
    let faculty = app.faculty_token();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut request = app
            .client
            .request(method, format!("{}{path}", server.base_url))
            .bearer_auth(&faculty);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        }
    };
    let c = course.course_id;
    let (status, assigned) = call(
        reqwest::Method::POST,
        format!("/seats/courses/{c}/assign"),
        Some(fixtures::students_body(&[
            ("stu-1", "stu-1@uni.org"),
            ("stu-2", "stu-2@uni.org"),
        ])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{assigned}");
    let assigned: Value = serde_json::from_str(&assigned).unwrap();
    let enrolment = |i: usize| -> Uuid {
        assigned["results"][i]["enrolment_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (first, second) = (enrolment(0), enrolment(1));
    // Rotate both links: one by a correction, one by an unclaim after a claim with the link.
    let (status, body) = call(
        reqwest::Method::POST,
        format!("/seats/courses/{c}/enrolments/{first}/correct-email"),
        Some(json!({"email": "stu-1b@uni.org"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let link = super::emailed_secret(&app, "stu-2@uni.org", 0).await;
    assert_ne!(
        link, second,
        "random mode: the link is not the enrolment id"
    );
    let claimed = app
        .client
        .post(format!("{}/courses/claim", server.base_url))
        .bearer_auth(app.student_token(0))
        .json(&json!({"enrolment_id": link}))
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), StatusCode::OK);
    let (status, body) = call(
        reqwest::Method::POST,
        format!("/seats/courses/{c}/enrolments/{second}/unclaim"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut secrets: Vec<String> = sqlx::query_scalar(
        "SELECT claim_token::text FROM course_enrolment WHERE course_id = $1 AND claim_token IS NOT NULL
         UNION SELECT token::text FROM claim_token_revocation",
    )
    .bind(c)
    .fetch_all(&app.db)
    .await
    .unwrap();
    secrets.sort();
    assert_eq!(
        secrets.len(),
        4,
        "2 first links and their 2 replacements: {secrets:?}"
    );

    let mut responses = vec![assigned.to_string()];
    for path in [
        format!("/courses/{c}/enrolments"),
        format!("/seats/courses/{c}"),
        format!("/courses/{c}"),
        format!("/courses/{c}/events?page_size=100"),
        format!("/courses/{c}/enrolments/{first}/timeline"),
        format!("/courses/{c}/enrolments/{second}/timeline"),
    ] {
        // As the service admin, who may read all of them.
        let response = app
            .client
            .get(format!("{}{path}", server.base_url))
            .bearer_auth(app.admin_token())
            .send()
            .await
            .unwrap();
        let (status, body) = (response.status(), response.text().await.unwrap());
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        responses.push(body);
    }
    let log = server.log();
    assert!(log.contains("DEBUG"), "the server logs at debug");
    for secret in &secrets {
        for (i, body) in responses.iter().enumerate() {
            assert!(
                !body.contains(secret.as_str()),
                "response {i} shows a claim secret"
            );
        }
        assert!(
            !log.contains(secret.as_str()),
            "the log shows a claim secret"
        );
    }
}
