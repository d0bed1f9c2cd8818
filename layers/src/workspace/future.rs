//! The response future that provisions a workspace, runs the request in it, and releases it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use http::Request;
use tower_service::Service;

use super::guard::Release;
use super::{Provision, ProvisionFailed, ProvisionFuture, WorkspacePath};
use crate::staged::{staged_future, Stage, StagedCall};
use crate::BoxError;

staged_future! {
    /// Response future of [`Workspace`](super::Workspace).
    ///
    /// Once the workspace exists, the future owns it: dropping the future at any point releases
    /// it, after the inner future.
    ResponseFuture<S, B> calls Request<B>, through InWorkspace
}

/// The workspace layer's part in the call: once provisioned, the workspace's path goes into the
/// request and a [`Release`] guard holds the workspace for the length of the run.
pub(super) struct InWorkspace {
    /// Needed to release the workspace once provisioning hands one over.
    provisioner: Arc<dyn Provision>,
}

impl fmt::Debug for InWorkspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InWorkspace").finish_non_exhaustive()
    }
}

impl<B> Stage<Request<B>> for InWorkspace {
    const WAITING: &'static str = "Provisioning";
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
