//! The accept loop: hyper 1 (HTTP/1.1 and h2c) serving the tower stack, with bounded connections
//! and a graceful shutdown a load balancer can see.
//!
//! What a client can hold at this level is bounded:
//!
//! - **count**: at most `MAX_CONNECTIONS` are served; further clients wait in the listen backlog;
//! - **silence before the first request**: `HEADER_READ_TIMEOUT_SECONDS`, for both protocols;
//! - **idleness**: a connection with no request in flight (an HTTP/1 keep-alive, or an HTTP/2
//!   connection that answers PINGs but opens no stream) is closed after
//!   `CONNECTION_IDLE_TIMEOUT_SECONDS`;
//! - **not reading**: a write blocked for `WRITE_TIMEOUT_SECONDS` (the client stopped reading its
//!   response) closes the connection, which drops the response and what it held;
//! - **accept errors** (out of file descriptors) are retried with a growing back-off, not in a
//!   tight loop.
//!
//! # Shutdown, in order
//!
//! 1. The signal arrives: runs are no longer admitted (`/execute` and chat answer 503), queued
//!    jobs are stopped, and `/health` answers 503 `shutting_down`, so a readiness probe fails.
//! 2. The listener keeps accepting and answering while running jobs finish, and for at least
//!    `SHUTDOWN_DELAY_SECONDS`, so a load balancer has time to notice before connections are
//!    refused.
//! 3. Once jobs are done (or `SHUTDOWN_GRACE_SECONDS` is over), the listener closes and every
//!    connection is closed as soon as its request in flight has been answered.
//! 4. When the grace period is over, whatever still runs is stopped and recorded as such.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;

use crate::app::App;
use crate::config::Config;

/// The first bytes of an h2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Resolves once enough bytes have arrived to tell HTTP/1 from h2: the whole h2 preface, or a
/// byte that differs from it. Reads nothing: the bytes stay for hyper.
async fn protocol_known(stream: &TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
            return Ok(());
        }
        if n == seen {
            // A partial preface and nothing new yet: peek would answer at once again, so wait a
            // little rather than spin. Only a client part-way through an h2 preface gets here.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

/// Builds the gateway from `config` and serves it on `listener` until `shutdown` resolves.
///
/// Shutdown goes as the [module docs](self) say. Taking the signal as a future (not installing a
/// handler) is what lets tests drive a whole server in-process.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), crate::BoxError> {
    let app = App::build(config).await?;
    serve(app, listener, shutdown).await;
    Ok(())
}

/// Serves an already built [`App`] on `listener` until `shutdown` resolves, then drains.
pub async fn serve(app: App, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
    let config = app.config().clone();
    let (close_tx, close_rx) = watch::channel(false);
    let mut acceptor = Acceptor::new(&app, &config, listener, close_rx);
    if let Ok(addr) = acceptor.listener.local_addr() {
        tracing::info!(%addr, "listening");
    }

    acceptor.accept_until(shutdown).await;

    let grace_ends = Instant::now() + config.shutdown_grace;
    tracing::info!(
        grace_seconds = config.shutdown_grace.as_secs(),
        delay_seconds = config.shutdown_delay.as_secs(),
        "shutting down: no new runs; answering until running jobs finish"
    );
    app.begin_shutdown();
    let keep_answering = async {
        tokio::join!(app.drain(), tokio::time::sleep(config.shutdown_delay));
    };
    acceptor
        .accept_until(async {
            let _ = tokio::time::timeout_at(grace_ends, keep_answering).await;
        })
        .await;

    let Acceptor {
        listener,
        connections,
        max_connections,
        ..
    } = acceptor;
    drop(listener);
    tracing::info!("no longer accepting; closing connections");
    let _ = close_tx.send(true);
    let closed = connections.acquire_many_owned(max_connections);
    if tokio::time::timeout_at(grace_ends, closed).await.is_err() {
        tracing::warn!("grace period over: stopping what is still running");
    }
    app.finish_shutdown().await;
    tracing::info!("shutdown complete");
}

/// The listener and what every connection it accepts is served with.
struct Acceptor {
    listener: TcpListener,
    /// The HTTP stack.
    service: axum::Router,
    /// HTTP/1 and HTTP/2 settings.
    builder: auto::Builder<TokioExecutor>,
    /// One permit per connection served; all of them free means every connection has ended.
    connections: Arc<Semaphore>,
    /// `MAX_CONNECTIONS`, as a permit count.
    max_connections: u32,
    /// Time for the first bytes (and an HTTP/1 request's headers).
    first_bytes_timeout: Duration,
    /// Time a connection may stay idle.
    idle_timeout: Duration,
    /// Time a write may stay blocked.
    write_timeout: Duration,
    /// Becomes `true` when connections are to close once idle.
    close: watch::Receiver<bool>,
    /// Paces retries after failed accepts.
    backoff: AcceptBackoff,
}

