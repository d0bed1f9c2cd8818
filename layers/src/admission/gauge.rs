//! The shared counts of running and queued work, and the fair scheduler that hands out slots.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::fair::{Place, Sched, Tag};
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
    /// racing for the last slot cannot both win. The fair scheduler lives under the same lock.
    counts: Mutex<Counts>,
    /// Slots for running, as given to [`Gauge::new`].
    capacity: usize,
    /// Limit on active + queued.
    queue_depth: usize,
}

#[derive(Default)]
struct Counts {
    active: usize,
    queued: usize,
    /// Set by [`Gauge::close`]: admit no more.
    closed: bool,
    /// Who gets the next free slot.
    sched: Sched,
}

/// One key's limits, given with each admission for it ([`Gauge::admit_for`]).
///
/// The latest admission's `max_concurrent` is the one in force for the key; `weight` tags the
/// admitted run only, so a changed weight applies to runs admitted after the change and nothing
/// already queued is reordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLimits {
    /// The key's share of the slots when keys compete (at least 1; 0 counts as 1).
    pub weight: u32,
    /// Runs of the key holding a slot at once; `None` for no limit but the gauge's.
    pub max_concurrent: Option<usize>,
    /// Runs of the key admitted and waiting for a slot; `None` for no limit but `queue_depth`.
    pub max_queued: Option<usize>,
}

impl Default for KeyLimits {
    /// Weight 1, no per-key limit.
    fn default() -> Self {
        Self {
            weight: 1,
            max_concurrent: None,
            max_queued: None,
        }
    }
}

/// A moment's reading of one key in a [`Gauge`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeySnapshot {
    /// The key's runs holding a slot.
    pub running: usize,
    /// The key's runs admitted and not yet holding a slot.
    pub queued: usize,
}

/// Why [`Gauge::admit_for`] turned a request away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmitError {
    /// The gauge is full (`queue_depth` in flight) or closed: nobody is admitted.
    Full(Overloaded),
    /// This key already has `max_queued` runs waiting; other keys are still admitted.
    KeyFull {
        /// The key turned away.
        key: Arc<str>,
        /// Its limit, reached.
        max_queued: usize,
    },
}

impl fmt::Display for AdmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdmitError::Full(overloaded) => overloaded.fmt(f),
            AdmitError::KeyFull { key, max_queued } => write!(
                f,
                "key {key:?} already has {max_queued} runs queued, its limit"
            ),
        }
    }
}

impl std::error::Error for AdmitError {}

/// A slot to run in, handed out by the gauge's scheduler; giving it back (by dropping it) starts
/// the next run in fair order.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    key: Arc<str>,
    start: Tag,
    /// False once the slot was taken back without having been given (see [`Shared::dispatch`]).
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut counts = self.shared.lock();
        counts.sched.release(&self.key, self.start);
        drop(counts);
        self.shared.dispatch();
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).finish()
    }
}

