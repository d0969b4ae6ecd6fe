//! Runs use cases that make external side effects in their own task (rules.md §3, execution
//! rule): if the client disconnects or the request times out, axum drops the handler future,
//! but the spawned task — and with it any compensation — runs to its end. Graceful shutdown
//! waits for these tasks through the shared [`TaskTracker`] (operations.md §6).

use std::future::Future;

use tokio_util::task::TaskTracker;

use crate::clients::request_context;

/// The tracker of every detached use-case task of this process.
#[derive(Clone, Default)]
pub struct UseCaseTasks {
    tracker: TaskTracker,
}

/// The spawned task panicked or was cancelled; the caller turns this into a 500.
#[derive(Debug, thiserror::Error)]
#[error("use case task {use_case} did not finish: {message}")]
pub struct TaskFailed {
    pub use_case: &'static str,
    pub message: String,
}

impl UseCaseTasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `work` (carrying the request id and span) and waits for its result. Dropping the
    /// returned future does not stop `work`.
    pub async fn run<T, F>(&self, use_case: &'static str, work: F) -> Result<T, TaskFailed>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.tracker.spawn(request_context::in_context(work));
        handle.await.map_err(|err| {
            tracing::error!(use_case, error = %err, "use case task failed");
            TaskFailed {
                use_case,
                message: err.to_string(),
            }
        })
    }

    /// Stops accepting new tasks and waits for the running ones, up to `grace`.
    /// Returns the number still running when the grace period ran out.
    pub async fn shutdown(&self, grace: std::time::Duration) -> usize {
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::usecases::ledger::Ledger;

    /// The disconnect case: the handler future is dropped midway (as axum does when the client
    /// goes away), yet the use case fails later and its compensation still runs.
    #[tokio::test]
    async fn compensation_survives_the_caller_going_away() {
        let tasks = UseCaseTasks::new();
        let compensated = Arc::new(AtomicBool::new(false));
        let flag = compensated.clone();
        let work = async move {
            let mut ledger = Ledger::new("test");
            ledger.push("delete group", move || async move {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            });
            // A slow external step that eventually fails.
            tokio::time::sleep(Duration::from_millis(100)).await;
            ledger.compensate("accounting failed").await;
        };
        let handler = tasks.run("test", work);
        // The client disconnects after 10 ms: the handler future is dropped.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), handler)
                .await
                .is_err()
        );
        assert!(!compensated.load(Ordering::SeqCst));
        assert_eq!(tasks.shutdown(Duration::from_secs(2)).await, 0);
        assert!(compensated.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panicking_use_case_is_reported_as_failed() {
        let tasks = UseCaseTasks::new();
        let result = tasks
            .run("test", async {
                panic!("bug");
            })
            .await;
        let err: TaskFailed = match result {
            Ok(()) => panic!("expected a failure"),
            Err(err) => err,
        };
        assert_eq!(err.use_case, "test");
    }

    #[tokio::test]
    async fn shutdown_reports_tasks_that_outlive_the_grace_period() {
        let tasks = UseCaseTasks::new();
        let slow = tasks.clone();
        tokio::spawn(async move {
            let _ = slow
                .run("slow", tokio::time::sleep(Duration::from_secs(5)))
                .await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(tasks.shutdown(Duration::from_millis(50)).await, 1);
    }
}