impl Acceptor {
    fn new(
        app: &App,
        config: &Config,
        listener: TcpListener,
        close: watch::Receiver<bool>,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let max_connections = u32::try_from(config.max_connections)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        Self {
            listener,
            service: app.http_service(),
            builder,
            connections: Arc::new(Semaphore::new(max_connections as usize)),
            max_connections,
            first_bytes_timeout: config.header_read_timeout,
            idle_timeout: config.connection_idle_timeout,
            write_timeout: config.write_timeout,
            close,
            backoff: AcceptBackoff::default(),
        }
    }

    /// Accepts and serves connections until `until` resolves.
    async fn accept_until(&mut self, until: impl Future<Output = ()>) {
        let mut until = std::pin::pin!(until);
        loop {
            // A free slot first: at the cap, new clients wait in the kernel's backlog.
            let permit = tokio::select! {
                () = &mut until => return,
                permit = self.connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                () = &mut until => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.backoff.succeeded();
                    self.spawn_connection(stream, peer, permit);
                }
                Err(error) => {
                    drop(permit);
                    // Out of file descriptors and the like: wait longer each time rather than
                    // spin, and say so without flooding the log.
                    let (pause, log) = self.backoff.failed();
                    if log {
                        tracing::warn!(%error, failures = self.backoff.failures, pause_ms = pause.as_millis() as u64, "accept failed; backing off");
                    }
                    tokio::select! {
                        () = &mut until => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    fn spawn_connection(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let service = self.service.clone();
        let builder = self.builder.clone();
        let first_bytes_timeout = self.first_bytes_timeout;
        let idle_timeout = self.idle_timeout;
        let write_timeout = self.write_timeout;
        let mut close = self.close.clone();
        tokio::spawn(async move {
            // Held for as long as the connection is served.
            let _permit = permit;
            // hyper-util reads the first bytes to tell HTTP/1 from h2 with no timeout of its
            // own: a client that connects and says nothing would hold the connection (and its
            // file descriptor) for ever. Bound that wait like a header read.
            match tokio::time::timeout(first_bytes_timeout, protocol_known(&stream)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            let mut io = TimeoutStream::new(stream);
            io.set_write_timeout(Some(write_timeout));
            let (in_flight, mut idle) = watch::channel(0usize);
            let service = InFlight {
                inner: service,
                count: Arc::new(in_flight),
            };
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(Box::pin(io)),
                TowerToHyperService::new(service),
            );
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                        return;
                    }
                    _ = close.wait_for(|close| *close), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    () = idle_for(&mut idle, idle_timeout), if !closing => {
                        tracing::debug!(%peer, "closing an idle connection");
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
}

/// Resolves once the count of requests in flight has stayed at zero for `timeout`.
async fn idle_for(count: &mut watch::Receiver<usize>, timeout: Duration) {
    loop {
        if count.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        if tokio::time::timeout(timeout, count.wait_for(|n| *n > 0))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Counts a connection's requests in flight, from the call until the response body is sent or
/// dropped, so the connection knows when it is idle.
#[derive(Clone)]
struct InFlight<S> {
    inner: S,
    count: Arc<watch::Sender<usize>>,
}

/// One request in flight; dropping it ends the request.
struct InFlightGuard(Arc<watch::Sender<usize>>);

impl InFlightGuard {
    fn new(count: Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl<S, B> tower::Service<Request<B>> for InFlight<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let guard = InFlightGuard::new(self.count.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // The body carries the guard: the request is in flight until it is sent or dropped.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                }))
            }))
        })
    }
}

/// The pause after each failed accept: 10 ms, doubling to at most 1 s; reset by a success.
#[derive(Debug, Default)]
struct AcceptBackoff {
    /// Failures in a row.
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// Records a failure: how long to pause, and whether to log it (the first failure and then
    /// each time the count doubles, so a long outage logs a handful of lines).
    fn failed(&mut self) -> (Duration, bool) {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        let pause = Self::FIRST.saturating_mul(1 << doublings).min(Self::MAX);
        (pause, self.failures.is_power_of_two())
    }

    fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_to_a_second_and_log_sparingly() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<_> = (0..10).map(|_| backoff.failed()).collect();
        assert_eq!(pauses[0], (Duration::from_millis(10), true));
        assert_eq!(pauses[1], (Duration::from_millis(20), true));
        assert_eq!(pauses[2].0, Duration::from_millis(40));
        assert!(pauses[7..]
            .iter()
            .all(|(p, _)| *p == Duration::from_secs(1)));
        let logged = pauses.iter().filter(|(_, log)| *log).count();
        assert_eq!(logged, 4, "1st, 2nd, 4th and 8th failures");
        backoff.succeeded();
        assert_eq!(backoff.failed(), (Duration::from_millis(10), true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_after_the_timeout_with_nothing_in_flight() {
        let (count, mut idle) = watch::channel(0usize);
        let count = Arc::new(count);
        let guard = InFlightGuard::new(count.clone());
        let start = Instant::now();
        let waiter = tokio::spawn(async move {
            idle_for(&mut idle, Duration::from_secs(10)).await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiter.is_finished(), "a request in flight keeps it busy");
        drop(guard);
        let idle_at = waiter.await.unwrap();
        assert_eq!(idle_at - start, Duration::from_secs(40));
    }
}
