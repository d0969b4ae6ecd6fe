//! The saga recovery pass (worker pass 5, and step 6 of `expire-courses`; addendum §8.4): it
//! takes over sagas whose owner's lease lapsed and compensations that are due, and runs the
//! undos of their plan in reverse `seq` order, skipping settled steps. Every undo tolerates
//! "nothing to undo", so running one twice is harmless. A saga whose undo keeps failing is
//! retried with backoff and marked `failed` after its 12th attempt.
//!
//! Taking over an `assign_student` saga also releases the seats its assign run still reserves
//! without an enrolment (unless a saga of that run is still alive), so a retry can reserve them
//! at once instead of after the 30-minute reservation.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use super::plan::{Context, Plan, Progress, SagaKind, Step, StepState};
use super::{compensated, lease};
use crate::clients::ClientError;
use crate::domain::audit::{Actor, EventType};
use crate::domain::backoff::backoff;
use crate::repo;
use crate::repo::courses::CreationLock;
use crate::repo::sagas::SagaRow;
use crate::usecases::Services;
use crate::usecases::error::Chain;
use crate::usecases::events::{self, EventExt};

/// The attempt after which a saga that still cannot be compensated is `failed`.
pub const MAX_ATTEMPTS: i32 = 12;

/// What one recovery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoverySweep {
    pub leased: u64,
    pub compensated: u64,
    pub retried: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovered {
    Compensated,
    Retried,
    Failed,
    /// The lease was lost meanwhile (another replica took over): nothing recorded.
    Lost,
}

/// Leases at most `limit` due sagas and compensates each, at most `EXTERNAL_CONCURRENCY` at
/// once.
pub async fn recovery_pass(
    services: &Services,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<RecoverySweep, sqlx::Error> {
    let worker = Uuid::new_v4();
    let rows = repo::sagas::lease_due(&services.db, worker, lease(services), now, limit).await?;
    let mut sweep = RecoverySweep {
        leased: rows.len() as u64,
        ..RecoverySweep::default()
    };
    let concurrency = services.config.external_concurrency.max(1);
    let outcomes: Vec<Recovered> = futures::stream::iter(rows)
        .map(|row| recover(services, worker, row, now))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for outcome in outcomes {
        match outcome {
            Recovered::Compensated => sweep.compensated += 1,
            Recovered::Retried => sweep.retried += 1,
            Recovered::Failed => sweep.failed += 1,
            Recovered::Lost => {}
        }
    }
    Ok(sweep)
}

/// Refreshes `vlab_sagas_open{state}` (every worker pass).
pub async fn refresh_open_gauge(services: &Services) -> Result<(), sqlx::Error> {
    let counts = repo::sagas::count_open(&services.db).await?;
    for state in ["running", "compensating", "failed"] {
        let n = counts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("vlab_sagas_open", "state" => state).set(n as f64);
    }
    Ok(())
}

/// One saga: its plan undone from the last step back.
async fn recover(services: &Services, worker: Uuid, row: SagaRow, now: DateTime<Utc>) -> Recovered {
    let kind = SagaKind::parse(&row.kind);
    let (plan, context, kind) = match (
        Plan::from_json(&row.plan),
        serde_json::from_value::<Context>(row.context.clone()),
        kind,
    ) {
        (Ok(plan), Ok(context), Some(kind)) => (plan, context, kind),
        _ => {
            let error = "the saga's plan or context cannot be read".to_owned();
            return settle(
                services,
                worker,
                &row,
                None,
                &Progress::default(),
                Some(error),
                now,
            )
            .await;
        }
    };
    tracing::info!(saga_id = %row.id, kind = kind.as_str(), attempt = row.attempts, "saga recovery: compensating");

    if kind == SagaKind::AssignStudent {
        release_run_seats(services, &plan, now).await;
    }
    // A template deplete must never take the credits of a creation running for the same lab.
    let mut lock = if kind == SagaKind::CreateCourse {
        match CreationLock::acquire(&services.db, context.vlab_id).await {
            Ok(lock) => Some(lock),
            Err(err) => {
                let error = format!("could not take the course-creation lock: {}", Chain(&err));
                return settle(
                    services,
                    worker,
                    &row,
                    Some(kind),
                    &Progress::default(),
                    Some(error),
                    now,
                )
                .await;
            }
        }
    } else {
        None
    };

    let mut progress = Progress::from_json(&row.progress);
    let mut undo = Undo {
        services,
        saga_id: row.id,
        context: &context,
        lock: lock.as_mut(),
        account_exists: false,
    };
    let mut first_error = None;
    for step in plan.steps().iter().rev() {
        let current = progress.get(step.seq);
        if current.is_some_and(StepState::is_settled) {
            continue;
        }
        let attempted = current == Some(StepState::Attempted);
        let state = match undo.run(&step.step, attempted).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(saga_id = %row.id, seq = step.seq, %error, "saga recovery: an undo failed");
                first_error.get_or_insert(error);
                StepState::Failed
            }
        };
        progress.set(step.seq, state);
        let outcome = json!({ step.seq.to_string(): state });
        match repo::sagas::record_progress(&services.db, row.id, worker, &outcome, Utc::now()).await
        {
            Ok(true) => {}
            Ok(false) => return release_lock(lock, Recovered::Lost).await,
            Err(err) => {
                tracing::error!(saga_id = %row.id, error = %Chain(&err), "saga recovery: could not record a step");
            }
        }
    }
    let recovered = settle(
        services,
        worker,
        &row,
        Some(kind),
        &progress,
        first_error,
        now,
    )
    .await;
    release_lock(lock, recovered).await
}

