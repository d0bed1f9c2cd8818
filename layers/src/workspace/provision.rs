//! The strategy the workspace layer asks for a fresh workspace.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::BoxError;

/// A future that yields a provisioned workspace path.
pub type ProvisionFuture =
    Pin<Box<dyn Future<Output = Result<PathBuf, BoxError>> + Send + 'static>>;

/// Creates and removes the per-request workspaces the [`WorkspaceLayer`](super::WorkspaceLayer) hands out.
///
/// Implementations decide what a workspace is: a fresh git clone, an empty scratch directory, a
/// mounted volume. The layer only promises to call [`release`](Provision::release) exactly once for
/// every path [`provision`](Provision::provision) returned, however the request ends.
pub trait Provision: Send + Sync + 'static {
    /// Creates a new workspace and returns its path. Each call must return a path no other
    /// in-flight request holds.
    fn provision(&self) -> ProvisionFuture;

    /// Removes a workspace. Called from `Drop`, so it must not block: implementations spawn the
    /// removal and return at once, which keeps the removal off the response path.
    fn release(&self, path: PathBuf);
}
