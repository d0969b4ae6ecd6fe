//! Assign and roster import sent with an `Idempotency-Key`: the first request runs and its
//! answer is recorded; a repeat by the same caller, with the same key and the same request,
//! within [`RETENTION`], gets that answer again instead of a second run.
//!
//! * While the first request runs, its process holds a lease on the row ([`LEASE`], renewed
//!   every minute), and a repeat is refused with 409.
//! * When the process died (the lease lapsed), a repeat **resumes** it: the use case reports
//!   the students already enrolled as the dead run enrolled them, takes over the seats it
//!   still held, and assigns the others now.
//! * The answer is recorded when it is final: a 200, or a request-level refusal of the use
//!   case (4xx), except the refusal for students being enrolled by another request, which a
//!   repeat may get past (the row is deleted: the key is unused again). A 5xx lapses the
//!   lease at once, so a repeat resumes.
//! * The same key with another request is a 422. Keys belong to their caller and course.

mod error;

use std::future::Future;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use error::IdempotencyError;

use crate::domain::idempotency_key::IdempotencyKey;
use crate::repo::idempotent_requests::{self as repo, RequestKey};
use crate::usecases::error::{Chain, StatusCode};
use crate::usecases::seats::AssignError;
use crate::usecases::{Services, UseCaseError};

/// How long a run holds its row without renewing it: the saga lease, so that a repeat resumes
/// only once the saga recovery may have compensated the dead run's students.
pub const LEASE: TimeDelta = TimeDelta::minutes(5);
/// How long an answer is replayed; a repeat after that is a new request.
pub const RETENTION: TimeDelta = TimeDelta::hours(24);
/// How often a running request renews its lease.
const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The operations that accept a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Assign,
    RosterImport,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Assign => "assign",
            Operation::RosterImport => "roster_import",
        }
    }
}

/// The SHA-256 of a request as its use case read it. Each part is length-prefixed, so that
/// (`ab`, `c`) and (`a`, `bc`) differ.
pub struct RequestHash(Sha256);

impl RequestHash {
    pub fn new(operation: Operation) -> Self {
        let mut hash = Self(Sha256::new());
        hash.part(operation.as_str().as_bytes());
        hash
    }

    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

/// A request sent with a key.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub caller: Uuid,
    pub operation: Operation,
    pub course_id: Uuid,
    pub key: IdempotencyKey,
    pub request_hash: Vec<u8>,
}

/// One run of a request: its id (the `reservation_id` of the seats it reserves), and whether
/// it resumes an attempt whose process died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub run: Uuid,
    pub resumes: Option<Resume>,
}

impl Attempt {
    /// A first run (every request without a key).
    pub fn first() -> Self {
        Self {
            run: Uuid::new_v4(),
            resumes: None,
        }
    }
}

/// The dead attempt a run resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Its run id: the seats it still holds are taken over.
    pub previous_run: Option<Uuid>,
    /// When the request was first received: enrolments made since then were made for it.
    pub since: DateTime<Utc>,
}

/// A recorded answer, replayed as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: StatusCode,
    /// The body's exact text.
    pub body: String,
}

/// What to do with a keyed request.
#[derive(Debug)]
pub enum Start {
    /// Run it (for the first time, or resuming), holding the lease.
    Run(Claim),
    /// Answer with the first request's answer.
    Replay(Stored),
}

/// The lease on a keyed request's row, held by one run.
#[derive(Debug)]
pub struct Claim {
    key: RequestKey,
    pub attempt: Attempt,
}

/// Looks the key up (one short transaction, holding the row): a new key or an expired one
/// starts a run, a recorded answer is replayed, a lapsed lease is taken over, anything else
/// is refused.
pub async fn start(services: &Services, keyed: Keyed) -> Result<Start, UseCaseError> {
    let now = Utc::now();
    let operation = keyed.operation.as_str();
    let key = RequestKey {
        caller: keyed.caller,
        operation,
        course_id: keyed.course_id,
        key: keyed.key.as_str().to_owned(),
    };
    let hash = &keyed.request_hash;
    let attempt = Attempt::first();
    let (lease_until, expires_at) = (now + LEASE, now + RETENTION);
    let outcome = |outcome: &'static str| {
        metrics::counter!("vlab_idempotent_requests_total", "operation" => operation, "outcome" => outcome)
            .increment(1);
    };

    let run = attempt.run;
    let mut tx = services.db.begin().await?;
    if repo::insert(&mut *tx, &key, hash, run, lease_until, now, expires_at).await? {
        tx.commit().await?;
        outcome("new");
        return Ok(Start::Run(Claim { key, attempt }));
    }
    let Some(row) = repo::find_for_update(&mut *tx, &key).await? else {
        // Deleted between the two statements: the key is free, unless a racing request
        // took it in between.
        if !repo::insert(&mut *tx, &key, hash, run, lease_until, now, expires_at).await? {
            outcome("in_progress");
            return Err(IdempotencyError::InProgress.into());
        }
        tx.commit().await?;
        outcome("new");
        return Ok(Start::Run(Claim { key, attempt }));
    };
    if row.expires_at <= now {
        repo::restart(&mut *tx, &key, hash, run, lease_until, now, expires_at).await?;
        tx.commit().await?;
        outcome("new");
        return Ok(Start::Run(Claim { key, attempt }));
    }
    if row.request_hash != *hash {
        outcome("mismatch");
        return Err(IdempotencyError::KeyReused.into());
    }
    if let (Some(status), Some(body)) = (row.response_status, row.response) {
        outcome("replayed");
        return Ok(Start::Replay(Stored {
            status: u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK),
            body: match body {
                Value::String(text) => text,
                other => other.to_string(),
            },
        }));
    }
    if row.lease_until.is_some_and(|until| until > now) {
        outcome("in_progress");
        return Err(IdempotencyError::InProgress.into());
    }
    repo::lease(&mut *tx, &key, row.lease_id, run, lease_until, now).await?;
    tx.commit().await?;
    outcome("resumed");
    tracing::info!(idempotency_key = %key.key, previous_run = ?row.lease_id, run = %attempt.run,
        operation, "resuming a request whose process died");
    Ok(Start::Run(Claim {
        key,
        attempt: Attempt {
            run: attempt.run,
            resumes: Some(Resume {
                previous_run: row.lease_id,
                since: row.created_at,
            }),
        },
    }))
}