async fn release_lock(lock: Option<CreationLock>, recovered: Recovered) -> Recovered {
    if let Some(lock) = lock {
        lock.release().await;
    }
    recovered
}

/// Seats of the saga's assign run that hold no enrolment go back (issue "reservations follow
/// their process"); a failure only leaves them to lapse.
async fn release_run_seats(services: &Services, plan: &Plan, now: DateTime<Utc>) {
    for step in plan.steps() {
        if let Step::SeatReservation { reservation_id, .. } = step.step {
            match repo::sagas::release_run_seats(&services.db, reservation_id, now).await {
                Ok(0) => {}
                Ok(released) => {
                    tracing::info!(run_id = %reservation_id, released, "saga recovery: released the abandoned run's reserved seats");
                }
                Err(err) => {
                    tracing::warn!(run_id = %reservation_id, error = %Chain(&err), "saga recovery: could not release the run's seats; they lapse by themselves");
                }
            }
        }
    }
}

/// The saga's final update for this attempt: compensated (with its event), retried later, or
/// failed after the last attempt.
async fn settle(
    services: &Services,
    worker: Uuid,
    row: &SagaRow,
    kind: Option<SagaKind>,
    progress: &Progress,
    error: Option<String>,
    now: DateTime<Utc>,
) -> Recovered {
    let outcomes = progress.to_json();
    let kind_label = kind.map_or_else(|| row.kind.clone(), |k| k.as_str().to_owned());
    let result = match &error {
        None => finish(services, worker, row, kind, &outcomes, now)
            .await
            .map(|done| {
                if done {
                    if let Some(kind) = kind {
                        compensated(row.id, kind);
                    }
                    Recovered::Compensated
                } else {
                    Recovered::Lost
                }
            }),
        Some(error) if row.attempts < MAX_ATTEMPTS => {
            let next = now + backoff(row.attempts);
            repo::sagas::retry_later(
                &services.db,
                row.id,
                worker,
                None,
                next,
                error,
                &outcomes,
                now,
            )
            .await
            .map(|done| if done { Recovered::Retried } else { Recovered::Lost })
        }
        Some(error) => {
            repo::sagas::mark_failed(&services.db, row.id, worker, error, &outcomes, now)
                .await
                .map(|done| {
                    if !done {
                        return Recovered::Lost;
                    }
                    tracing::error!(saga_id = %row.id, kind = %kind_label, attempts = row.attempts, plan = %row.plan, error, "saga failed: it could not be compensated; resolve it manually");
                    metrics::counter!("vlab_sagas_total", "kind" => kind_label.clone(), "outcome" => "failed")
                        .increment(1);
                    Recovered::Failed
                })
        }
    };
    result.unwrap_or_else(|err| {
        tracing::error!(saga_id = %row.id, error = %Chain(&err), "saga recovery: could not record the outcome; the lease lapses and it runs again");
        Recovered::Lost
    })
}

