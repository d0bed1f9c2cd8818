//! The admission ticket a request carries from admission to its run.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use super::fair::Place;
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
    /// The ticket's key and fair-queueing tag.
    place: Place,
    /// Tells [`Activation`] watchers, who must not hold the slot themselves, that the run started.
    started: watch::Sender<bool>,
}

impl Ticket {
    /// Wraps a place the caller has just counted as queued.
    pub(super) fn queued(shared: Arc<Shared>, place: Place) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                active: AtomicBool::new(false),
                place,
                started: watch::Sender::new(false),
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

    /// A watcher that resolves when this ticket becomes active. Unlike a clone of the ticket, it
    /// does not keep the slot taken, so a job registry can hold it for as long as it likes.
    pub fn activation(&self) -> Activation {
        Activation {
            started: self.inner.started.subscribe(),
        }
    }

    /// The key the ticket was admitted for (`""` for [`Gauge::admit`]).
    pub fn key(&self) -> &str {
        &self.inner.place.key
    }

    /// The ticket's key and tag.
    pub(super) fn place(&self) -> &Place {
        &self.inner.place
    }

    /// Moves the ticket from queued to active; does nothing if it already is active.
    pub(crate) fn activate(&self) {
        self.inner
            .shared
            .activate(&self.inner.active, &self.inner.place);
        self.inner.started.send_replace(true);
    }
}

/// Watches one [`Ticket`] for the moment its run gets a permit.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use gateway_layers::admission::Gauge;
///
/// let gauge = Gauge::new(1, 10);
/// let ticket = gauge.try_admit().expect("room in the queue");
/// let mut activation = ticket.activation();
/// assert!(!activation.is_active());
/// drop(ticket);
/// // The ticket left the queue without running: the wait ends, reporting it never started.
/// assert!(!activation.wait().await);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Activation {
    started: watch::Receiver<bool>,
}

impl Activation {
    /// Whether the ticket is active now.
    pub fn is_active(&self) -> bool {
        *self.started.borrow()
    }

    /// Resolves with `true` once the ticket is active, or with `false` if every clone of the
    /// ticket was dropped before it ever became active.
    pub async fn wait(&mut self) -> bool {
        self.started.wait_for(|started| *started).await.is_ok()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.release(&self.active, &self.place);
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.key())
            .field("active", &self.is_active())
            .finish()
    }
}
