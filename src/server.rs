//! The accept loop: hyper 1 (HTTP/1.1 and h2c) serving the tower stack, with graceful shutdown.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;

/// The first bytes of an h2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Resolves once enough bytes have arrived to tell HTTP/1 from h2: the whole h2 preface, or a
/// byte that differs from it. Reads nothing: the bytes stay for hyper.
async fn protocol_known(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
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
/// Shutdown stops accepting connections and admitting runs, lets in-flight requests and jobs
/// finish within the configured grace period, then stops what is left and returns. Taking the
/// signal as a future (not installing a handler) is what lets tests drive a whole server
/// in-process.
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
    let service = app.http_service();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config().header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let first_bytes_timeout = app.config().header_read_timeout;
                tokio::spawn(async move {
                    // hyper-util reads the first bytes to tell HTTP/1 from h2 with no timeout of
                    // its own: a client that connects and says nothing would hold the connection
                    // (and its file descriptor) for ever. Bound that wait like a header read.
                    match tokio::time::timeout(first_bytes_timeout, protocol_known(&stream)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => return,
                    }
                    let connection = builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            TowerToHyperService::new(service),
                        )
                        .into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = app.config().shutdown_grace;
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: no longer accepting"
    );
    app.begin_shutdown();

    let drained = async {
        tokio::join!(graceful.shutdown(), app.drain());
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!("grace period over: stopping what is still running");
    }
    app.finish_shutdown().await;
    tracing::info!("shutdown complete");
}
