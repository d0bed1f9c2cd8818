//! The workspace extension, layer and service.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::{Provision, ResponseFuture};
use crate::accessors::inner_accessors;
use crate::BoxError;

/// Request extension inserted by [`Workspace`]: the directory this request's run owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspacePath(pub PathBuf);

/// Wraps a service in [`Workspace`].
#[derive(Clone)]
pub struct WorkspaceLayer {
    /// Makes and removes workspaces; shared by every service this layer builds.
    provisioner: Arc<dyn Provision>,
}

impl WorkspaceLayer {
    /// Provisions a workspace per request with `provisioner`.
    ///
    /// Any `Arc<P>` with `P: Provision` coerces to the `Arc<dyn Provision>` this takes.
    pub fn new(provisioner: Arc<dyn Provision>) -> Self {
        Self { provisioner }
    }
}

impl<S> Layer<S> for WorkspaceLayer {
    type Service = Workspace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Workspace::new(inner, self.provisioner.clone())
    }
}

impl fmt::Debug for WorkspaceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkspaceLayer").finish_non_exhaustive()
    }
}

/// Gives every request its own workspace and releases it afterwards; see the
/// [module docs](super).
#[derive(Clone)]
pub struct Workspace<S> {
    /// The service that runs in the workspace.
    inner: S,
    /// Makes and removes workspaces.
    provisioner: Arc<dyn Provision>,
}

impl<S> Workspace<S> {
    /// Wraps `inner`, provisioning a workspace per request with `provisioner`.
    pub fn new(inner: S, provisioner: Arc<dyn Provision>) -> Self {
        Self { inner, provisioner }
    }

    /// Returns a [`WorkspaceLayer`] that wraps services this way.
    pub fn layer(provisioner: Arc<dyn Provision>) -> WorkspaceLayer {
        WorkspaceLayer::new(provisioner)
    }

    inner_accessors!(S);
}

impl<S: fmt::Debug> fmt::Debug for Workspace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for Workspace<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let provision = self.provisioner.provision();
        // The service that was polled ready is called once the workspace exists; a fresh clone
        // stays behind to be polled for the next request.
        ResponseFuture::new(provision, self.provisioner.clone(), &mut self.inner, req)
    }
}
