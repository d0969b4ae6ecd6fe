//! The id of the request (or job run) being served, for outbound `x-request-id` headers.
//!
//! A tokio task-local is not inherited by spawned tasks, so [`in_context`] carries it
//! (and the tracing span) into use-case tasks.

use std::future::Future;

use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The current request id, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Wraps a future so that, wherever it is polled, it sees the caller's request id and span.
pub fn in_context<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let id = current();
    let span = tracing::Span::current();
    async move {
        match id {
            Some(id) => scope(id, fut).await,
            None => fut.await,
        }
    }
    .instrument(span)
}