/// `compensated`, with `assignment_compensated` for a student's assignment, in one transaction.
async fn finish(
    services: &Services,
    worker: Uuid,
    row: &SagaRow,
    kind: Option<SagaKind>,
    outcomes: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = services.db.begin().await?;
    if !repo::sagas::finish_compensated(&mut *tx, row.id, worker, outcomes, now).await? {
        return Ok(false);
    }
    if kind == Some(SagaKind::AssignStudent)
        && let Ok(context) = serde_json::from_value::<Context>(row.context.clone())
        && let Some(course_id) = context.course_id
    {
        let mut event = events::event(
            course_id,
            EventType::AssignmentCompensated,
            &Actor::system(),
            now,
        )
        .seat(context.seat_id)
        .data(json!({
            "saga_id": row.id,
            "run_id": run_of(row),
            "reason": "recovered",
        }));
        if let Some(project_id) = context.project_id {
            event = event.project(project_id);
        }
        if let Some(student_id) = &context.student_id {
            event = event.student(student_id);
        }
        events::record(&mut *tx, &[event]).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The assign run (`reservation_id`) of a student's saga.
fn run_of(row: &SagaRow) -> Option<Uuid> {
    Plan::from_json(&row.plan).ok().and_then(|plan| {
        plan.steps().iter().find_map(|s| match s.step {
            Step::SeatReservation { reservation_id, .. } => Some(reservation_id),
            _ => None,
        })
    })
}

/// The undos of the plan's steps (the catalogue of addendum §8.3).
struct Undo<'a> {
    services: &'a Services,
    saga_id: Uuid,
    context: &'a Context,
    lock: Option<&'a mut CreationLock>,
    /// The project account is known to exist (the grant's deplete answered 2xx).
    account_exists: bool,
}

impl Undo<'_> {
    async fn run(&mut self, step: &Step, attempted: bool) -> Result<StepState, String> {
        let services = self.services;
        match step {
            Step::SeatReservation {
                seat_id,
                reservation_id,
            } => repo::seats::release(&services.db, *seat_id, *reservation_id)
                .await
                .map(undone_if)
                .map_err(|err| Chain(&err).to_string()),
            Step::KcCreateGroup { name } => {
                let found = services.keycloak.find_group(name).await.map_err(text)?;
                let Some(id) = found else {
                    return Ok(StepState::NothingToUndo);
                };
                services.keycloak.delete_group(&id).await.map_err(text)?;
                tracing::info!(saga_id = %self.saga_id, group = %name, group_id = %id, "compensation: group deleted");
                Ok(StepState::Undone)
            }
            Step::AccGrant { project_id, .. } => {
                if !attempted {
                    return Ok(StepState::NothingToUndo);
                }
                match services.accounting.deplete_project(*project_id).await {
                    Ok(amount) => {
                        self.account_exists = true;
                        tracing::info!(saga_id = %self.saga_id, project_id = %project_id, %amount, "compensation: project depleted");
                        Ok(StepState::Undone)
                    }
                    Err(err) if err.is_not_found() => Ok(StepState::NothingToUndo),
                    Err(err) => Err(text(err)),
                }
            }
            Step::AccCreateProjectAccount { project_id } => {
                if !self.account_exists {
                    match services.accounting.project_balance(*project_id).await {
                        Ok(_) => {}
                        Err(err) if err.is_not_found() => return Ok(StepState::NothingToUndo),
                        Err(err) => return Err(text(err)),
                    }
                }
                tracing::error!(saga_id = %self.saga_id, account_id = %project_id, "orphan accounting account (project) {project_id}; reconcile manually");
                Ok(StepState::Undone)
            }
            Step::AccCreateVlabAccount { vlab_id } => {
                match services.accounting.vlab_balance(*vlab_id).await {
                    Ok(_) => {}
                    Err(err) if err.is_not_found() => return Ok(StepState::NothingToUndo),
                    Err(err) => return Err(text(err)),
                }
                tracing::error!(saga_id = %self.saga_id, account_id = %vlab_id, "orphan accounting account (virtual-lab) {vlab_id}; reconcile manually");
                Ok(StepState::Undone)
            }
            Step::TemplateGrant { project_id, amount } => {
                if !attempted {
                    return Ok(StepState::NothingToUndo);
                }
                self.template_deplete(*project_id, *amount).await
            }
        }
    }

    /// Under the lab's creation lock: a course created since (for this lab or this template)
    /// may own the template's credits, so the surplus is only logged; otherwise the template
    /// is depleted.
    async fn template_deplete(
        &mut self,
        project_id: Uuid,
        amount: i64,
    ) -> Result<StepState, String> {
        let vlab_id = self.context.vlab_id;
        let Some(lock) = self.lock.as_deref_mut() else {
            return Err("the course-creation lock is not held".to_owned());
        };
        let conn = lock.conn().map_err(|err| Chain(&err).to_string())?;
        let taken = repo::courses::lab_or_template_taken(conn, vlab_id, project_id)
            .await
            .map_err(|err| Chain(&err).to_string())?;
        if taken {
            tracing::error!(saga_id = %self.saga_id, template_project_id = %project_id, "template project {project_id} may hold {amount} surplus credits from an abandoned course creation; reconcile manually");
            return Ok(StepState::NothingToUndo);
        }
        match self.services.accounting.deplete_project(project_id).await {
            Ok(depleted) => {
                tracing::info!(saga_id = %self.saga_id, template_project_id = %project_id, amount = %depleted, "compensation: template project depleted");
                Ok(StepState::Undone)
            }
            Err(err) if err.is_not_found() => Ok(StepState::NothingToUndo),
            Err(err) => Err(text(err)),
        }
    }
}

fn undone_if(done: bool) -> StepState {
    if done {
        StepState::Undone
    } else {
        StepState::NothingToUndo
    }
}

fn text(err: ClientError) -> String {
    err.to_string()
}
