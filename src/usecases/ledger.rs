//! The compensation ledger (rules.md §3): the in-memory undo stack of one unit of work.
//!
//! A use case pushes an undo right after each external step succeeds (or *before* a step whose
//! outcome may be uncertain, discarding it after a definite failure). On failure it calls
//! [`Ledger::compensate`], which pops and runs the undos last-in-first-out; an undo that fails
//! is logged and the rest still run. Popping makes a second `compensate` a no-op. It reports
//! each undo's outcome, tagged with its journal plan `seq` when pushed with
//! [`Ledger::push_for`], so a journaled use case can record what is left for the recovery.
//! On success it calls [`Ledger::commit`]. A ledger dropped while it still holds undos (a panic
//! or a bug) logs an error and spawns its compensation, so nothing is silently orphaned.

use std::future::Future;
use std::pin::Pin;

type UndoFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type Undo = Box<dyn FnOnce() -> UndoFuture + Send>;

struct Step {
    id: u64,
    name: &'static str,
    /// The saga plan step this undo belongs to, for journaled use cases.
    seq: Option<u32>,
    undo: Undo,
}

/// What one undo of [`Ledger::compensate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoOutcome {
    pub seq: Option<u32>,
    pub step: &'static str,
    /// The failure, with its cause chain; `None` when the undo succeeded.
    pub error: Option<String>,
}

/// A handle to a pushed undo, for [`Ledger::discard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepId(u64);

/// The undo stack of one unit of work (one lab, one project, one student, one course…).
pub struct Ledger {
    use_case: &'static str,
    steps: Vec<Step>,
    next_id: u64,
}

impl Ledger {
    pub fn new(use_case: &'static str) -> Self {
        Self {
            use_case,
            steps: Vec::new(),
            next_id: 0,
        }
    }

    /// Registers an undo for the step just taken (or about to be taken, when its outcome may be
    /// uncertain). `step` names it in logs and metrics.
    pub fn push<F, Fut>(&mut self, step: &'static str, undo: F) -> StepId
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.push_tagged(None, step, undo)
    }

    /// [`Ledger::push`] for the step `seq` of a saga plan: its outcome is reported with it.
    pub fn push_for<F, Fut>(&mut self, seq: u32, step: &'static str, undo: F) -> StepId
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.push_tagged(Some(seq), step, undo)
    }

    fn push_tagged<F, Fut>(&mut self, seq: Option<u32>, step: &'static str, undo: F) -> StepId
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let id = self.next_id;
        self.next_id += 1;
        self.steps.push(Step {
            id,
            name: step,
            seq,
            undo: Box::new(move || Box::pin(undo())),
        });
        StepId(id)
    }

    /// Removes a pre-registered undo whose step failed definitely, so it must not run.
    pub fn discard(&mut self, step: StepId) {
        self.steps.retain(|s| s.id != step.0);
    }

    /// Whether no undo is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The work succeeded: every undo is dropped without running.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Another owner compensates (the saga recovery took the work over): every undo is
    /// dropped without running, so neither this ledger nor its `Drop` runs them.
    pub fn forget(&mut self) {
        self.steps.clear();
    }

    /// Runs every registered undo, last first, and reports each outcome in that order.
    /// Failures are logged and the remaining undos still run.
    pub async fn compensate(&mut self, reason: &str) -> Vec<UndoOutcome> {
        if !self.steps.is_empty() {
            tracing::warn!(
                use_case = self.use_case,
                reason,
                steps = self.steps.len(),
                "compensating"
            );
        }
        let mut outcomes = Vec::with_capacity(self.steps.len());
        while let Some(step) = self.steps.pop() {
            outcomes.push(run_undo(self.use_case, step).await);
        }
        outcomes
    }
}

