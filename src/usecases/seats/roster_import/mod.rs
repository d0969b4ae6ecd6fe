//! `POST /seats/courses/{course_id}/roster-import?dry_run=` (round2.md §5): enrol the rows of a
//! CSV roster through assign. Each row gets a verdict; the request fails only on the file's
//! syntax (422, in the HTTP layer) and on assign's request-level checks (409).
//!
//! * The dry run reads once (one read-only snapshot: the course, its lab, the matching
//!   enrolments with their drops, the live reservations, the taken project names and the
//!   count of available seats), takes no lock, calls nothing and writes nothing.
//! * The real run is assign in partial mode: under the course `FOR UPDATE` lock the same read
//!   classifies the rows (no 409 for duplicates or seats), the rows that remain take seats in
//!   file order, and those are provisioned exactly as assign provisions its students.
//!
//! A row's natural key is (`student_id`, e-mail), so posting the same file again turns the
//! rows enrolled before into `unchanged` and retries only the others: the file is the retry
//! unit.

mod classify;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::domain::caller::Caller;
use crate::repo;
use crate::repo::seats::SeatReservation;
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;
use crate::usecases::events::{self, EventExt};
use crate::usecases::idempotency::{Attempt, Operation, RequestHash, Resume};
use crate::usecases::seats::assign::reserve::{RESERVATION, open_lab, release_dead_run};
use crate::usecases::seats::assign::{
    self, Enrolled, NameCheck, Reservation, Run, Source, Student, StudentFailure,
};
use classify::{CourseState, Existing};

/// The largest roster (README §5.1, as for assign).
pub const MAX_ROWS: usize = 1000;

/// One counted data row of the file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// The spreadsheet row: the header is row 1, and skipped blank records still count.
    pub row: usize,
    /// The trimmed cells, `None` when empty.
    pub student_id: Option<String>,
    pub email: Option<String>,
    /// The row as assign validates a student, or the `invalid_row` message.
    pub parsed: Result<Student, String>,
}

/// A parsed roster file.
#[derive(Debug, Clone)]
pub struct RosterFile {
    pub rows: Vec<ImportRow>,
    /// Recorded in the audit event only.
    pub filename: Option<String>,
    /// The SHA-256 of the text as posted, in hex (recorded in the audit event).
    pub sha256: String,
}

/// A row's verdict (round2.md §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    InvalidRow(String),
    DuplicateInFile(String),
    Unchanged {
        enrolment_id: Uuid,
        seat_id: Option<Uuid>,
        project_id: Uuid,
    },
    AlreadyEnrolled(String),
    InProgress(String),
    ProjectNameTaken(String),
    NotEnoughSeats(String),
    WouldAssign,
    Assigned {
        seat_id: Uuid,
        enrolled: Enrolled,
    },
    Failed {
        seat_id: Uuid,
        failure: StudentFailure,
    },
}

impl Verdict {
    /// The `verdict` key.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::InvalidRow(_) => "invalid_row",
            Verdict::DuplicateInFile(_) => "duplicate_in_file",
            Verdict::Unchanged { .. } => "unchanged",
            Verdict::AlreadyEnrolled(_) => "already_enrolled",
            Verdict::InProgress(_) => "in_progress",
            Verdict::ProjectNameTaken(_) => "project_name_taken",
            Verdict::NotEnoughSeats(_) => "not_enough_seats",
            Verdict::WouldAssign => "would_assign",
            Verdict::Assigned { .. } => "assigned",
            Verdict::Failed { .. } => "failed",
        }
    }

    /// The `message` key.
    pub fn message(&self) -> Option<String> {
        match self {
            Verdict::InvalidRow(m)
            | Verdict::DuplicateInFile(m)
            | Verdict::AlreadyEnrolled(m)
            | Verdict::InProgress(m)
            | Verdict::ProjectNameTaken(m)
            | Verdict::NotEnoughSeats(m) => Some(m.clone()),
            Verdict::Unchanged { enrolment_id, .. } => {
                Some(format!("Already enrolled (enrolment {enrolment_id})"))
            }
            Verdict::Failed { failure, .. } => Some(failure.to_string()),
            Verdict::WouldAssign | Verdict::Assigned { .. } => None,
        }
    }

    /// Whether posting the row again may succeed without editing it.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Verdict::InProgress(_) | Verdict::NotEnoughSeats(_) | Verdict::Failed { .. }
        )
    }

    /// Counted in `rejected`: the row cannot be enrolled as written.
    fn rejected(&self) -> bool {
        matches!(
            self,
            Verdict::InvalidRow(_)
                | Verdict::DuplicateInFile(_)
                | Verdict::AlreadyEnrolled(_)
                | Verdict::ProjectNameTaken(_)
        )
    }
}

