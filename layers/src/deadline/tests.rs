use std::convert::Infallible;
use std::future::pending;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_layer::Layer;
use tower_service::Service;
use tower_test::mock;

use super::*;
use crate::BoxError;

const MINUTE: Duration = Duration::from_secs(60);

/// Sets its flag when dropped: proof that the inner future is gone.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// An inner service that never answers, and reports when its future is dropped.
fn never_answers(
    dropped: Arc<AtomicBool>,
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
    service_fn(move |_req: Request<()>| {
        let guard = DropFlag(dropped.clone());
        async move {
            let _guard = guard;
            pending::<Result<Response<()>, Infallible>>().await
        }
    })
}

fn with_deadline(duration: Duration) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(Deadline(duration));
    req
}

/// Sends `req` through a deadline layer with a default of a minute to a service that never
/// answers; returns the error and how much (paused) time passed before it.
async fn time_out(req: Request<()>) -> (BoxError, Duration) {
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(MINUTE))
        .service(never_answers(Arc::default()));
    let start = Instant::now();
    let err = svc.oneshot(req).await.expect_err("times out");
    (err, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn default_applies_without_an_extension() {
    let (err, waited) = time_out(Request::new(())).await;
    assert_eq!(err.downcast_ref::<Elapsed>(), Some(&Elapsed::new(MINUTE)));
    assert_eq!(waited, MINUTE);
}

#[tokio::test(start_paused = true)]
async fn extension_overrides_the_default() {
    let (err, waited) = time_out(with_deadline(Duration::from_secs(2))).await;
    assert_eq!(err.to_string(), "deadline of 2s elapsed");
    assert_eq!(waited, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn expiry_drops_the_inner_future_at_once() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = DeadlineLayer::new(MINUTE).layer(never_answers(dropped.clone()));
    let mut fut = task::spawn(svc.call(with_deadline(Duration::from_secs(5))));

    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_pending!(fut.poll());
    assert!(!dropped.load(Ordering::SeqCst));

    tokio::time::advance(Duration::from_secs(1)).await;
    let err = assert_ready!(fut.poll()).expect_err("times out");
    assert!(err.is::<Elapsed>());
    // Dropped by the expiry itself, while the response future is still alive.
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn answer_within_the_deadline_passes_through() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Response<&'static str>, _>(DeadlineLayer::new(MINUTE));
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Request::new(())));
    assert_pending!(fut.poll());

    tokio::time::advance(Duration::from_secs(59)).await;
    let (_, send) = handle.next_request().await.expect("called");
    send.send_response(Response::new("answer"));
    let res = assert_ready_ok!(fut.poll());
    assert_eq!(*res.body(), "answer");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Response<()>, _>(DeadlineLayer::new(MINUTE));
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::new(()));
    let (_, send) = handle.next_request().await.expect("called");
    send.send_error("agent failed");
    let err = fut.await.expect_err("inner failed");
    assert!(!err.is::<Elapsed>());
    assert_eq!(err.to_string(), "agent failed");
}

#[tokio::test(start_paused = true)]
async fn clock_starts_at_call_not_at_readiness() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Response<()>, _>(DeadlineLayer::new(MINUTE));
    handle.allow(0);
    assert_pending!(svc.poll_ready());

    // Waiting to be called, as a queued job does, costs none of the deadline.
    tokio::time::advance(Duration::from_secs(3600)).await;
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(with_deadline(Duration::from_secs(10))));
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(assert_ready!(fut.poll()).is_err());
}

#[test]
fn elapsed_reads_well() {
    assert_eq!(
        Elapsed::new(Duration::from_secs(5)).to_string(),
        "deadline of 5s elapsed"
    );
    assert_eq!(
        Elapsed::new(Duration::from_millis(1500)).to_string(),
        "deadline of 1.5s elapsed"
    );
}
