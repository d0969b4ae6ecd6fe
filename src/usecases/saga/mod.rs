//! The durable saga journal (addendum F7, §8.4): a journaled use case writes its plan before
//! the first external call ([`Saga::open`]), fences the row before each credit-creating call
//! ([`Saga::fence`]), deletes it in its final transaction ([`Saga::commit`]) and, on a normal
//! failure, compensates in process and records each undo's outcome ([`Saga::compensate`]).
//! Whatever a crashed or stalled process leaves behind, the [`recovery`] pass compensates from
//! the plan once the lease has lapsed.
//!
//! A process that lost its lease (the recovery fenced it) neither grants nor commits, and drops
//! its in-memory undos unrun: the recovery owns the compensation.

pub mod plan;
pub mod recovery;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::clients::{IdempotencyKey, request_context};
use crate::domain::backoff::backoff;
use crate::repo;
use crate::repo::sagas::NewSaga;
use crate::usecases::Services;
use crate::usecases::error::Chain;
use crate::usecases::ledger::{Ledger, UndoOutcome};
pub use plan::{Context, Plan, Progress, SagaKind, Step, StepState};

/// The journal of one unit of work in flight, owned by this process.
pub struct Saga {
    id: Uuid,
    /// The lease id of the forward path.
    owner: Uuid,
    kind: SagaKind,
    plan: Plan,
    services: Services,
}

/// The outcome of an in-process compensation: what each plan step is now, and the first undo
/// failure (the recovery finishes those steps).
#[derive(Debug, Clone, Default)]
pub struct Undone {
    pub progress: Progress,
    pub error: Option<String>,
}

impl Saga {
    /// Writes the plan: one autocommit statement before the first external call. If it fails,
    /// the use case fails before any side effect.
    pub async fn open(
        services: &Services,
        kind: SagaKind,
        plan: Plan,
        mut context: Context,
        now: DateTime<Utc>,
    ) -> Result<Self, sqlx::Error> {
        context.request_id = context.request_id.or_else(request_context::current);
        let saga = Self {
            id: Uuid::new_v4(),
            owner: Uuid::new_v4(),
            kind,
            plan,
            services: services.clone(),
        };
        let (plan, context) = (saga.plan.to_json(), context.to_json());
        let row = NewSaga {
            id: saga.id,
            kind: kind.as_str(),
            plan: &plan,
            context: &context,
            owner: saga.owner,
        };
        repo::sagas::insert(&services.db, &row, saga.lease(), now)
            .await
            .inspect_err(|err| {
                tracing::error!(kind = kind.as_str(), error = %Chain(err), "could not open the saga");
            })?;
        Ok(saga)
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The `Idempotency-Key` of the accounting `POST` of step `seq`.
    pub fn key(&self, seq: u32) -> IdempotencyKey {
        IdempotencyKey::saga_step(self.id, seq)
    }

    /// The `seq` of the first plan step matching `wanted`.
    pub fn seq_of(&self, wanted: impl Fn(&Step) -> bool) -> Option<u32> {
        self.plan
            .steps()
            .iter()
            .find(|s| wanted(&s.step))
            .map(|s| s.seq)
    }

    fn lease(&self) -> chrono::Duration {
        lease(&self.services)
    }

    /// Fence, mark and renew before the credit-creating step `seq`: true when this process
    /// still owns the saga and may make the call; false when the recovery took over (or the
    /// journal could not be written), and the call must not be made.
    pub async fn fence(&self, seq: u32) -> bool {
        let now = Utc::now();
        match repo::sagas::fence(
            &self.services.db,
            self.id,
            self.owner,
            seq,
            self.lease(),
            now,
        )
        .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(saga_id = %self.id, kind = self.kind.as_str(), seq, "saga fenced: the recovery took it over; not making the call");
                false
            }
            Err(err) => {
                tracing::error!(saga_id = %self.id, seq, error = %Chain(&err), "could not fence the saga; not making the call");
                false
            }
        }
    }

    /// The commit point, inside the use case's final transaction: true when the row is gone
    /// with it. False means the recovery took over: roll the transaction back.
    pub async fn commit(&self, tx: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let deleted = repo::sagas::delete_committed(&mut *tx, self.id, self.owner).await?;
        if !deleted {
            tracing::warn!(saga_id = %self.id, kind = self.kind.as_str(), "saga fenced at its commit: the recovery took it over");
        }
        Ok(deleted)
    }

    /// Counts a committed saga (call after the final transaction committed).
    pub fn committed(&self) {
        metrics::counter!("vlab_sagas_total", "kind" => self.kind.as_str(), "outcome" => "committed")
            .increment(1);
    }

    /// In-process compensation for a use case without steps of its own beyond the ledger's:
    /// runs the ledger if this process still owns the saga and records the outcome; otherwise
    /// drops the undos unrun (the recovery owns them).
    pub async fn compensate(&self, ledger: &mut Ledger, reason: &str) {
        let now = Utc::now();
        match self.take_compensation(now).await {
            Some(true) => {
                let undone = self.undo(ledger, reason).await;
                if let Err(err) = self.finish(&self.services.db, &undone, now).await {
                    tracing::error!(saga_id = %self.id, error = %Chain(&err), "could not record the compensation; the recovery redoes it");
                }
            }
            Some(false) => ledger.forget(),
            None => {
                ledger.compensate(reason).await;
            }
        }
    }

    /// Moves the saga to `compensating` for this process: `Some(true)` when it still owned it,
    /// `Some(false)` when the recovery took over, `None` when the journal could not be written
    /// (the undos then run unrecorded, and the recovery redoes them: every undo is idempotent).
    pub async fn take_compensation(&self, now: DateTime<Utc>) -> Option<bool> {
        match repo::sagas::start_compensating(
            &self.services.db,
            self.id,
            self.owner,
            self.lease(),
            now,
        )
        .await
        {
            Ok(owned) => {
                if !owned {
                    tracing::warn!(saga_id = %self.id, kind = self.kind.as_str(), "saga fenced: the recovery owns its compensation");
                }
                Some(owned)
            }
            Err(err) => {
                tracing::error!(saga_id = %self.id, error = %Chain(&err), "could not start the saga's compensation");
                None
            }
        }
    }

    /// Runs the ledger and maps each outcome to its plan step: `undone` when its undo ran and
    /// succeeded, `failed` when it failed, `nothing_to_undo` when none was pushed (or it was
    /// discarded after a definite failure). `seat_reservation` is left to the caller.
    pub async fn undo(&self, ledger: &mut Ledger, reason: &str) -> Undone {
        let outcomes = ledger.compensate(reason).await;
        undone_from(&self.plan, &outcomes)
    }

    /// Records the in-process compensation: `compensated` when every step is settled, else
    /// the first recovery attempt is scheduled.
    pub async fn finish(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        undone: &Undone,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let progress = undone.progress.to_json();
        match &undone.error {
            None => {
                if repo::sagas::finish_compensated(db, self.id, self.owner, &progress, now).await? {
                    compensated(self.id, self.kind);
                }
            }
            Some(error) => {
                let next = now + backoff(1);
                repo::sagas::retry_later(
                    db,
                    self.id,
                    self.owner,
                    Some(1),
                    next,
                    error,
                    &progress,
                    now,
                )
                .await?;
                tracing::warn!(saga_id = %self.id, kind = self.kind.as_str(), error, "an undo failed; the recovery retries the saga");
            }
        }
        Ok(())
    }
}

