//! Claim links (round-2 addendum F2, §3.7): claim tokens separate from the enrolment id, and
//! correcting an enrolment's e-mail.

mod correct_email;
mod tokens;
mod unclaim;
mod upgrade;

use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{ReplyExt, TestApp};

/// The message of check 1a.
pub const REPLACED: &str = "This claim link has been replaced by a newer one. Use the link in the most recent e-mail from your course, or ask your course administrator.";

/// The claim secret in the newest captured e-mail to `recipient` (waits up to 5 s for it).
pub async fn emailed_secret(app: &TestApp, recipient: &str, nth: usize) -> Uuid {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let links: Vec<String> = app
            .smtp
            .messages()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == recipient))
            .filter_map(|m| m.links.into_iter().find(|l| l.contains("enrolment_id=")))
            .collect();
        if let Some(link) = links.get(nth) {
            let secret = link.rsplit_once("enrolment_id=").unwrap().1;
            return secret.parse().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no claim e-mail #{nth} to {recipient}: {links:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The claim with `secret` is refused as a replaced link.
pub async fn assert_replaced(app: &TestApp, secret: Uuid) {
    app.as_user(&app.users.students[2])
        .claim(secret)
        .await
        .error_with(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND", REPLACED);
}
