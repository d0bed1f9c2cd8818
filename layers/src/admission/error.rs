//! The error for a request turned away because the queue is full.

use std::fmt;

use super::GaugeSnapshot;

/// A request was turned away because the gauge was full or closed.
///
/// Returned by [`Gauge::admit`](super::Gauge::admit). [`AdmissionLayer`](super::AdmissionLayer)
/// answers with a response instead; this type is for code that admits by hand and for a rescue
/// point that maps errors to responses with `err.is::<Overloaded>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overloaded {
    /// The counts at the moment the request was turned away, for the error message.
    snapshot: GaugeSnapshot,
}

impl Overloaded {
    /// An error for a request turned away when the gauge read `snapshot`.
    pub const fn new(snapshot: GaugeSnapshot) -> Self {
        Self { snapshot }
    }

    /// The counts at the moment the request was turned away.
    pub const fn snapshot(&self) -> GaugeSnapshot {
        self.snapshot
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let GaugeSnapshot {
            active,
            queued,
            queue_depth,
            ..
        } = self.snapshot;
        write!(
            f,
            "overloaded: {active} running and {queued} queued, queue depth {queue_depth}"
        )
    }
}

impl std::error::Error for Overloaded {}