/// One row's answer, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowResult {
    pub row: usize,
    pub student_id: Option<String>,
    pub email: Option<String>,
    pub verdict: Verdict,
}

/// The counts of `summary`; every row is in exactly one of the verdict counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: usize,
    pub would_assign: usize,
    pub assigned: usize,
    pub unchanged: usize,
    pub rejected: usize,
    pub in_progress: usize,
    pub not_enough_seats: usize,
    pub failed: usize,
    pub available_seats: usize,
}

/// What an import (or its dry run) found and did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub import_id: Uuid,
    pub dry_run: bool,
    pub evaluated_at: DateTime<Utc>,
    /// The available seats counted when the rows were paired with seats.
    pub available_seats: usize,
    pub results: Vec<RowResult>,
}

impl ImportOutcome {
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            rows: self.results.len(),
            available_seats: self.available_seats,
            ..Summary::default()
        };
        for r in &self.results {
            let count = match &r.verdict {
                v if v.rejected() => &mut s.rejected,
                Verdict::Unchanged { .. } => &mut s.unchanged,
                Verdict::InProgress(_) => &mut s.in_progress,
                Verdict::NotEnoughSeats(_) => &mut s.not_enough_seats,
                Verdict::WouldAssign => &mut s.would_assign,
                Verdict::Assigned { .. } => &mut s.assigned,
                _ => &mut s.failed,
            };
            *count += 1;
        }
        s
    }
}

/// The hash an `Idempotency-Key` of a real run binds to: the file's text (its SHA-256) and
/// its file name.
pub fn request_hash(file: &RosterFile) -> Vec<u8> {
    let mut hash = RequestHash::new(Operation::RosterImport);
    hash.part(file.sha256.as_bytes())
        .part(file.filename.as_deref().unwrap_or_default().as_bytes());
    hash.finish()
}

/// What the import would do now; reads one snapshot and changes nothing.
pub async fn dry_run(
    services: &Services,
    course_id: Uuid,
    file: &RosterFile,
) -> Result<ImportOutcome, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    // One consistent snapshot for every read, and a guarantee that nothing is written.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let course = repo::courses::find(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    let lab = open_lab(&mut tx, &course, now).await?;
    let state = course_state(&mut tx, course_id, lab.id, now, &file.rows).await?;
    let available = usize::try_from(repo::seats::count_available(&mut *tx, course_id, now).await?)
        .unwrap_or_default();
    tx.commit().await?;

    let mut verdicts = classify::classify(&file.rows, &state);
    let pending = verdicts.iter().filter(|v| v.is_none()).count();
    let mut paired = 0;
    for verdict in verdicts.iter_mut().filter(|v| v.is_none()) {
        *verdict = Some(if paired < available {
            paired += 1;
            Verdict::WouldAssign
        } else {
            classify::no_seat(available, pending)
        });
    }
    let outcome = outcome(Uuid::new_v4(), true, now, available, &file.rows, verdicts);
    observe(course_id, &outcome);
    Ok(outcome)
}

/// The real run: reserve in partial mode, then provision the reserved rows as assign does.
/// Runs detached, so a disconnect or the request timeout never cuts it short.
/// A resumed attempt reports the rows its dead run enrolled as `assigned` (not `unchanged`),
/// and retries the others.
pub async fn import(
    services: &Services,
    caller: &Caller,
    course_id: Uuid,
    file: RosterFile,
    attempt: Attempt,
) -> Result<ImportOutcome, UseCaseError> {
    let services = services.clone();
    // A lab admin who is also a service admin is recorded as the service admin.
    let actor = Actor::staff(caller);
    let caller = caller.sub;
    let tasks = services.tasks.clone();
    tasks
        .run("roster_import", async move {
            let (run_id, now, import_id) = (attempt.run, Utc::now(), Uuid::new_v4());
            let reserved = reserve(
                &services,
                course_id,
                run_id,
                now,
                &file.rows,
                attempt.resumes,
            )
            .await?;
            let mut verdicts = reserved.verdicts;
            let (indexes, students): (Vec<usize>, Vec<Student>) =
                reserved.students.into_iter().unzip();
            if !students.is_empty() {
                let rows = indexes
                    .iter()
                    .zip(&students)
                    .map(|(i, s)| (s.student_id.clone(), file.rows[*i].row))
                    .collect::<HashMap<_, _>>();
                let run = Run {
                    caller,
                    actor: actor.clone(),
                    id: run_id,
                    now,
                    source: Source::RosterImport { import_id, rows },
                };
                let results = assign::provision_reserved(
                    services.clone(),
                    run,
                    reserved.reservation,
                    students,
                    NameCheck::Done,
                )
                .await;
                for (index, result) in indexes.into_iter().zip(results) {
                    verdicts[index] = Some(match result.outcome {
                        Ok(enrolled) => Verdict::Assigned {
                            seat_id: result.seat_id,
                            enrolled,
                        },
                        Err(failure) => Verdict::Failed {
                            seat_id: result.seat_id,
                            failure,
                        },
                    });
                }
            }
            let outcome = outcome(
                import_id,
                false,
                now,
                reserved.available,
                &file.rows,
                verdicts,
            );
            record_import(&services, &actor, course_id, &file, &outcome).await;
            observe(course_id, &outcome);
            Ok(outcome)
        })
        .await?
}

