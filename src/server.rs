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
                let connection = builder
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(service.clone()),
                    )
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
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
