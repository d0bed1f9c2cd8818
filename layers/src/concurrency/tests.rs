use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{service_fn, Service, ServiceExt};
use tower_layer::Layer;
use tower_test::mock;

use super::*;
use crate::admission::{Gauge, GaugeSnapshot};

type Mock = mock::Mock<Request<&'static str>, Response<&'static str>>;
type Handle = mock::Handle<Request<&'static str>, Response<&'static str>>;
type Svc = mock::Spawn<ConcurrencyLimit<Mock>>;
type Call = task::Spawn<ResponseFuture<Mock, Request<&'static str>>>;

fn setup(concurrency: usize) -> (Gauge, Svc, Handle) {
    let gauge = Gauge::new(concurrency, 10);
    let (svc, handle) = mock::spawn_layer(ConcurrencyLimitLayer::new(gauge.clone()));
    (gauge, svc, handle)
}

/// A request admitted into `gauge`, as the admission layer would hand it on.
fn admitted(gauge: &Gauge, name: &'static str) -> Request<&'static str> {
    let mut req = Request::new(name);
    req.extensions_mut()
        .insert(gauge.try_admit().expect("room in the queue"));
    req
}

/// Polls `svc` ready, calls it with `req` and polls the call once: it is left waiting, for a permit
/// or, holding one, for the inner service.
fn start(svc: &mut Svc, req: Request<&'static str>) -> Call {
    assert_ready_ok!(svc.poll_ready());
    let mut call = task::spawn(svc.call(req));
    assert_pending!(call.poll());
    call
}

/// Waits for the inner service's next call and checks it is `body`'s; answers its responder.
async fn next_call(handle: &mut Handle, body: &str) -> mock::SendResponse<Response<&'static str>> {
    let (req, send) = handle.next_request().await.expect("a call");
    assert_eq!(*req.body(), body);
    send
}

fn counts(gauge: &Gauge) -> (usize, usize) {
    let GaugeSnapshot { active, queued, .. } = gauge.snapshot();
    (active, queued)
}

#[tokio::test]
async fn second_request_waits_until_the_first_completes() {
    let (gauge, mut svc, mut handle) = setup(1);

    let mut first = start(&mut svc, admitted(&gauge, "first"));
    assert_eq!(counts(&gauge), (1, 0));

    let mut second = start(&mut svc, admitted(&gauge, "second"));
    assert_eq!(counts(&gauge), (1, 1));

    let (req, send) = handle.next_request().await.expect("first runs");
    assert_eq!(*req.body(), "first");
    assert!(req.extensions().get::<crate::admission::Ticket>().is_none());
    assert_pending!(handle.poll_request());

    send.send_response(Response::new("one"));
    assert!(first.is_woken());
    let res = assert_ready_ok!(first.poll());
    assert_eq!(*res.body(), "one");
    assert_eq!(
        counts(&gauge),
        (0, 1),
        "a completed run frees its slot at once"
    );

    assert!(second.is_woken());
    assert_pending!(second.poll());
    assert_eq!(counts(&gauge), (1, 0));
    let send = next_call(&mut handle, "second").await;
    send.send_response(Response::new("two"));
    assert_eq!(*assert_ready_ok!(second.poll()).body(), "two");
    assert_eq!(counts(&gauge), (0, 0));
}

#[tokio::test]
async fn dropping_a_queued_request_frees_its_queue_slot() {
    let (gauge, mut svc, mut handle) = setup(1);

    let mut first = start(&mut svc, admitted(&gauge, "first"));
    let second = start(&mut svc, admitted(&gauge, "second"));
    assert_eq!(counts(&gauge), (1, 1));

    drop(second);
    assert_eq!(counts(&gauge), (1, 0));

    // The abandoned waiter took no permit with it: the next request runs after the first.
    let (_, send) = handle.next_request().await.expect("first runs");
    send.send_response(Response::new("one"));
    assert_ready_ok!(first.poll());
    let _third = start(&mut svc, admitted(&gauge, "third"));
    assert_eq!(counts(&gauge), (1, 0));
    let _send = next_call(&mut handle, "third").await;
}

#[tokio::test]
async fn dropping_a_running_request_frees_its_permit() {
    let (gauge, mut svc, mut handle) = setup(1);

    let first = start(&mut svc, admitted(&gauge, "first"));
    let mut second = start(&mut svc, admitted(&gauge, "second"));

    drop(first);
    assert!(second.is_woken());
    assert_pending!(second.poll());
    assert_eq!(counts(&gauge), (1, 0));

    next_call(&mut handle, "first").await;
    next_call(&mut handle, "second").await;
}

#[tokio::test]
async fn waiters_run_in_arrival_order() {
    let (gauge, mut svc, mut handle) = setup(1);

    let mut running = start(&mut svc, admitted(&gauge, "first"));

    let mut waiters: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| start(&mut svc, admitted(&gauge, name)))
        .collect();
    assert_eq!(counts(&gauge), (1, 3));

    let (_, mut send) = handle.next_request().await.expect("first runs");
    for expected in ["a", "b", "c"] {
        send.send_response(Response::new("done"));
        assert_ready_ok!(running.poll());
        // Poll the later arrivals first: they must keep waiting regardless.
        for waiter in waiters.iter_mut().rev() {
            assert_pending!(waiter.poll());
        }
        let next_send = next_call(&mut handle, expected).await;
        assert_pending!(handle.poll_request());
        send = next_send;
        running = waiters.remove(0);
    }
    send.send_response(Response::new("done"));
    assert_ready_ok!(running.poll());
    assert_eq!(counts(&gauge), (0, 0));
}