async fn run_undo(use_case: &'static str, step: Step) -> UndoOutcome {
    let error = match (step.undo)().await {
        Ok(()) => None,
        Err(err) => {
            let error = format!("{err:#}");
            tracing::error!(use_case, step = step.name, error = %error, "compensation step failed; continuing with the next one");
            Some(error)
        }
    };
    let outcome = if error.is_none() { "ok" } else { "failed" };
    metrics::counter!("vlab_compensations_total", "step" => step.name, "outcome" => outcome)
        .increment(1);
    UndoOutcome {
        seq: step.seq,
        step: step.name,
        error,
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if self.steps.is_empty() {
            return;
        }
        let steps = std::mem::take(&mut self.steps);
        let use_case = self.use_case;
        tracing::error!(
            use_case,
            steps = steps.len(),
            "ledger dropped with pending undos; compensating in the background"
        );
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    for step in steps.into_iter().rev() {
                        let _outcome = run_undo(use_case, step).await;
                    }
                });
            }
            Err(_) => {
                tracing::error!(use_case, "no runtime to compensate on; undos are lost");
            }
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("use_case", &self.use_case)
            .field(
                "steps",
                &self.steps.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn recorder(log: &Log, name: &'static str) -> impl FnOnce() -> UndoFuture + Send + 'static {
        let log = log.clone();
        move || {
            Box::pin(async move {
                log.lock().unwrap().push(name);
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn compensation_runs_undos_last_in_first_out() {
        let log = Log::default();
        let mut ledger = Ledger::new("test");
        ledger.push("a", recorder(&log, "a"));
        ledger.push("b", recorder(&log, "b"));
        ledger.push("c", recorder(&log, "c"));
        ledger.compensate("boom").await;
        assert_eq!(*log.lock().unwrap(), vec!["c", "b", "a"]);
    }

    #[tokio::test]
    async fn a_failing_undo_is_reported_and_the_rest_still_run() {
        let log = Log::default();
        let mut ledger = Ledger::new("test");
        ledger.push_for(2, "a", recorder(&log, "a"));
        ledger.push_for(3, "fails", || async { anyhow::bail!("keycloak down") });
        ledger.push("c", recorder(&log, "c"));
        let outcomes = ledger.compensate("boom").await;
        assert_eq!(*log.lock().unwrap(), vec!["c", "a"]);
        assert!(ledger.is_empty());
        assert_eq!(
            outcomes,
            [
                UndoOutcome {
                    seq: None,
                    step: "c",
                    error: None
                },
                UndoOutcome {
                    seq: Some(3),
                    step: "fails",
                    error: Some("keycloak down".to_owned())
                },
                UndoOutcome {
                    seq: Some(2),
                    step: "a",
                    error: None
                },
            ]
        );
    }

    #[tokio::test]
    async fn compensating_twice_runs_each_undo_once() {
        let log = Log::default();
        let mut ledger = Ledger::new("test");
        ledger.push("a", recorder(&log, "a"));
        ledger.compensate("first").await;
        ledger.compensate("second").await;
        assert_eq!(*log.lock().unwrap(), vec!["a"]);
    }

    #[tokio::test]
    async fn a_discarded_undo_never_runs() {
        let log = Log::default();
        let mut ledger = Ledger::new("test");
        ledger.push("a", recorder(&log, "a"));
        let grant = ledger.push("grant", recorder(&log, "grant"));
        ledger.push("c", recorder(&log, "c"));
        ledger.discard(grant);
        ledger.compensate("boom").await;
        assert_eq!(*log.lock().unwrap(), vec!["c", "a"]);
    }

    #[tokio::test]
    async fn commit_drops_undos_without_running_them() {
        let log = Log::default();
        let mut ledger = Ledger::new("test");
        ledger.push("a", recorder(&log, "a"));
        ledger.commit();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_ledger_dropped_with_pending_undos_compensates_in_the_background() {
        let log = Log::default();
        {
            let mut ledger = Ledger::new("test");
            ledger.push("a", recorder(&log, "a"));
            ledger.push("b", recorder(&log, "b"));
        }
        for _ in 0..50 {
            if log.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*log.lock().unwrap(), vec!["b", "a"]);
    }
}
