//! A fresh workspace for every request, removed however the request ends.
//!
//! [`WorkspaceLayer`] asks a [`Provision`] strategy for a workspace (a directory: an empty scratch
//! folder, a fresh clone of a repository, ...) before calling the inner service, and hands its
//! path down in the [`WorkspacePath`] extension. The layer owns the workspace from then on:
//! [`Provision::release`] is called exactly once for it, after the inner future is gone, whether
//! the run completed, failed, timed out, was cancelled, or panicked.
//!
//! If provisioning fails, the inner service is not called and the call fails with
//! [`ProvisionFailed`], which wraps the provisioner's error. A request dropped while its workspace
//! is still being provisioned drops the provisioning future with it; the provisioner must clean up
//! anything half-made when its future is dropped.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, path::PathBuf, sync::{Arc, Mutex}};
//!
//! use gateway_layers::workspace::{Provision, ProvisionFuture, WorkspaceLayer, WorkspacePath};
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! /// Hands out numbered directories and remembers which ones were released.
//! #[derive(Default)]
//! struct Numbered {
//!     released: Mutex<Vec<PathBuf>>,
//! }
//!
//! impl Provision for Numbered {
//!     fn provision(&self) -> ProvisionFuture {
//!         Box::pin(async { Ok(PathBuf::from("/jobs/1")) })
//!     }
//!
//!     fn release(&self, path: PathBuf) {
//!         // A real provisioner spawns the removal and returns at once.
//!         self.released.lock().unwrap().push(path);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), gateway_layers::BoxError> {
//! let provisioner = Arc::new(Numbered::default());
//! let svc = ServiceBuilder::new()
//!     .layer(WorkspaceLayer::new(provisioner.clone()))
//!     .service(service_fn(|req: Request<()>| async move {
//!         let path = req.extensions().get::<WorkspacePath>().map(|p| p.0.clone());
//!         Ok::<_, Infallible>(Response::new(path))
//!     }));
//!
//! let res = svc.oneshot(Request::new(())).await?;
//! assert_eq!(res.body().as_deref(), Some("/jobs/1".as_ref()));
//! assert_eq!(*provisioner.released.lock().unwrap(), [PathBuf::from("/jobs/1")]);
//! # Ok(())
//! # }
//! ```

mod error;
mod future;
mod guard;
mod layer;
mod provision;

#[cfg(test)]
mod tests;

pub use self::error::ProvisionFailed;
pub use self::future::ResponseFuture;
pub use self::layer::{Workspace, WorkspaceLayer, WorkspacePath};
pub use self::provision::{Provision, ProvisionFuture};
