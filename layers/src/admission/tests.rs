use http::{Request, Response, StatusCode};
use tokio_test::{assert_pending, assert_ready_ok};
use tower_service::Service;
use tower_test::mock;

use super::*;
use crate::BoxError;

fn snapshot(active: usize, queued: usize, capacity: usize, queue_depth: usize) -> GaugeSnapshot {
    GaugeSnapshot {
        active,
        queued,
        capacity,
        queue_depth,
    }
}

type Handle = mock::Handle<Request<()>, Response<String>>;

fn layer(gauge: &Gauge) -> AdmissionLayer<impl Fn(GaugeSnapshot) -> Response<String> + Clone> {
    AdmissionLayer::new(gauge.clone(), |snapshot: GaugeSnapshot| {
        let mut res = Response::new(format!("full: {} queued", snapshot.queued));
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res
    })
}

/// Sends a request that `svc` must turn away, and returns the answer: a 429 from the layer itself,
/// the inner service never called.
async fn turned_away<S>(svc: &mut mock::Spawn<S>, handle: &mut Handle) -> Response<String>
where
    S: Service<Request<()>, Response = Response<String>, Error = BoxError>,
{
    assert_ready_ok!(svc.poll_ready());
    let res = svc
        .call(Request::new(()))
        .await
        .expect("rejections are responses");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_pending!(handle.poll_request());
    res
}

#[tokio::test]
async fn full_queue_is_answered_without_calling_inner() {
    let gauge = Gauge::new(1, 2);
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Response<String>, _>(layer(&gauge));

    // Two requests are admitted; the inner service holds them (and their tickets).
    let mut held = Vec::new();
    for _ in 0..2 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(Request::new(()));
        let (req, send) = handle.next_request().await.expect("admitted");
        assert!(req.extensions().get::<Ticket>().is_some());
        held.push((req, send, fut));
    }
    assert_eq!(gauge.snapshot(), snapshot(0, 2, 1, 2));

    let res = turned_away(&mut svc, &mut handle).await;
    assert_eq!(res.body(), "full: 2 queued");
    assert_eq!(gauge.snapshot(), snapshot(0, 2, 1, 2));
}

#[tokio::test]
async fn ticket_is_released_when_the_request_is_dropped() {
    let gauge = Gauge::new(1, 1);
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Response<String>, _>(layer(&gauge));

    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::new(()));
    let (req, send) = handle.next_request().await.expect("admitted");
    assert_eq!(gauge.snapshot().queued, 1);

    // The inner service is done with the request; its ticket goes with it.
    drop(req);
    assert_eq!(gauge.snapshot().queued, 0);
    send.send_response(Response::new("done".into()));
    assert_eq!(fut.await.expect("inner answered").body(), "done");

    // The slot is free for the next request.
    assert_ready_ok!(svc.poll_ready());
    let _fut = svc.call(Request::new(()));
    let (req, _send) = handle.next_request().await.expect("admitted again");
    assert!(req.extensions().get::<Ticket>().is_some());
}

#[test]
fn counts_follow_a_ticket_through_its_life() {
    let gauge = Gauge::new(2, 5);
    assert_eq!(gauge.snapshot(), snapshot(0, 0, 2, 5));

    let ticket = gauge.try_admit().expect("room");
    let clone = ticket.clone();
    assert!(!ticket.is_active());
    assert_eq!(gauge.snapshot(), snapshot(0, 1, 2, 5));

    ticket.activate();
    assert!(clone.is_active());
    assert_eq!(gauge.snapshot(), snapshot(1, 0, 2, 5));

    // Activating twice counts once.
    clone.activate();
    assert_eq!(gauge.snapshot(), snapshot(1, 0, 2, 5));

    drop(ticket);
    assert_eq!(
        gauge.snapshot(),
        snapshot(1, 0, 2, 5),
        "a clone still holds the slot"
    );
    drop(clone);
    assert_eq!(gauge.snapshot(), snapshot(0, 0, 2, 5));

    let queued = gauge.try_admit().expect("room");
    drop(queued);
    assert_eq!(
        gauge.snapshot(),
        snapshot(0, 0, 2, 5),
        "a queued ticket frees its slot too"
    );
}

#[test]
fn depth_counts_active_and_queued() {
    let gauge = Gauge::new(1, 2);
    let running = gauge.try_admit().expect("room");
    running.activate();
    let _queued = gauge.try_admit().expect("room");
    assert!(gauge.try_admit().is_none());

    drop(running);
    assert!(gauge.try_admit().is_some());
}

#[tokio::test]
async fn closed_gauge_rejects_but_admitted_tickets_stay() {
    let gauge = Gauge::new(1, 10);
    let admitted = gauge.try_admit().expect("room");
    gauge.close();
    assert!(gauge.is_closed());
    assert!(gauge.try_admit().is_none());
    assert_eq!(gauge.snapshot().queued, 1);

    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Response<String>, _>(layer(&gauge));
    turned_away(&mut svc, &mut handle).await;

    // Runs that arrive without a ticket are still counted.
    let unchecked = gauge.admit_unchecked();
    assert_eq!(gauge.snapshot().queued, 2);
    drop((admitted, unchecked));
    assert_eq!(gauge.snapshot().queued, 0);
}

#[test]
fn admit_fails_with_a_typed_error() {
    let gauge = Gauge::new(1, 1);
    let _held = gauge.admit().expect("room");
    let err: BoxError = gauge.admit().expect_err("full").into();
    assert!(err.is::<Overloaded>());
    assert_eq!(
        err.to_string(),
        "overloaded: 0 running and 1 queued, queue depth 1"
    );
}

#[test]
fn racing_admissions_never_exceed_the_depth() {
    let gauge = Gauge::new(4, 50);
    let tickets: Vec<Ticket> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..100)
                        .filter_map(|_| gauge.try_admit())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker finished"))
            .collect()
    });
    assert_eq!(tickets.len(), 50);
    assert_eq!(gauge.snapshot().queued, 50);
    drop(tickets);
    assert_eq!(gauge.snapshot().queued, 0);
}

#[test]
fn tickets_know_their_gauge() {
    let one = Gauge::new(1, 1);
    let other = Gauge::new(1, 1);
    let ticket = one.admit_unchecked();
    assert!(ticket.belongs_to(&one.clone()));
    assert!(!ticket.belongs_to(&other));
}

#[tokio::test]
async fn activation_resolves_when_the_ticket_runs_and_holds_no_slot() {
    let gauge = Gauge::new(1, 1);
    let ticket = gauge.try_admit().expect("room");
    let mut activation = ticket.activation();
    let waiter = tokio::spawn(async move { activation.wait().await });
    ticket.activate();
    assert!(waiter.await.unwrap(), "the wait reports the start");

    let mut late = ticket.activation();
    assert!(late.is_active());
    drop(ticket);
    assert_eq!(gauge.snapshot().active, 0, "a watcher keeps no slot");
    assert!(gauge.try_admit().is_some());
    assert!(late.wait().await, "already active before the ticket went");
}