impl Claim {
    /// Runs `work` detached, renewing the lease meanwhile, then records its answer (`render`
    /// gives the body's text) or frees the key as the module comment says.
    pub async fn run<T, W, R>(
        self,
        services: &Services,
        work: W,
        render: R,
    ) -> Result<T, UseCaseError>
    where
        T: Send + 'static,
        W: Future<Output = Result<T, UseCaseError>> + Send + 'static,
        R: FnOnce(&Result<T, UseCaseError>) -> String + Send + 'static,
    {
        let services = services.clone();
        let tasks = services.tasks.clone();
        tasks
            .run("idempotent_request", async move {
                let result = tokio::select! {
                    result = work => result,
                    never = self.renew(&services) => match never {},
                };
                let settlement = settlement(&result, render);
                self.settle(&services, settlement).await;
                result
            })
            .await?
    }

    /// Renews the lease every minute; never returns (the run's end stops it).
    async fn renew(&self, services: &Services) -> std::convert::Infallible {
        let run = self.attempt.run;
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let now = Utc::now();
            match repo::lease(&services.db, &self.key, Some(run), run, now + LEASE, now).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(idempotency_key = %self.key.key, run = %run,
                    "the lease of an idempotent request was taken over"),
                Err(err) => tracing::warn!(idempotency_key = %self.key.key, error = %Chain(&err),
                    "could not renew the lease of an idempotent request"),
            }
        }
    }

    async fn settle(&self, services: &Services, settlement: Settlement) {
        let (db, key, run, now) = (&services.db, &self.key, self.attempt.run, Utc::now());
        let recorded = match settlement {
            Settlement::Record(status, body) => {
                let body = Value::String(body);
                repo::finish(db, key, run, i32::from(status.as_u16()), &body, now).await
            }
            // The lease lapses now, so a repeat resumes what this run may have done.
            Settlement::Release => repo::lease(db, key, Some(run), run, now, now).await,
            Settlement::Forget => repo::forget(db, key, run).await.map(|()| true),
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!(idempotency_key = %key.key, run = %run,
                "the answer of an idempotent request was not recorded: its lease was taken over"),
            // The lease lapses on its own; a repeat then resumes and reports what was done.
            Err(err) => tracing::error!(idempotency_key = %key.key, error = %Chain(&err),
                "could not record the answer of an idempotent request"),
        }
    }
}

/// What a finished run leaves on its row.
enum Settlement {
    /// The answer is final: replay it.
    Record(StatusCode, String),
    /// A 5xx: the run may have done part of the work; a repeat resumes it.
    Release,
    /// A refusal a repeat may get past, with nothing done: the key is unused again.
    Forget,
}

fn settlement<T>(
    result: &Result<T, UseCaseError>,
    render: impl FnOnce(&Result<T, UseCaseError>) -> String,
) -> Settlement {
    let status = match result {
        Ok(_) => StatusCode::OK,
        Err(UseCaseError::Assign(AssignError::StudentsBeingEnrolled { .. })) => {
            return Settlement::Forget;
        }
        Err(err) if err.answer().status.is_server_error() => return Settlement::Release,
        Err(err) => err.answer().status,
    };
    Settlement::Record(status, render(result))
}

/// Step 6 of the expiry job: deletes the rows past their retention.
pub async fn purge_expired(services: &Services, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    repo::purge_expired(&services.db, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(parts: &[&str]) -> Vec<u8> {
        let mut hash = RequestHash::new(Operation::Assign);
        for p in parts {
            hash.part(p.as_bytes());
        }
        hash.finish()
    }

    #[test]
    fn the_request_hash_separates_its_parts_and_operations() {
        assert_eq!(hash(&["ab", "c"]), hash(&["ab", "c"]));
        assert_ne!(hash(&["ab", "c"]), hash(&["a", "bc"]));
        let mut import = RequestHash::new(Operation::RosterImport);
        import.part(b"ab").part(b"c");
        assert_ne!(import.finish(), hash(&["ab", "c"]));
    }
}