/// The saga lease of this process (5 min; shorter only in fault-injection builds).
pub fn lease(services: &Services) -> chrono::Duration {
    chrono::Duration::from_std(services.config.saga_lease)
        .unwrap_or_else(|_| chrono::Duration::minutes(5))
}

/// Logs and counts a saga that reached `compensated`.
fn compensated(id: Uuid, kind: SagaKind) {
    tracing::info!(saga_id = %id, kind = kind.as_str(), "saga compensated");
    metrics::counter!("vlab_sagas_total", "kind" => kind.as_str(), "outcome" => "compensated")
        .increment(1);
}

fn undone_from(plan: &Plan, outcomes: &[UndoOutcome]) -> Undone {
    let mut undone = Undone::default();
    for step in plan.steps() {
        if !matches!(step.step, Step::SeatReservation { .. }) {
            undone.progress.set(step.seq, StepState::NothingToUndo);
        }
    }
    // A seq may carry several undos; any failure marks the step failed.
    for outcome in outcomes {
        let Some(seq) = outcome.seq else { continue };
        match &outcome.error {
            None if undone.progress.get(seq) != Some(StepState::Failed) => {
                undone.progress.set(seq, StepState::Undone);
            }
            None => {}
            Some(error) => {
                undone.progress.set(seq, StepState::Failed);
                undone.error.get_or_insert_with(|| error.clone());
            }
        }
    }
    undone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_outcomes_map_to_plan_steps() {
        let mut plan = Plan::default();
        plan.push(Step::SeatReservation {
            seat_id: Uuid::nil(),
            reservation_id: Uuid::nil(),
        });
        let group = plan.push(Step::KcCreateGroup {
            name: "g".to_owned(),
        });
        let account = plan.push(Step::AccCreateProjectAccount {
            project_id: Uuid::nil(),
        });
        let grant = plan.push(Step::AccGrant {
            project_id: Uuid::nil(),
            amount: 1,
        });
        let outcomes = [
            UndoOutcome {
                seq: Some(account),
                step: "acc_create_account",
                error: None,
            },
            UndoOutcome {
                seq: Some(group),
                step: "kc_create_group",
                error: Some("kc down".to_owned()),
            },
        ];
        let undone = undone_from(&plan, &outcomes);
        assert_eq!(undone.progress.get(1), None);
        assert_eq!(undone.progress.get(group), Some(StepState::Failed));
        assert_eq!(undone.progress.get(account), Some(StepState::Undone));
        assert_eq!(undone.progress.get(grant), Some(StepState::NothingToUndo));
        assert_eq!(undone.error.as_deref(), Some("kc down"));
    }
}