impl Gauge {
    /// A gauge that lets `concurrency` requests run at once and admits new ones while fewer than
    /// `queue_depth` are in flight (running or queued).
    ///
    /// A `queue_depth` below `concurrency` means some permits are never used; a `concurrency` of
    /// zero means nothing ever runs.
    pub fn new(concurrency: usize, queue_depth: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                counts: Mutex::new(Counts::default()),
                capacity: concurrency,
                queue_depth,
            }),
        }
    }

    /// Reads the current counts.
    pub fn snapshot(&self) -> GaugeSnapshot {
        self.shared.snapshot(&self.shared.lock())
    }

    /// Admits a request as queued, or fails with [`Overloaded`] when `queue_depth` requests are
    /// already in flight or the gauge is closed.
    ///
    /// The ticket is for the default key `""` with [`KeyLimits::default`]; see
    /// [`admit_for`](Self::admit_for) to admit for a key of your own.
    pub fn admit(&self) -> Result<Ticket, Overloaded> {
        self.admit_for(Arc::from(""), KeyLimits::default())
            .map_err(|error| match error {
                AdmitError::Full(overloaded) => overloaded,
                // The default limits have no per-key bound.
                AdmitError::KeyFull { .. } => Overloaded::new(self.snapshot()),
            })
    }

    /// Admits a request of `key` as queued, tagged for fair dispatch with `limits.weight`; fails
    /// with [`AdmitError::Full`] when `queue_depth` requests are already in flight or the gauge
    /// is closed, or with [`AdmitError::KeyFull`] when `key` already has `limits.max_queued`
    /// requests waiting (other keys are still admitted).
    ///
    /// Slots go to waiting requests in start-time fair order (see the
    /// [module docs](super#fair-dispatch)): FIFO within a key, shares in proportion to the weights
    /// across keys, and a key at `limits.max_concurrent` running is passed over, never blocking
    /// the others.
    pub fn admit_for(&self, key: Arc<str>, limits: KeyLimits) -> Result<Ticket, AdmitError> {
        let mut counts = self.shared.lock();
        if counts.closed || counts.active + counts.queued >= self.shared.queue_depth {
            return Err(AdmitError::Full(Overloaded::new(
                self.shared.snapshot(&counts),
            )));
        }
        if let Some(max_queued) = limits.max_queued {
            let queued = counts.sched.keys.get(&key).map_or(0, |k| k.queued);
            if queued >= max_queued {
                return Err(AdmitError::KeyFull { key, max_queued });
            }
        }
        counts.queued += 1;
        let place = counts
            .sched
            .admit(key, limits.weight, limits.max_concurrent);
        drop(counts);
        Ok(Ticket::queued(self.shared.clone(), place))
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
        self.admit_unchecked_for(Arc::from(""), KeyLimits::default())
    }

    /// Counts a request of `key` as queued, tagged like [`admit_for`](Self::admit_for), without
    /// checking any depth or whether the gauge is closed: for work already accepted earlier (a job
    /// picked up again after a restart).
    pub fn admit_unchecked_for(&self, key: Arc<str>, limits: KeyLimits) -> Ticket {
        let mut counts = self.shared.lock();
        counts.queued += 1;
        let place = counts
            .sched
            .admit(key, limits.weight, limits.max_concurrent);
        drop(counts);
        Ticket::queued(self.shared.clone(), place)
    }

    /// How many runs of `key` hold a slot and how many wait.
    pub fn key_snapshot(&self, key: &str) -> KeySnapshot {
        let counts = self.shared.lock();
        counts
            .sched
            .keys
            .get(key)
            .map(|k| KeySnapshot {
                running: k.running,
                queued: k.queued,
            })
            .unwrap_or_default()
    }

    /// Holds dispatch until `until`: nothing new starts (queued requests stay queued, running ones
    /// go on), and at `until` dispatch resumes by itself. A later call moves the instant; an
    /// instant already past resumes at once. Must be called inside a tokio runtime (a timer task
    /// resumes dispatch).
    pub fn pause_until(&self, until: Instant) {
        self.shared.lock().sched.paused_until = Some(until);
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut counts = shared.lock();
            // A later pause (or a resume) owns the instant now.
            if counts.sched.paused_until == Some(until) {
                counts.sched.paused_until = None;
            }
            drop(counts);
            shared.dispatch();
        });
    }

    /// Resumes dispatch now, ending a pause early.
    pub fn resume(&self) {
        self.shared.lock().sched.paused_until = None;
        self.shared.dispatch();
    }

    /// The instant dispatch is paused until, while it is paused.
    pub fn paused_until(&self) -> Option<Instant> {
        let until = self.shared.lock().sched.paused_until?;
        (Instant::now() < until).then_some(until)
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

    /// Waits for a slot for `ticket` (a ticket of this gauge), in fair order; the slot is held
    /// until the returned [`Slot`] drops.
    pub(crate) fn slot(&self, ticket: &Ticket) -> oneshot::Receiver<Slot> {
        let (to, slot) = oneshot::channel();
        self.shared.lock().sched.wait(ticket.place(), to);
        self.shared.dispatch();
        slot
    }

    /// Slots not held by a run now.
    #[cfg(test)]
    pub(crate) fn free_slots(&self) -> usize {
        let counts = self.shared.lock();
        self.shared.capacity.saturating_sub(counts.sched.in_use)
    }

    /// Whether `other` is a handle on the same state.
    #[cfg(test)]
    pub(crate) fn same_as(&self, other: &Gauge) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
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
    pub(super) fn activate(&self, active: &AtomicBool, place: &Place) {
        let mut counts = self.lock();
        if !active.swap(true, Ordering::Relaxed) {
            counts.queued = counts.queued.saturating_sub(1);
            counts.active += 1;
            counts.sched.started(&place.key);
        }
    }

    /// Forgets one ticket, from whichever count it was in.
    pub(super) fn release(&self, active: &AtomicBool, place: &Place) {
        let mut counts = self.lock();
        if active.load(Ordering::Relaxed) {
            counts.active = counts.active.saturating_sub(1);
        } else {
            counts.queued = counts.queued.saturating_sub(1);
            counts.sched.forget(place);
        }
    }

    /// Hands free slots to waiting tickets in fair order, while there are both. A ticket that
    /// stopped waiting (its receiver gone) gives its slot straight back.
    fn dispatch(self: &Arc<Self>) {
        let mut counts = self.lock();
        let now = Instant::now();
        while let Some(grant) = counts.sched.next(self.capacity, now) {
            let slot = Slot {
                shared: Arc::clone(self),
                key: grant.key,
                start: grant.start,
                armed: true,
            };
            if let Err(mut slot) = grant.to.send(slot) {
                // Taken back under the lock: its drop must not take the lock again.
                slot.armed = false;
                counts.sched.release(&slot.key, slot.start);
            }
        }
    }

    /// Whether `gauge` is a handle on this state.
    pub(super) fn is(&self, gauge: &Gauge) -> bool {
        std::ptr::eq(self, Arc::as_ptr(&gauge.shared))
    }
}
