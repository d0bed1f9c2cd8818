//! The error for a request whose workspace could not be provisioned.

use std::fmt;

use crate::BoxError;

/// The [`Provision`](super::Provision) strategy failed; the inner service was not called.
#[derive(Debug)]
pub struct ProvisionFailed {
    /// What the provisioner reported.
    source: BoxError,
}

impl ProvisionFailed {
    /// Wraps the provisioner's error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Display for ProvisionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workspace provisioning failed: {}", self.source)
    }
}

impl std::error::Error for ProvisionFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
