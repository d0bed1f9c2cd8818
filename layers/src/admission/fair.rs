//! The gauge's fair scheduler: start-time fair queueing (SFQ, Goyal, Vin and Cheng 1996) in its
//! multi-server form, over the keys tickets are admitted for.
//!
//! Every key `k` keeps `last_finish[k]`. The virtual time `V` is the smallest start tag among the
//! runs holding a slot (when none does, the largest finish tag handed out so far). A ticket of key
//! `k` admitted with weight `w` gets the start tag `S = max(V, last_finish[k])` and the finish tag
//! `F = S + 1/w`, and `last_finish[k] = F`. When a slot frees, the waiting run with the smallest
//! `(S, admission order)` among keys below their `max_concurrent` gets it.
//!
//! That is FIFO within a key (a key's tags only grow), a share of the slots proportional to the
//! weights across keys that compete, and no credit for idling: a key that was quiet starts at `V`,
//! level with the runs now running, so its first runs go ahead of another key's long queue without
//! it being able to bank time. SFQ was chosen over deficit round-robin because a tag is one number
//! fixed at admission, which a database can store in a column and order by in an index; the same
//! rule then orders every store.
//!
//! Everything here runs under the gauge's one lock, so it is plain data.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// A virtual-time tag, ordered totally (no tag is ever NaN: weights are at least 1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Tag(pub(super) f64);

impl Eq for Tag {}

impl PartialOrd for Tag {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tag {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Where a ticket stands in the scheduler: its key, its start tag and its admission number.
#[derive(Clone, Debug)]
pub(super) struct Place {
    pub(super) key: Arc<str>,
    pub(super) start: Tag,
    pub(super) seq: u64,
}

/// A ticket waiting for a slot: the channel its slot is sent down.
pub(super) type Sender = oneshot::Sender<super::gauge::Slot>;

/// One key's state.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    /// Finish tag of the key's last admitted run.
    last_finish: f64,
    /// Runs of the key holding a slot.
    pub(super) running: usize,
    /// Tickets of the key admitted and not yet holding a slot.
    pub(super) queued: usize,
    /// The key's limit on runs at once, as of its latest admission.
    max_concurrent: Option<usize>,
    /// Tickets of the key waiting for a slot, in `(S, seq)` order (FIFO within the key).
    waiting: BTreeMap<(Tag, u64), Sender>,
    /// The entry of this key in [`Sched::heads`], if it has one.
    head: Option<(Tag, u64)>,
}

/// The scheduler's state, behind the gauge's lock.
#[derive(Debug, Default)]
pub(super) struct Sched {
    /// Every key ever admitted. Bounded by the caller's keys (the gateway's configured names).
    pub(super) keys: HashMap<Arc<str>, KeyState>,
    /// The first waiting ticket of each key that may start a run now: the dispatch order.
    heads: BTreeSet<(Tag, u64, Arc<str>)>,
    /// Start tags of the runs holding a slot (a multiset), whose least is `V`.
    running: BTreeMap<Tag, usize>,
    /// Slots handed out and not yet given back.
    pub(super) in_use: usize,
    /// Largest finish tag handed out: `V` when nothing runs.
    max_finish: f64,
    /// Admission counter, the tie-break between equal tags.
    seq: u64,
    /// No dispatch before this instant.
    pub(super) paused_until: Option<Instant>,
}

/// A grant decided under the lock: the key and tag of the run that got a slot, and where to send
/// it.
pub(super) struct Grant {
    pub(super) key: Arc<str>,
    pub(super) start: Tag,
    pub(super) to: Sender,
}

impl Sched {
    /// The virtual time now.
    fn virtual_time(&self) -> f64 {
        self.running
            .first_key_value()
            .map_or(self.max_finish, |(tag, _)| tag.0)
    }

    /// Tags a newly admitted ticket of `key` with `weight`, counting it queued.
    pub(super) fn admit(
        &mut self,
        key: Arc<str>,
        weight: u32,
        max_concurrent: Option<usize>,
    ) -> Place {
        let v = self.virtual_time();
        let state = self.keys.entry(key.clone()).or_default();
        let start = v.max(state.last_finish);
        let finish = start + 1.0 / f64::from(weight.max(1));
        state.last_finish = finish;
        state.queued += 1;
        state.max_concurrent = max_concurrent;
        self.max_finish = self.max_finish.max(finish);
        self.seq += 1;
        let place = Place {
            key,
            start: Tag(start),
            seq: self.seq,
        };
        // A changed limit may let the key's head start (or hold it back) from now on.
        self.refresh_head(&place.key);
        place
    }

    /// Puts a ticket in its key's line of waiters.
    pub(super) fn wait(&mut self, place: &Place, to: Sender) {
        let state = self.keys.entry(place.key.clone()).or_default();
        state.waiting.insert((place.start, place.seq), to);
        self.refresh_head(&place.key);
    }

    /// A ticket that never got a slot leaves: out of its key's counts and line.
    pub(super) fn forget(&mut self, place: &Place) {
        if let Some(state) = self.keys.get_mut(&place.key) {
            state.queued = state.queued.saturating_sub(1);
            state.waiting.remove(&(place.start, place.seq));
        }
        self.refresh_head(&place.key);
    }

    /// A ticket got its slot and started: it is no longer queued.
    pub(super) fn started(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.queued = state.queued.saturating_sub(1);
        }
    }

    /// A slot comes back from a run of `key` that started with tag `start`.
    pub(super) fn release(&mut self, key: &Arc<str>, start: Tag) {
        self.in_use = self.in_use.saturating_sub(1);
        if let Some(n) = self.running.get_mut(&start) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&start);
            }
        }
        if let Some(state) = self.keys.get_mut(key) {
            state.running = state.running.saturating_sub(1);
        }
        self.refresh_head(key);
    }

    /// Takes the next run to start, if a slot is free, dispatch is not paused, and some key below
    /// its limit has a ticket waiting. The slot counts as taken from here on.
    pub(super) fn next(&mut self, capacity: usize, now: Instant) -> Option<Grant> {
        if self.in_use >= capacity || self.paused_until.is_some_and(|until| now < until) {
            return None;
        }
        let (_, _, key) = self.heads.pop_first()?;
        let state = self.keys.get_mut(&key)?;
        state.head = None;
        let ((start, _), to) = state.waiting.pop_first()?;
        state.running += 1;
        self.in_use += 1;
        *self.running.entry(start).or_default() += 1;
        self.refresh_head(&key);
        Some(Grant { key, start, to })
    }

    /// Keeps `key`'s entry in the dispatch order in line with its state: its first waiter, when
    /// it is below its `max_concurrent`; none otherwise.
    fn refresh_head(&mut self, key: &Arc<str>) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let eligible = state.max_concurrent.is_none_or(|max| state.running < max);
        let want = if eligible {
            state.waiting.first_key_value().map(|(k, _)| *k)
        } else {
            None
        };
        if want == state.head {
            return;
        }
        if let Some((tag, seq)) = state.head.take() {
            self.heads.remove(&(tag, seq, key.clone()));
        }
        if let Some((tag, seq)) = want {
            self.heads.insert((tag, seq, key.clone()));
        }
        state.head = want;
    }
}