/// What the reserve transaction decided.
struct Reserved {
    /// The verdict of every row that took no seat; `None` for the reserved rows.
    verdicts: Vec<Option<Verdict>>,
    /// The reserved rows (index into the file's rows, student), in file order.
    students: Vec<(usize, Student)>,
    reservation: Reservation,
    available: usize,
}

/// Assign step A in partial mode: under the course `FOR UPDATE` lock, the rows are classified
/// (the duplicate and project-name queries give verdicts instead of a 409) and the remaining
/// ones reserve `min(k, available)` seats, paired in file order.
async fn reserve(
    services: &Services,
    course_id: Uuid,
    run_id: Uuid,
    now: DateTime<Utc>,
    rows: &[ImportRow],
    resumes: Option<Resume>,
) -> Result<Reserved, UseCaseError> {
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_update(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    let lab = open_lab(&mut tx, &course, now).await?;
    if let Some(resume) = resumes {
        release_dead_run(&mut tx, course_id, resume).await?;
    }
    let state = course_state(&mut tx, course_id, lab.id, now, rows).await?;
    let mut verdicts = classify::classify(rows, &state);
    if let Some(resume) = resumes {
        let credits = course.credits_per_seat;
        report_resumed(&mut tx, course_id, resume, credits, rows, &mut verdicts).await?;
    }
    let pending: Vec<usize> = (0..rows.len()).filter(|i| verdicts[*i].is_none()).collect();
    let available = usize::try_from(repo::seats::count_available(&mut *tx, course_id, now).await?)
        .unwrap_or_default();

    let wanted = pending.len().min(available);
    let seats = if wanted == 0 {
        Vec::new()
    } else {
        repo::seats::lock_available(&mut *tx, course_id, now, wanted as i64).await?
    };
    let mut students = Vec::with_capacity(seats.len());
    let mut pairs = Vec::with_capacity(seats.len());
    for (position, index) in pending.iter().enumerate() {
        let (Some(seat_id), Ok(student)) = (seats.get(position), &rows[*index].parsed) else {
            verdicts[*index] = Some(classify::no_seat(seats.len(), pending.len()));
            continue;
        };
        pairs.push(SeatReservation {
            seat_id: *seat_id,
            student_id: student.student_id.clone(),
            email: student.email.clone(),
        });
        students.push((*index, student.clone()));
    }
    if !pairs.is_empty() {
        repo::seats::reserve(&mut *tx, run_id, now + RESERVATION, &pairs).await?;
    }
    tx.commit().await?;
    let seats = pairs.iter().map(|p| p.seat_id).collect();
    Ok(Reserved {
        verdicts,
        students,
        reservation: Reservation { course, lab, seats },
        available,
    })
}

/// A resumed attempt: the `unchanged` rows whose enrolment was made since the request was
/// first received were enrolled by its dead run, and are reported `assigned`, as that run
/// would have reported them.
async fn report_resumed(
    db: &mut PgConnection,
    course_id: Uuid,
    resume: Resume,
    credits: i32,
    rows: &[ImportRow],
    verdicts: &mut [Option<Verdict>],
) -> Result<(), sqlx::Error> {
    let unchanged: Vec<&Student> = rows
        .iter()
        .zip(verdicts.iter())
        .filter_map(|(row, verdict)| match (verdict, &row.parsed) {
            (Some(Verdict::Unchanged { .. }), Ok(student)) => Some(student),
            _ => None,
        })
        .collect();
    if unchanged.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = unchanged.iter().map(|s| s.student_id.clone()).collect();
    let emails: Vec<String> = unchanged.iter().map(|s| s.email.to_lowercase()).collect();
    let held = repo::enrolments::held_by(&mut *db, course_id, &ids, &emails).await?;
    for verdict in verdicts.iter_mut() {
        let Some(Verdict::Unchanged { enrolment_id, .. }) = verdict else {
            continue;
        };
        let Some(h) = held.iter().find(|h| h.id == *enrolment_id) else {
            continue;
        };
        if h.created_at >= resume.since {
            *verdict = Some(Verdict::Assigned {
                seat_id: h.seat_id,
                enrolled: Enrolled {
                    enrolment_id: h.id,
                    project_id: h.project_id,
                    credits,
                    email_sent: h.email_sent,
                },
            });
        }
    }
    Ok(())
}

/// Step 4: the course-level `roster_imported` event, in its own short transaction once every
/// row is done. The rows are committed already, so a failure here is logged, not answered.
async fn record_import(
    services: &Services,
    actor: &Actor,
    course_id: Uuid,
    file: &RosterFile,
    outcome: &ImportOutcome,
) {
    let s = outcome.summary();
    let event = events::event(
        course_id,
        EventType::RosterImported,
        actor,
        outcome.evaluated_at,
    )
    .data(json!({
        "import_id": outcome.import_id,
        "filename": file.filename,
        "sha256": file.sha256,
        "counts": {
            "rows": s.rows, "assigned": s.assigned, "unchanged": s.unchanged,
            "rejected": s.rejected, "in_progress": s.in_progress,
            "not_enough_seats": s.not_enough_seats, "failed": s.failed,
            "available_seats": s.available_seats,
        },
    }));
    let recorded = async {
        let mut tx = services.db.begin().await?;
        events::record(&mut *tx, &[event]).await?;
        tx.commit().await
    };
    if let Err(err) = recorded.await {
        tracing::error!(import_id = %outcome.import_id, error = %err, "roster import: the roster_imported event could not be saved");
    }
}

/// The rows metric and the `info` line (ids and counts only).
fn observe(course_id: Uuid, outcome: &ImportOutcome) {
    let dry_run = if outcome.dry_run { "true" } else { "false" };
    for r in &outcome.results {
        metrics::counter!("vlab_roster_import_rows_total", "dry_run" => dry_run, "verdict" => r.verdict.name())
            .increment(1);
    }
    let s = outcome.summary();
    tracing::info!(import_id = %outcome.import_id, course_id = %course_id, dry_run = outcome.dry_run,
        rows = s.rows, would_assign = s.would_assign, assigned = s.assigned, unchanged = s.unchanged,
        rejected = s.rejected, in_progress = s.in_progress, not_enough_seats = s.not_enough_seats,
        failed = s.failed, "roster import");
}

/// The enrolments, live reservations and taken project names that match the rows passing the
/// file checks.
async fn course_state(
    db: &mut PgConnection,
    course_id: Uuid,
    vlab_id: Uuid,
    now: DateTime<Utc>,
    rows: &[ImportRow],
) -> Result<CourseState, sqlx::Error> {
    let candidates = classify::candidates(rows);
    if candidates.is_empty() {
        return Ok(CourseState::default());
    }
    let ids: Vec<String> = candidates.iter().map(|s| s.student_id.clone()).collect();
    let emails: Vec<String> = candidates.iter().map(|s| s.email.to_lowercase()).collect();
    let enrolments = repo::enrolments::matching(&mut *db, course_id, &ids, &emails)
        .await?
        .into_iter()
        .map(|e| Existing {
            enrolment_id: e.id,
            student_id: e.student_id,
            email: e.contact_email,
            project_id: e.project_id,
            seat_id: e.seat_id,
            dropped: e.dropped,
        })
        .collect();
    let reservations =
        repo::seats::reserved_duplicates(&mut *db, course_id, now, &ids, &emails).await?;
    let taken_names = repo::projects::taken_names(&mut *db, vlab_id, &ids)
        .await?
        .into_iter()
        .collect();
    Ok(CourseState {
        enrolments,
        reservations,
        taken_names,
    })
}

fn outcome(
    import_id: Uuid,
    dry_run: bool,
    now: DateTime<Utc>,
    available: usize,
    rows: &[ImportRow],
    verdicts: Vec<Option<Verdict>>,
) -> ImportOutcome {
    let results = rows
        .iter()
        .zip(verdicts)
        .map(|(row, verdict)| RowResult {
            row: row.row,
            student_id: row.student_id.clone(),
            email: row.email.clone(),
            // Every row has a verdict by now; a gap would be a bug, reported as not saved.
            verdict: verdict.unwrap_or(Verdict::Failed {
                seat_id: Uuid::nil(),
                failure: StudentFailure::NotSaved,
            }),
        })
        .collect();
    ImportOutcome {
        import_id,
        dry_run,
        evaluated_at: now,
        available_seats: available,
        results,
    }
}
