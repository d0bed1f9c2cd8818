//! The `gateway-layers` stack reused in a plain hyper server: no axum, no claude, no jobs.
//!
//! Each request gets bearer auth, a place in a bounded FIFO queue, a deadline that starts once it
//! runs, and its own scratch directory, removed when the request ends. The handler writes the
//! request body into a file in that directory and answers with the directory's contents.
//!
//! Run with `cargo run --example layers_in_hyper`. It serves on 127.0.0.1:0, sends itself a few
//! requests over real HTTP, prints what each caller sees, and exits; with `SERVE=1` it keeps
//! serving on `ADDR` (default 127.0.0.1:3000) instead:
//!
//! ```text
//! SERVE=1 cargo run --example layers_in_hyper
//! curl -H 'Authorization: Bearer demo-token' -d 'hello' localhost:3000
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_layers::admission::{AdmissionLayer, Gauge, GaugeSnapshot};
use gateway_layers::auth::{AuthFailure, BearerAuthLayer, Tokens};
use gateway_layers::concurrency::ConcurrencyLimitLayer;
use gateway_layers::deadline::{DeadlineLayer, Elapsed};
use gateway_layers::workspace::{Provision, ProvisionFuture, WorkspaceLayer, WorkspacePath};
use gateway_layers::BoxError;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;

/// Scratch directories under one root: the simplest [`Provision`].
struct ScratchDirs {
    root: PathBuf,
}

impl Provision for ScratchDirs {
    fn provision(&self) -> ProvisionFuture {
        let path = self.root.join(uuid::Uuid::new_v4().simple().to_string());
        Box::pin(async move {
            tokio::fs::create_dir_all(&path).await?;
            Ok(path)
        })
    }

    fn release(&self, path: PathBuf) {
        tokio::spawn(async move {
            let _ = tokio::fs::remove_dir_all(&path).await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// The handler: writes the body into the request's workspace and lists it.
async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, BoxError> {
    let WorkspacePath(dir) = request
        .extensions()
        .get::<WorkspacePath>()
        .cloned()
        .ok_or("no workspace")?;
    let body = request.into_body().collect().await?.to_bytes();
    tokio::fs::write(dir.join("body.txt"), &body).await?;
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(&dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(text(
        StatusCode::OK,
        format!("workspace {} holds {names:?}\n", dir.display()),
    ))
}

/// The one rescue point: errors from inside the stack become responses, so hyper only ever sees
/// `Ok` (an `Err` would cut the connection).
fn rescue(
    result: Result<Response<Full<Bytes>>, BoxError>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    Ok(result.unwrap_or_else(|error| {
        if error.is::<Elapsed>() {
            text(StatusCode::GATEWAY_TIMEOUT, format!("{error}\n"))
        } else {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"))
        }
    }))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let root = std::env::temp_dir().join(format!("layers-in-hyper-{}", std::process::id()));
    let gauge = Gauge::new(2, 4);
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(
            Tokens::single("demo", "demo-token"),
            |failure: AuthFailure| text(StatusCode::UNAUTHORIZED, format!("{failure}\n")),
        ))
        .layer(AdmissionLayer::new(gauge.clone(), |s: GaugeSnapshot| {
            text(
                StatusCode::TOO_MANY_REQUESTS,
                format!("queue full: {} running, {} waiting\n", s.active, s.queued),
            )
        }))
        .map_result(rescue)
        .layer(ConcurrencyLimitLayer::new(gauge.clone()))
        .layer(DeadlineLayer::new(Duration::from_secs(5)))
        .layer(WorkspaceLayer::new(
            Arc::new(ScratchDirs { root: root.clone() }) as Arc<dyn Provision>,
        ))
        .service_fn(handle);

    let serve_forever = std::env::var_os("SERVE").is_some();
    let addr = if serve_forever {
        std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into())
    } else {
        "127.0.0.1:0".into()
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    println!("serving on http://{local}");
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    if serve_forever {
        server.await?;
        return Ok(());
    }

    let client = reqwest::Client::new();
    let url = format!("http://{local}/");
    for (who, token) in [
        ("no token", None),
        ("wrong token", Some("nope")),
        ("right token", Some("demo-token")),
    ] {
        let mut request = client.post(&url).body("hello from the client");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        print!(
            "{who:>12}: {} {}",
            response.status(),
            response.text().await?
        );
    }
    let snapshot = gauge.snapshot();
    println!(
        "gauge after the requests: {} running, {} queued",
        snapshot.active, snapshot.queued
    );
    server.abort();
    let _ = tokio::fs::remove_dir_all(&root).await;
    Ok(())
}
