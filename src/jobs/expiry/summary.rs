//! The one line of JSON the job prints (rules.md §8, "Summary").

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Serialize, Serializer};
use uuid::Uuid;

use crate::domain::datetime::serde_utc;
use crate::usecases::notices::{NoticeError, NoticesDue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Ok,
    Skipped,
    Partial,
    Error,
}

impl JobStatus {
    /// The status as printed and stored (`expiry_run.status`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Ok => "ok",
            JobStatus::Skipped => "skipped",
            JobStatus::Partial => "partial",
            JobStatus::Error => "error",
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            JobStatus::Ok | JobStatus::Skipped => 0,
            JobStatus::Partial => 2,
            JobStatus::Error => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CourseSummary {
    pub course_id: Uuid,
    pub status: String,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub end_date: Option<DateTime<Utc>>,
    pub enrolments_dropped: u64,
    pub enrolments_failed: u64,
    pub access_removals_pending: u64,
    pub vlab_depleted: bool,
    /// Credits moved back by this run for this course: the settled drops' project depletes
    /// plus the lab deplete's parsed `total_amount`.
    #[serde(serialize_with = "float")]
    pub credits_returned: Decimal,
    pub error: Option<String>,
}

/// A run that got the lock (or a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub job: &'static str,
    /// The run's id: its `expiry_run` row and the uuid of its request id.
    pub run_id: Uuid,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub finished_at: DateTime<Utc>,
    pub expired_courses_found: u64,
    pub enrolments_dropped: u64,
    pub enrolments_failed: u64,
    pub access_removals_completed: u64,
    pub access_removals_failed: u64,
    /// Routine R (addendum §3.5): revocations moved to `done` in this run.
    pub access_revocations_completed: u64,
    /// Revocations still pending whose attempt in this run failed.
    pub access_revocations_failed: u64,
    /// The saga recovery (addendum §8.4): sagas that became `compensated` in this run.
    pub sagas_compensated: u64,
    /// Sagas that became `failed` in this run (their 12th attempt failed).
    pub sagas_failed: u64,
    pub vlabs_depleted: u64,
    pub vlab_depletions_failed: u64,
    /// The sum of the courses' `credits_returned`.
    #[serde(serialize_with = "float")]
    pub credits_returned: Decimal,
    pub emails_sent: u64,
    pub emails_failed: u64,
    /// Stale top-ups (a lapsed lease while granting) marked `in_doubt` in this run.
    pub top_ups_marked_in_doubt: u64,
    /// Audit events deleted by the retention purge.
    pub course_events_purged: u64,
    /// Set when a purge batch failed (the next run continues).
    pub course_events_purge_error: Option<String>,
    /// Replay records of `Idempotency-Key` requests deleted after their 24 hours.
    pub idempotent_requests_purged: u64,
    /// Step 5b: notice rows queued, courses whose notices failed, and why.
    pub notices_queued: u64,
    pub notices_failed: u64,
    pub notice_errors: Vec<NoticeError>,
    /// Dry run only: what step 5b would queue notices for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notices_due: Option<NoticesDue>,
    pub courses: Vec<CourseSummary>,
}

impl RunSummary {
    pub fn new(run_id: Uuid, started_at: DateTime<Utc>, dry_run: bool) -> Self {
        Self {
            job: JOB,
            run_id,
            status: JobStatus::Ok,
            dry_run,
            started_at,
            finished_at: started_at,
            expired_courses_found: 0,
            enrolments_dropped: 0,
            enrolments_failed: 0,
            access_removals_completed: 0,
            access_removals_failed: 0,
            access_revocations_completed: 0,
            access_revocations_failed: 0,
            sagas_compensated: 0,
            sagas_failed: 0,
            vlabs_depleted: 0,
            vlab_depletions_failed: 0,
            credits_returned: Decimal::ZERO,
            emails_sent: 0,
            emails_failed: 0,
            top_ups_marked_in_doubt: 0,
            course_events_purged: 0,
            course_events_purge_error: None,
            idempotent_requests_purged: 0,
            notices_queued: 0,
            notices_failed: 0,
            notice_errors: Vec::new(),
            notices_due: None,
            courses: Vec::new(),
        }
    }

    /// `partial` when anything failed and will be retried next run, else `ok`.
    pub fn settle_status(&mut self) {
        let failed = self.enrolments_failed
            + self.access_removals_failed
            + self.access_revocations_failed
            + self.sagas_failed
            + self.vlab_depletions_failed
            + self.emails_failed
            + self.notices_failed
            > 0
            || self.course_events_purge_error.is_some()
            || self.courses.iter().any(|c| c.error.is_some());
        self.status = if failed {
            JobStatus::Partial
        } else {
            JobStatus::Ok
        };
    }
}

pub const JOB: &str = "expire-courses";

/// Credit amounts are printed as JSON numbers, like the other amounts of the API.
fn float<S: Serializer>(amount: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(amount.to_f64().unwrap_or_default())
}

/// Another instance held the lock: only these four keys are printed.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedSummary {
    pub job: &'static str,
    pub status: JobStatus,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub finished_at: DateTime<Utc>,
}

/// The job could not run.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorSummary {
    pub job: &'static str,
    pub status: JobStatus,
    pub error: String,
}

impl ErrorSummary {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            job: JOB,
            status: JobStatus::Error,
            error: error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_failure_makes_the_run_partial() {
        let mut s = RunSummary::new(Uuid::nil(), Utc::now(), false);
        s.settle_status();
        assert_eq!(s.status, JobStatus::Ok);
        s.emails_failed = 1;
        s.settle_status();
        assert_eq!(s.status, JobStatus::Partial);
        assert_eq!(s.status.exit_code(), 2);
        let mut s = RunSummary::new(Uuid::nil(), Utc::now(), false);
        s.course_events_purge_error = Some("x".to_owned());
        s.settle_status();
        assert_eq!(s.status, JobStatus::Partial);
    }

    #[test]
    fn run_id_and_credits_are_printed_as_a_uuid_and_a_number() {
        let id = Uuid::from_u128(7);
        let mut s = RunSummary::new(id, Utc::now(), false);
        s.credits_returned = Decimal::new(231_050, 2);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["run_id"], id.to_string());
        assert_eq!(v["credits_returned"], 2310.5);
        assert_eq!(JobStatus::Partial.as_str(), "partial");
    }

    #[test]
    fn dry_run_appears_only_when_set() {
        let s = RunSummary::new(Uuid::nil(), Utc::now(), false);
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("dry_run").is_none());
        let v = serde_json::to_value(RunSummary::new(Uuid::nil(), Utc::now(), true)).unwrap();
        assert_eq!(v["dry_run"], true);
        assert_eq!(v["job"], "expire-courses");
    }
}
