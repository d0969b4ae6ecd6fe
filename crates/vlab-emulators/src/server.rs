//! The loopback servers under the emulators, and the operation middleware.
//!
//! # Why connections are served by hand
//!
//! `axum::serve` gives a handler no way to close its TCP connection without answering. Here
//! the accept loop serves each connection with hyper's HTTP/1.1 connection driver inside its own
//! task, and puts a [`Connection`] handle into every request's extensions. A handler that wants
//! to "drop" calls [`Connection::kill`] and then waits forever: the connection task, which is
//! `select!`ing on the hyper connection future and the kill signal, drops the hyper future, and
//! with it the socket and the pending handler. The client sees the connection closed before any
//! response byte. Only HTTP/1.1 is served, because hyper's HTTP/2 driver would run handlers in
//! separately spawned tasks that the connection task could not cancel.
//!
//! All connection tasks live in one `JoinSet` owned by the accept loop. Shutdown (or dropping
//! the last handle) ends the accept loop, which aborts every connection task, so a stalled
//! handler cannot keep `shutdown()` from returning.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt as _;

use crate::faults::{Control, FaultAction};

/// Closes the connection of the request it was handed to, without answering.
#[derive(Clone, Default)]
pub(crate) struct Connection {
    kill: Arc<Notify>,
}

impl Connection {
    /// Asks the connection task to drop the connection.
    pub fn kill(&self) {
        self.kill.notify_one();
    }

    /// Drops the connection and never returns: the caller is cancelled with it.
    pub async fn drop_now(&self) -> Response {
        self.kill();
        std::future::pending::<Response>().await
    }
}

/// Binds a loopback (or any) listener.
pub(crate) async fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// A running accept loop. Dropping it stops the loop and aborts every connection.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Serves each connection accepted by `listener` with `handle`.
    pub fn start<F, Fut>(listener: TcpListener, handle: F) -> anyhow::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().context("reading the bound address")?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    // A send of `true` or the sender being dropped both end the loop.
                    // (The `Ref` it returns is dropped inside, so the future stays `Send`.)
                    () = async { let _ = stopped.wait_for(|s| *s).await; } => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _peer)) => {
                            // Best effort: small request/response pairs should not wait for Nagle.
                            let _ = stream.set_nodelay(true);
                            connections.spawn(handle(stream));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "emulator accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            drop(listener);
            connections.shutdown().await;
        });
        Ok(Self {
            addr,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Serves `router` over HTTP/1.1.
    pub fn start_http(listener: TcpListener, router: Router) -> anyhow::Result<Self> {
        Self::start(listener, move |stream| serve_http(stream, router.clone()))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, aborts every connection and waits until they are gone.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn serve_http(stream: TcpStream, router: Router) {
    let connection = Connection::default();
    let kill = connection.kill.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(connection.clone());
        router.clone().oneshot(request)
    });
    let http =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = http => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "emulator connection ended with an error");
            }
        }
        // Dropping `http` here closes the socket without writing anything more.
        () = kill.notified() => {}
    }
}

/// Builds the body answered by a `FaultAction::Status` fault.
pub(crate) type ErrorBody = fn(StatusCode) -> Response;

#[derive(Clone)]
struct OpState {
    control: Arc<Control>,
    operation: &'static str,
    error_body: ErrorBody,
}

/// Names the operation served by `route`, so that faults, latency and the call log apply.
pub(crate) fn operation<S>(
    route: MethodRouter<S>,
    control: &Arc<Control>,
    operation: &'static str,
    error_body: ErrorBody,
) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route.layer(from_fn_with_state(
        OpState {
            control: control.clone(),
            operation,
            error_body,
        },
        operation_middleware,
    ))
}

async fn operation_middleware(State(op): State<OpState>, request: Request, next: Next) -> Response {
    let connection = request.extensions().get::<Connection>().cloned();
    let idempotency_key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    let admission = op.control.begin(
        op.operation,
        request.method().as_str(),
        request.uri().path(),
        idempotency_key,
    );
    if !admission.latency.is_zero() {
        tokio::time::sleep(admission.latency).await;
    }
    let drop_connection = async move || match connection {
        Some(c) => c.drop_now().await,
        // Only reachable when a router is driven without `serve_http` (not done here).
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    match admission.fault {
        None => {
            let response = next.run(request).await;
            op.control
                .finish(admission.index, response.status().as_u16());
            response
        }
        Some(FaultAction::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            op.control.finish(admission.index, status.as_u16());
            (op.error_body)(status)
        }
        Some(FaultAction::TimeoutBefore(stall)) => {
            tokio::time::sleep(stall).await;
            drop_connection().await
        }
        Some(FaultAction::DropBefore) => drop_connection().await,
        Some(FaultAction::TimeoutAfter(stall)) => {
            let _performed = next.run(request).await;
            tokio::time::sleep(stall).await;
            drop_connection().await
        }
        Some(FaultAction::DropAfter) => {
            let _performed = next.run(request).await;
            drop_connection().await
        }
    }
}
