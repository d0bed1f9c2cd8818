//! The response future that provisions a workspace, runs the request in it, and releases it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::guard::Release;
use super::{Provision, ProvisionFailed, ProvisionFuture, WorkspacePath};
use crate::BoxError;

pin_project! {
    /// Response future of [`Workspace`](super::Workspace).
    ///
    /// Once the workspace exists, the future owns it: dropping the future at any point releases
    /// it, after the inner future.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        // Needed to release the workspace once provisioning hands one over.
        provisioner: Arc<dyn Provision>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // Waiting for the workspace; `call` is taken when it arrives. Nothing to release yet:
        // a dropped provisioning future cleans up after itself.
        Provisioning {
            provision: ProvisionFuture,
            call: Option<(S, Request<B>)>,
        },
        // Running in the workspace. Fields drop in order: the run stops before its workspace
        // is removed.
        Running {
            #[pin]
            future: S::Future,
            guard: Release,
        },
        Done,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn new(
        provision: ProvisionFuture,
        provisioner: Arc<dyn Provision>,
        service: S,
        req: Request<B>,
    ) -> Self {
        Self {
            state: State::Provisioning {
                provision,
                call: Some((service, req)),
            },
            provisioner,
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Provisioning { provision, call } => {
                    let path = match ready!(provision.as_mut().poll(cx)) {
                        Ok(path) => path,
                        Err(source) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(ProvisionFailed::new(source).into()));
                        }
                    };
                    // The guard exists before the inner service is called, so a panic in
                    // `call` still releases the workspace while unwinding.
                    let guard = Release::new(this.provisioner.clone(), path.clone());
                    let (mut service, mut req) = call.take().expect("request is sent only once");
                    req.extensions_mut().insert(WorkspacePath(path));
                    let future = service.call(req);
                    this.state.set(State::Running { future, guard });
                }
                StateProj::Running { future, .. } => {
                    let result = ready!(future.poll(cx));
                    // Release now rather than whenever the caller drops this future.
                    this.state.set(State::Done);
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Done => panic!("future polled after completion"),
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Provisioning { .. } => "Provisioning",
            State::Running { .. } => "Running",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
