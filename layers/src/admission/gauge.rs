//! The shared counts of running and queued work, and the run permits.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Semaphore;

use super::{Overloaded, Ticket};

/// The shared state of admission and concurrency: how many requests run, how many wait, and the
/// permits that let them run.
///
/// Build it once and clone it into [`AdmissionLayer`](super::AdmissionLayer),
/// [`ConcurrencyLimitLayer`](crate::concurrency::ConcurrencyLimitLayer) and whatever reports
/// health; clones share one state (an [`Arc`] inside), so cloning is cheap.
#[derive(Clone)]
pub struct Gauge {
    /// Shared by every clone and by every ticket, which report back to it when they drop.
    shared: Arc<Shared>,
}

/// A moment's reading of a [`Gauge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaugeSnapshot {
    /// Requests running: they hold a permit.
    pub active: usize,
    /// Requests admitted and waiting for a permit.
    pub queued: usize,
    /// How many may run at once (the `concurrency` given to [`Gauge::new`]).
    pub capacity: usize,
    /// How many may be in flight, running or queued, before new requests are turned away.
    pub queue_depth: usize,
}

impl GaugeSnapshot {
    /// Whether every permit is taken, so a newly admitted request would have to wait.
    pub const fn is_busy(&self) -> bool {
        self.active >= self.capacity
    }
}

pub(super) struct Shared {
    /// Behind one lock so the depth check and the increment are a single step: two requests
    /// racing for the last slot cannot both win.
    counts: Mutex<Counts>,
    /// Permits for running, as given to [`Gauge::new`].
    capacity: usize,
    /// Limit on active + queued.
    queue_depth: usize,
    /// The permits the concurrency layer waits for. Tokio's semaphore is fair, which makes the
    /// queue FIFO. An `Arc` because the concurrency layer holds owned permits.
    semaphore: Arc<Semaphore>,
}

#[derive(Default)]
struct Counts {
    active: usize,
    queued: usize,
    /// Set by [`Gauge::close`]: admit no more.
    closed: bool,
}

impl Gauge {
    /// A gauge that lets `concurrency` requests run at once and admits new ones while fewer than
    /// `queue_depth` are in flight (running or queued).
    ///
    /// A `queue_depth` below `concurrency` means some permits are never used; a `concurrency` of
    /// zero means nothing ever runs.
    pub fn new(concurrency: usize, queue_depth: usize) -> Self {
        let capacity = concurrency.min(Semaphore::MAX_PERMITS);
        Self {
            shared: Arc::new(Shared {
                counts: Mutex::new(Counts::default()),
                capacity,
                queue_depth,
                semaphore: Arc::new(Semaphore::new(capacity)),
            }),
        }
    }

    /// Reads the current counts.
    pub fn snapshot(&self) -> GaugeSnapshot {
        self.shared.snapshot(&self.shared.lock())
    }

    /// Admits a request as queued, or fails with [`Overloaded`] when `queue_depth` requests are
    /// already in flight or the gauge is closed.
    pub fn admit(&self) -> Result<Ticket, Overloaded> {
        let mut counts = self.shared.lock();
        if counts.closed || counts.active + counts.queued >= self.shared.queue_depth {
            return Err(Overloaded::new(self.shared.snapshot(&counts)));
        }
        counts.queued += 1;
        drop(counts);
        Ok(Ticket::queued(self.shared.clone()))
    }

    /// Admits a request as queued, or returns `None` when `queue_depth` requests are already in
    /// flight or the gauge is closed.
    pub fn try_admit(&self) -> Option<Ticket> {
        self.admit().ok()
    }

    /// Counts a request as queued without checking the depth or whether the gauge is closed.
    ///
    /// The concurrency layer uses this for requests that arrive without a [`Ticket`], so that
    /// every run shows in the counts.
    pub fn admit_unchecked(&self) -> Ticket {
        self.shared.lock().queued += 1;
        Ticket::queued(self.shared.clone())
    }

    /// Stops admitting requests, for a graceful shutdown. Requests already admitted keep their
    /// tickets and still run.
    pub fn close(&self) {
        self.shared.lock().closed = true;
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// The run permits, shared with the concurrency layer.
    pub(crate) fn semaphore(&self) -> &Arc<Semaphore> {
        &self.shared.semaphore
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self.shared.lock();
        f.debug_struct("Gauge")
            .field("active", &counts.active)
            .field("queued", &counts.queued)
            .field("capacity", &self.shared.capacity)
            .field("queue_depth", &self.shared.queue_depth)
            .field("closed", &counts.closed)
            .finish()
    }
}

impl Shared {
    /// The counts are plain integers updated in a few lines that cannot panic, so a poisoned lock
    /// still holds consistent counts and is used as is.
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self, counts: &Counts) -> GaugeSnapshot {
        GaugeSnapshot {
            active: counts.active,
            queued: counts.queued,
            capacity: self.capacity,
            queue_depth: self.queue_depth,
        }
    }

    /// Moves one ticket from queued to active, once: `active` is the ticket's own flag, flipped
    /// under the lock so the ticket's drop always undoes exactly what was counted.
    pub(super) fn activate(&self, active: &AtomicBool) {
        let mut counts = self.lock();
        if !active.swap(true, Ordering::Relaxed) {
            counts.queued = counts.queued.saturating_sub(1);
            counts.active += 1;
        }
    }

    /// Forgets one ticket, from whichever count it was in.
    pub(super) fn release(&self, active: &AtomicBool) {
        let mut counts = self.lock();
        if active.load(Ordering::Relaxed) {
            counts.active = counts.active.saturating_sub(1);
        } else {
            counts.queued = counts.queued.saturating_sub(1);
        }
    }

    /// Whether `gauge` is a handle on this state.
    pub(super) fn is(&self, gauge: &Gauge) -> bool {
        std::ptr::eq(self, Arc::as_ptr(&gauge.shared))
    }
}
