//! The error for a run that outlived its deadline.

use std::fmt;
use std::time::Duration;

/// The inner service did not answer within the request's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed {
    /// The deadline that passed, for the message and for callers that report it.
    duration: Duration,
}

impl Elapsed {
    /// An error for a run that outlived `duration`.
    pub const fn new(duration: Duration) -> Self {
        Self { duration }
    }

    /// The deadline that passed.
    pub const fn duration(&self) -> Duration {
        self.duration
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deadline of {:?} elapsed", self.duration)
    }
}

impl std::error::Error for Elapsed {}
