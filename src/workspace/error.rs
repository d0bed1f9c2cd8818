//! The error a failed provision or start-up reports.

use std::fmt;

use gateway_layers::BoxError;

/// A workspace could not be set up: says which step, on which paths, and why.
///
/// The message carries the cause (`clone of /base into /jobs/ws-… failed: `git clone …` failed
/// (exit status: 128): fatal: …`); the cause is also available through
/// [`source`](std::error::Error::source), typically a [`CommandError`](super::CommandError) or
/// an [`io::Error`](std::io::Error).
#[derive(Debug)]
pub struct WorkspaceError {
    /// The step that failed, with its paths.
    step: String,
    /// Why it failed.
    cause: BoxError,
}

impl WorkspaceError {
    pub(crate) fn new(step: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        Self {
            step: step.into(),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for WorkspaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.cause)
    }
}

impl std::error::Error for WorkspaceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}
