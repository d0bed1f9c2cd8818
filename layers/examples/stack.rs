//! All five layers composed over a plain `service_fn`, driven with a few requests.
//!
//! Run with `cargo run -p gateway-layers --example stack`. It prints what each caller sees and the
//! gauge's counts along the way. No server is needed: a tower service is called directly, exactly
//! as an HTTP server would call it per request.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_layers::admission::{AdmissionLayer, Gauge, GaugeSnapshot};
use gateway_layers::auth::{AuthFailure, AuthenticatedCaller, BearerAuthLayer, Tokens};
use gateway_layers::concurrency::ConcurrencyLimitLayer;
use gateway_layers::deadline::{Deadline, DeadlineLayer, Elapsed};
use gateway_layers::workspace::{
    Provision, ProvisionFailed, ProvisionFuture, WorkspaceLayer, WorkspacePath,
};
use gateway_layers::BoxError;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use tower::{ServiceBuilder, ServiceExt};

/// Makes a real, empty directory per request under the system's temporary directory.
struct TempDirs {
    root: PathBuf,
    next: AtomicUsize,
}

impl Provision for TempDirs {
    fn provision(&self) -> ProvisionFuture {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join(format!("job-{n}"));
        Box::pin(async move {
            tokio::fs::create_dir_all(&path).await?;
            Ok(path)
        })
    }

    fn release(&self, path: PathBuf) {
        // Off the response path, as the trait asks.
        tokio::spawn(async move {
            if let Err(err) = tokio::fs::remove_dir_all(&path).await {
                eprintln!("could not remove {}: {err}", path.display());
            }
        });
    }
}

fn respond(status: StatusCode, body: impl Into<String>) -> Response<String> {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res
}

/// The one place errors from inside the stack become responses.
fn rescue(err: BoxError) -> Response<String> {
    if err.is::<Elapsed>() {
        respond(StatusCode::GATEWAY_TIMEOUT, err.to_string())
    } else if err.is::<ProvisionFailed>() {
        respond(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    } else {
        respond(StatusCode::BAD_GATEWAY, err.to_string())
    }
}

fn request(token: Option<&str>, run_for: Duration, deadline: Option<Duration>) -> Request<String> {
    let mut builder = Request::builder();
    if let Some(token) = token {
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut req = builder
        .body(format!("{}", run_for.as_millis()))
        .expect("a valid request");
    if let Some(deadline) = deadline {
        req.extensions_mut().insert(Deadline(deadline));
    }
    req
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let root = std::env::temp_dir().join(format!("gateway-layers-stack-{}", std::process::id()));
    let provisioner = Arc::new(TempDirs {
        root: root.clone(),
        next: AtomicUsize::new(1),
    });
    // One gauge: one job at a time, at most two in flight.
    let gauge = Gauge::new(1, 2);

    let svc = ServiceBuilder::new()
        // Unauthenticated callers never take a queue slot.
        .layer(BearerAuthLayer::new(
            Tokens::single("example", "s3cret"),
            |failure: AuthFailure| respond(StatusCode::UNAUTHORIZED, failure.to_string()),
        ))
        // Turn callers away at once when the queue is full.
        .layer(AdmissionLayer::new(gauge.clone(), |s: GaugeSnapshot| {
            respond(
                StatusCode::TOO_MANY_REQUESTS,
                format!("queue full ({} running, {} queued)", s.active, s.queued),
            )
        }))
        .map_result(|result: Result<Response<String>, BoxError>| {
            Ok::<_, BoxError>(result.unwrap_or_else(rescue))
        })
        // Wait FIFO for a run permit; the ticket becomes active.
        .layer(ConcurrencyLimitLayer::new(gauge.clone()))
        // The clock starts once the job runs, never while it waits.
        .layer(DeadlineLayer::new(Duration::from_secs(5)))
        // A fresh directory per run, removed however the run ends.
        .layer(WorkspaceLayer::new(provisioner))
        .service_fn(|req: Request<String>| async move {
            let caller = req
                .extensions()
                .get::<AuthenticatedCaller>()
                .map(|c| c.name.clone());
            let path = req.extensions().get::<WorkspacePath>().map(|p| p.0.clone());
            let millis = req.body().parse::<u64>().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok::<_, BoxError>(Response::new(format!(
                "{} ran {millis}ms in {}",
                caller.as_deref().unwrap_or("?"),
                path.map(|p| p.display().to_string()).unwrap_or_default(),
            )))
        });

    let show = |label: &str, res: &Response<String>| {
        println!("{label:<28} {} {}", res.status().as_u16(), res.body());
    };

    let res = svc
        .clone()
        .oneshot(request(None, Duration::ZERO, None))
        .await?;
    show("no token", &res);
    let res = svc
        .clone()
        .oneshot(request(Some("guess"), Duration::ZERO, None))
        .await?;
    show("wrong token", &res);
    let res = svc
        .clone()
        .oneshot(request(Some("s3cret"), Duration::from_millis(10), None))
        .await?;
    show("right token", &res);

    // Two slow jobs fill the queue: one runs, one waits.
    let first = tokio::spawn(svc.clone().oneshot(request(
        Some("s3cret"),
        Duration::from_millis(300),
        None,
    )));
    let second = tokio::spawn(svc.clone().oneshot(request(
        Some("s3cret"),
        Duration::from_millis(50),
        Some(Duration::from_millis(100)),
    )));
    // Let both get admitted before the third arrives.
    while gauge.snapshot().active + gauge.snapshot().queued < 2 {
        tokio::task::yield_now().await;
    }
    println!("{:<28} {:?}", "gauge with two in flight", gauge.snapshot());
    let res = svc
        .clone()
        .oneshot(request(Some("s3cret"), Duration::ZERO, None))
        .await?;
    show("third while full", &res);

    show("first (300ms job)", &first.await??);
    // It waited ~300ms in the queue, but its 100ms deadline only counts its 50ms run.
    show("second (queued, 100ms dl)", &second.await??);
    let res = svc
        .clone()
        .oneshot(request(
            Some("s3cret"),
            Duration::from_millis(300),
            Some(Duration::from_millis(100)),
        ))
        .await?;
    show("300ms job, 100ms deadline", &res);
    println!("{:<28} {:?}", "gauge afterwards", gauge.snapshot());

    // Removal runs in the background; give it a moment, then show nothing was left behind.
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = std::fs::read_dir(&root).map_or(0, |dir| dir.count());
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{:<28} {left}", "workspaces left on disk");
    let _ = tokio::fs::remove_dir(&root).await;
    Ok(())
}