#[tokio::test]
async fn readiness_is_the_inner_services() {
    let (gauge, mut svc, mut handle) = setup(1);
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert!(svc.is_woken());
    let _fut = start(&mut svc, admitted(&gauge, "only"));
    next_call(&mut handle, "only").await;
}

#[tokio::test]
async fn readiness_never_waits_for_a_permit() {
    // No permits at all: nothing can ever run, yet the service stays ready; the request waits in
    // its response future instead, so there is no back-pressure for a layer above to see.
    let (gauge, mut svc, mut handle) = setup(0);
    let mut waiting = start(&mut svc, admitted(&gauge, "never"));
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(counts(&gauge), (0, 1));
    assert_pending!(waiting.poll());
    assert_pending!(handle.poll_request());
}

#[tokio::test]
async fn inner_error_is_boxed_and_frees_the_slot() {
    let (gauge, mut svc, mut handle) = setup(1);
    let mut fut = start(&mut svc, admitted(&gauge, "failing"));
    let (_, send) = handle.next_request().await.expect("called");
    send.send_error("agent failed");
    let err = assert_ready_err!(fut.poll());
    assert_eq!(err.to_string(), "agent failed");
    assert_eq!(counts(&gauge), (0, 0));
    assert_eq!(gauge.free_slots(), 1);
}

#[tokio::test]
async fn request_without_a_ticket_is_counted_too() {
    let (gauge, mut svc, mut handle) = setup(1);
    let fut = start(&mut svc, Request::new("bare"));
    assert_eq!(counts(&gauge), (1, 0));

    // A ticket from another gauge is left alone and this gauge still counts the run.
    let other = Gauge::new(1, 1);
    let mut req = Request::new("foreign");
    req.extensions_mut()
        .insert(other.try_admit().expect("room"));
    let mut foreign = start(&mut svc, req);
    assert_eq!(counts(&gauge), (1, 1));

    drop(fut);
    assert_pending!(foreign.poll());
    let _ = handle.next_request().await;
    let (req, _) = handle.next_request().await.expect("foreign runs");
    assert!(req
        .extensions()
        .get::<crate::admission::Ticket>()
        .is_some_and(|t| t.belongs_to(&other) && !t.is_active()));
}

#[tokio::test]
async fn panicking_service_releases_permit_and_ticket() {
    let gauge = Gauge::new(1, 10);
    let svc = ConcurrencyLimitLayer::new(gauge.clone()).layer(service_fn(
        |_req: Request<&'static str>| -> std::future::Ready<Result<Response<()>, Infallible>> {
            panic!("the job blew up")
        },
    ));
    let joined = tokio::spawn(svc.oneshot(admitted(&gauge, "boom"))).await;
    assert!(joined.expect_err("the task panicked").is_panic());
    assert_eq!(counts(&gauge), (0, 0));
    assert_eq!(gauge.free_slots(), 1);
}

#[test]
fn layers_share_the_gauge_they_were_built_with() {
    let gauge = Gauge::new(1, 1);
    let layer = ConcurrencyLimitLayer::new(gauge.clone());
    let one = layer.layer(());
    let two = layer.layer(());
    assert!(one.gauge().same_as(two.gauge()));
    assert!(one.gauge().same_as(&gauge));
}

/// Records the gauge's counts when dropped.
struct CountsOnDrop {
    gauge: Gauge,
    seen: Arc<std::sync::Mutex<Option<(usize, usize)>>>,
}

impl Drop for CountsOnDrop {
    fn drop(&mut self) {
        *self.seen.lock().unwrap() = Some(counts(&self.gauge));
    }
}

#[tokio::test]
async fn a_dropped_run_stops_before_its_slot_counts_as_free() {
    let gauge = Gauge::new(1, 10);
    let seen = Arc::new(std::sync::Mutex::new(None));
    let inner = {
        let (gauge, seen) = (gauge.clone(), seen.clone());
        service_fn(move |_req: Request<&'static str>| {
            // What a run holds (its processes, its workspace), released when its future drops.
            let held = CountsOnDrop {
                gauge: gauge.clone(),
                seen: seen.clone(),
            };
            async move {
                let _held = held;
                std::future::pending::<Result<Response<&'static str>, Infallible>>().await
            }
        })
    };
    let mut svc = ConcurrencyLimitLayer::new(gauge.clone()).layer(inner);
    let mut call = task::spawn(svc.ready().await.unwrap().call(admitted(&gauge, "run")));
    assert_pending!(call.poll());
    assert_eq!(counts(&gauge), (1, 0));
    drop(call);
    assert_eq!(
        *seen.lock().unwrap(),
        Some((1, 0)),
        "the run was still counted active while it was being stopped"
    );
    assert_eq!(counts(&gauge), (0, 0));
}
