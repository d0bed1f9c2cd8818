//! The admission ticket a request carries from admission to its run.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::gauge::Shared;
use super::Gauge;

/// One admitted request's place in a [`Gauge`]: counted as queued, then as active once the
/// concurrency layer lets it run.
///
/// Clones share one place. When the last clone drops, the request leaves the counts, from
/// whichever state it was in; so holding a clone keeps the slot taken.
#[derive(Clone)]
pub struct Ticket {
    inner: Arc<Inner>,
}

struct Inner {
    /// The gauge this ticket is counted in.
    shared: Arc<Shared>,
    /// Whether the ticket moved from queued to active; only changed under the gauge's lock.
    active: AtomicBool,
}

impl Ticket {
    /// Wraps a place the caller has just counted as queued.
    pub(super) fn queued(shared: Arc<Shared>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                active: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the request holds a run permit (active) rather than waiting for one (queued).
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Whether this ticket is counted in `gauge`.
    pub fn belongs_to(&self, gauge: &Gauge) -> bool {
        self.inner.shared.is(gauge)
    }

    /// Moves the ticket from queued to active; does nothing if it already is active.
    pub(crate) fn activate(&self) {
        self.inner.shared.activate(&self.inner.active);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.release(&self.active);
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("active", &self.is_active())
            .finish()
    }
}
