use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_test::mock;

use super::*;
use crate::BoxError;

#[derive(Clone, Copy, Default)]
enum Mode {
    /// Hands out `/ws/1`, `/ws/2`, ...
    #[default]
    Succeed,
    /// Fails every time.
    Fail,
    /// Never finishes provisioning.
    Hang,
}

/// Records what was provisioned and released, so tests can count releases.
#[derive(Default)]
struct Fake {
    mode: Mode,
    made: AtomicUsize,
    released: Mutex<Vec<PathBuf>>,
}

impl Fake {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            mode,
            ..Self::default()
        })
    }

    fn released(&self) -> Vec<PathBuf> {
        self.released.lock().expect("not poisoned").clone()
    }
}

#[derive(Debug)]
struct DiskFull;

impl fmt::Display for DiskFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("disk full")
    }
}

impl std::error::Error for DiskFull {}

impl Provision for Fake {
    fn provision(&self) -> ProvisionFuture {
        match self.mode {
            Mode::Succeed => {
                let n = self.made.fetch_add(1, Ordering::SeqCst) + 1;
                Box::pin(async move { Ok(PathBuf::from(format!("/ws/{n}"))) })
            }
            Mode::Fail => Box::pin(async { Err(Box::new(DiskFull) as BoxError) }),
            Mode::Hang => Box::pin(std::future::pending()),
        }
    }

    fn release(&self, path: PathBuf) {
        self.released.lock().expect("not poisoned").push(path);
    }
}

type Mock = mock::Mock<Request<()>, Response<&'static str>>;
type Handle = mock::Handle<Request<()>, Response<&'static str>>;

/// One call to a workspace service over a mock, made but not yet polled.
struct Started {
    fake: Arc<Fake>,
    /// Kept alive: once every clone of the mock is gone, its handle reports no more requests
    /// rather than none yet.
    _svc: mock::Spawn<Workspace<Mock>>,
    handle: Handle,
    fut: task::Spawn<ResponseFuture<Mock, ()>>,
}

fn start(mode: Mode) -> Started {
    let fake = Fake::new(mode);
    let (mut svc, handle) = mock::spawn_layer(WorkspaceLayer::new(fake.clone()));
    assert_ready_ok!(svc.poll_ready());
    let fut = task::spawn(svc.call(Request::new(())));
    Started {
        fake,
        _svc: svc,
        handle,
        fut,
    }
}

fn ws(n: usize) -> PathBuf {
    PathBuf::from(format!("/ws/{n}"))
}

#[tokio::test]
async fn path_is_visible_to_inner_and_released_after_success() {
    let mut run = start(Mode::Succeed);
    assert_pending!(run.fut.poll());

    let (req, send) = run.handle.next_request().await.expect("inner called");
    assert_eq!(
        req.extensions().get::<WorkspacePath>(),
        Some(&WorkspacePath(ws(1)))
    );
    assert!(run.fake.released().is_empty(), "kept while the run goes on");

    send.send_response(Response::new("done"));
    assert_eq!(*assert_ready_ok!(run.fut.poll()).body(), "done");
    assert_eq!(
        run.fake.released(),
        [ws(1)],
        "released once the run completed"
    );
    drop(run.fut);
    assert_eq!(run.fake.released(), [ws(1)], "and only once");
}

#[tokio::test]
async fn released_once_after_inner_error() {
    let mut run = start(Mode::Succeed);
    let handle = &mut run.handle;
    let responder = async {
        let (_, send) = handle.next_request().await.expect("inner called");
        send.send_error("agent failed");
    };
    let (result, ()) = tokio::join!(run.fut, responder);
    let err = result.expect_err("inner failed");
    assert!(!err.is::<ProvisionFailed>());
    assert_eq!(err.to_string(), "agent failed");
    assert_eq!(run.fake.released(), [ws(1)]);
}

#[tokio::test]
async fn released_once_when_dropped_mid_run() {
    let mut run = start(Mode::Succeed);
    assert_pending!(run.fut.poll());
    let (_req, _send) = run.handle.next_request().await.expect("inner called");

    drop(run.fut);
    assert_eq!(run.fake.released(), [ws(1)]);
}

#[tokio::test]
async fn dropped_while_provisioning_releases_nothing_and_never_calls_inner() {
    let mut run = start(Mode::Hang);
    assert_pending!(run.fut.poll());
    drop(run.fut);
    assert!(run.fake.released().is_empty());
    assert_pending!(run.handle.poll_request());
}

#[tokio::test]
async fn provision_failure_is_typed_and_inner_is_never_called() {
    let mut run = start(Mode::Fail);
    let err = run.fut.await.expect_err("provisioning fails");

    let failed = err.downcast_ref::<ProvisionFailed>().expect("typed error");
    assert_eq!(
        failed.to_string(),
        "workspace provisioning failed: disk full"
    );
    let source = std::error::Error::source(failed).expect("source kept");
    assert!(source.is::<DiskFull>());
    assert_pending!(run.handle.poll_request());
    assert!(run.fake.released().is_empty());
}

#[tokio::test]
async fn released_once_when_inner_panics() {
    let fake = Fake::new(Mode::Succeed);
    let svc = WorkspaceLayer::new(fake.clone()).layer(service_fn(
        |_req: Request<()>| -> std::future::Ready<Result<Response<()>, Infallible>> {
            panic!("the job blew up")
        },
    ));
    let joined = tokio::spawn(svc.oneshot(Request::new(()))).await;
    assert!(joined.expect_err("the task panicked").is_panic());
    assert_eq!(fake.released(), [ws(1)]);
}

#[tokio::test]
async fn every_request_gets_its_own_workspace() {
    let fake = Fake::new(Mode::Succeed);
    let svc = WorkspaceLayer::new(fake.clone()).layer(service_fn(|req: Request<()>| async move {
        let path = req.extensions().get::<WorkspacePath>().cloned();
        Ok::<_, Infallible>(Response::new(path))
    }));
    let (one, two) = tokio::join!(
        svc.clone().oneshot(Request::new(())),
        svc.oneshot(Request::new(()))
    );
    let mut seen = vec![
        one.expect("ran").into_body().expect("path set").0,
        two.expect("ran").into_body().expect("path set").0,
    ];
    seen.sort();
    assert_eq!(seen, [ws(1), ws(2)]);
    let mut released = fake.released();
    released.sort();
    assert_eq!(released, [ws(1), ws(2)]);
}
