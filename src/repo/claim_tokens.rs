//! Claim secrets (round-2 addendum F2, §3.1): `course_enrolment.claim_token` and the revoked
//! secrets of `claim_token_revocation`. The current secret of an enrolment is
//! `COALESCE(claim_token, id)`. Tokens are never logged or returned.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Why a secret was revoked (`claim_token_revocation.reason`).
pub mod reason {
    pub const EMAIL_CORRECTED: &str = "email_corrected";
    pub const UNCLAIMED: &str = "unclaimed";
}

/// The current claim secret of each of the enrolments: `(enrolment_id, secret)`.
pub async fn current_secrets(
    db: impl PgExecutor<'_>,
    enrolment_ids: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT id, COALESCE(claim_token, id) FROM course_enrolment WHERE id = ANY($1)")
        .bind(enrolment_ids)
        .fetch_all(db)
        .await
}

/// Whether `secret` was revoked (an enrolment's earlier link).
pub async fn is_revoked(db: impl PgExecutor<'_>, secret: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM claim_token_revocation WHERE token = $1)")
        .bind(secret)
        .fetch_one(db)
        .await
}

/// Whether `candidate` is already an enrolment id, a token or a revoked token.
pub async fn is_taken(db: impl PgExecutor<'_>, candidate: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM course_enrolment WHERE id = $1 OR claim_token = $1)
             OR EXISTS (SELECT 1 FROM claim_token_revocation WHERE token = $1)",
    )
    .bind(candidate)
    .fetch_one(db)
    .await
}

/// Revokes the enrolment's current secret and makes `token` its secret, in one statement.
pub async fn rotate(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    token: Uuid,
    reason: &str,
    revoked_by: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH old AS (
             SELECT id, COALESCE(claim_token, id) AS secret FROM course_enrolment WHERE id = $1),
         revoked AS (
             INSERT INTO claim_token_revocation (token, enrolment_id, reason, revoked_by, revoked_at)
             SELECT secret, id, $3, $4, $5 FROM old)
         UPDATE course_enrolment SET claim_token = $2 WHERE id = $1",
    )
    .bind(enrolment_id)
    .bind(token)
    .bind(reason)
    .bind(revoked_by)
    .bind(now)
    .execute(db)
    .await
    .map(drop)
}
