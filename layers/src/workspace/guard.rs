//! The guard that gives a workspace back.

use std::path::PathBuf;
use std::sync::Arc;

use super::Provision;

/// Owns one provisioned workspace and releases it on drop, exactly once.
pub(super) struct Release {
    /// Whoever made the workspace removes it.
    provisioner: Arc<dyn Provision>,
    /// `None` once handed back, which makes a second release impossible.
    path: Option<PathBuf>,
}

impl Release {
    pub(super) fn new(provisioner: Arc<dyn Provision>, path: PathBuf) -> Self {
        Self {
            provisioner,
            path: Some(path),
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            tracing::debug!(path = %path.display(), "releasing workspace");
            self.provisioner.release(path);
        }
    }
}
