//! The response future that provisions a workspace, runs the request in it, and releases it.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::guard::Release;
use super::{Provision, ProvisionFailed, ProvisionFuture, WorkspacePath};
use crate::staged::{Stage, StagedCall};
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
        call: StagedCall<InWorkspace, S, Request<B>>,
    }
}

/// The workspace layer's part in the call: once provisioned, the workspace's path goes into the
/// request and a [`Release`] guard holds the workspace for the length of the run.
pub(super) struct InWorkspace {
    /// Needed to release the workspace once provisioning hands one over.
    provisioner: Arc<dyn Provision>,
}

impl<B> Stage<Request<B>> for InWorkspace {
    type Ready = PathBuf;
    type Error = BoxError;
    type Guard = Release;

    fn start(&mut self, path: PathBuf, req: &mut Request<B>) -> Release {
        let guard = Release::new(self.provisioner.clone(), path.clone());
        req.extensions_mut().insert(WorkspacePath(path));
        guard
    }

    fn fail(&mut self, source: BoxError) -> BoxError {
        ProvisionFailed::new(source).into()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    /// Waits for `provision`, then sends `req` to the service in `inner`, which was polled ready,
    /// and releases the workspace through `provisioner` once the run is over.
    pub(super) fn new(
        provision: ProvisionFuture,
        provisioner: Arc<dyn Provision>,
        inner: &mut S,
        req: Request<B>,
    ) -> Self
    where
        S: Clone,
    {
        Self {
            call: StagedCall::new(InWorkspace { provisioner }, provision, inner, req),
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
        self.project().call.poll(cx)
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.call.state_name("Provisioning"))
            .finish_non_exhaustive()
    }
}
