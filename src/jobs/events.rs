//! The per-job event log behind `GET /jobs/{id}/events`: append-only, replayable, live.
//!
//! The job's task appends; each subscriber keeps its own cursor into the log and is woken when
//! something is appended. Appending never waits for a subscriber, so a slow reader cannot slow the
//! run: it only falls behind, and catches up from the log. A subscriber that arrives late (even
//! after the job ended) replays everything from the start.
//!
//! The agent's events are bounded by the job's output cap in bytes; past it they are dropped and
//! one `truncated` event says so. Status changes and the end marker are always kept.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// Bytes an entry takes beyond its text: the entry in the log and the shared string's header,
/// rounded up for the allocator.
const ENTRY_OVERHEAD: usize = 64;

/// What an event reports; its name is the SSE `event:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// The job changed status: `{"status": ..., "at": ...}`.
    Status,
    /// One stream-json event of the agent, as the CLI printed it.
    Agent,
    /// The agent's events went past the output cap; later ones were dropped.
    Truncated,
    /// The job is over; the last event of every stream.
    End,
}

impl EventKind {
    /// The SSE event name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::Agent => "agent",
            EventKind::Truncated => "truncated",
            EventKind::End => "end",
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobEvent {
    /// Its position in the log, from 0; sent as the SSE `id:` so a client can resume.
    pub seq: usize,
    /// What it reports.
    pub kind: EventKind,
    /// Its JSON, shared by every subscriber that reads it.
    pub data: Arc<str>,
}

/// The event log of one job. Shared behind an `Arc` by the job's task and its subscribers.
#[derive(Debug)]
pub(crate) struct EventLog {
    /// The entries and the byte count; held only to append or to copy out a batch.
    state: Mutex<LogState>,
    /// Bumped on every append, so waiting subscribers wake; a watch never blocks its sender.
    version: watch::Sender<u64>,
}

#[derive(Debug)]
struct LogState {
    entries: Vec<JobEvent>,
    /// Bytes of agent events kept so far.
    agent_bytes: usize,
    /// Bytes of agent events the log keeps at most.
    cap: usize,
    /// Whether agent events were dropped.
    truncated: bool,
    /// Whether the end marker was appended; nothing follows it.
    closed: bool,
}

impl EventLog {
    /// An empty log keeping at most `cap` bytes of agent events.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(LogState {
                entries: Vec::new(),
                agent_bytes: 0,
                cap,
                truncated: false,
                closed: false,
            }),
            version: watch::channel(0).0,
        }
    }

    /// Appends an event. Agent events past the cap are dropped (the first drop appends a
    /// `truncated` event); anything after the end marker is ignored.
    pub(crate) fn push(&self, kind: EventKind, data: String) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if kind == EventKind::Agent {
            if state.truncated {
                return;
            }
            // Each entry costs its text and its bookkeeping: counted both, so a flood of tiny
            // events cannot hold many times the cap.
            let cost = data.len() + ENTRY_OVERHEAD;
            if state.agent_bytes.saturating_add(cost) > state.cap {
                state.truncated = true;
                let note = serde_json::json!({ "dropped": "agent events past the output cap", "cap_bytes": state.cap });
                state.append(EventKind::Truncated, note.to_string());
                drop(state);
                self.wake();
                return;
            }
            state.agent_bytes += cost;
        }
        if kind == EventKind::End {
            state.closed = true;
        }
        state.append(kind, data);
        drop(state);
        self.wake();
    }

    /// Whether agent events were dropped at the cap.
    #[cfg(test)]
    pub(crate) fn is_truncated(&self) -> bool {
        self.lock().truncated
    }

    /// A reader starting at entry `from` (0 for everything).
    pub(crate) fn subscribe(self: &Arc<Self>, from: usize) -> Subscription {
        Subscription {
            log: Arc::clone(self),
            next: from,
            version: self.version.subscribe(),
        }
    }

    fn wake(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Appends only copy out under the lock, so a poisoned lock still holds a consistent log.
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LogState {
    fn append(&mut self, kind: EventKind, data: String) {
        let seq = self.entries.len();
        self.entries.push(JobEvent {
            seq,
            kind,
            data: data.into(),
        });
    }
}

/// One reader of an [`EventLog`], with its own position.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// The log read from.
    log: Arc<EventLog>,
    /// The next entry this reader has not had.
    next: usize,
    /// Tells this reader that something was appended.
    version: watch::Receiver<u64>,
}

impl Subscription {
    /// The entries appended since the last call, waiting for at least one; `None` once the end
    /// marker has been handed out.
    pub(crate) async fn next_batch(&mut self) -> Option<Vec<JobEvent>> {
        loop {
            // Marked seen before reading, so an append after the read is never missed.
            self.version.borrow_and_update();
            {
                let state = self.log.lock();
                if self.next < state.entries.len() {
                    let batch = state.entries[self.next..].to_vec();
                    self.next = state.entries.len();
                    return Some(batch);
                }
                if state.closed {
                    return None;
                }
            }
            if self.version.changed().await.is_err() {
                // The log is gone; nothing more can come.
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(mut sub: Subscription) -> Vec<(EventKind, String)> {
        let mut seen = Vec::new();
        while let Some(batch) = sub.next_batch().await {
            seen.extend(batch.into_iter().map(|e| (e.kind, e.data.to_string())));
        }
        seen
    }

    #[tokio::test]
    async fn a_late_subscriber_replays_everything() {
        let log = Arc::new(EventLog::new(1 << 16));
        log.push(EventKind::Status, "queued".into());
        log.push(EventKind::Agent, "a".into());
        log.push(EventKind::End, "done".into());
        log.push(EventKind::Agent, "after the end".into());
        let seen = drain(log.subscribe(0)).await;
        assert_eq!(
            seen,
            [
                (EventKind::Status, "queued".into()),
                (EventKind::Agent, "a".into()),
                (EventKind::End, "done".into()),
            ]
        );
    }

    #[tokio::test]
    async fn live_subscribers_each_get_every_event() {
        let log = Arc::new(EventLog::new(1 << 16));
        let readers: Vec<_> = (0..3)
            .map(|_| tokio::spawn(drain(log.subscribe(0))))
            .collect();
        for n in 0..50 {
            log.push(EventKind::Agent, n.to_string());
            tokio::task::yield_now().await;
        }
        log.push(EventKind::End, "end".into());
        for reader in readers {
            let seen = reader.await.unwrap();
            assert_eq!(seen.len(), 51);
            assert_eq!(seen[49], (EventKind::Agent, "49".into()));
        }
    }

    #[tokio::test]
    async fn agent_events_past_the_cap_are_dropped_and_flagged_once() {
        let log = Arc::new(EventLog::new(10 + 2 * ENTRY_OVERHEAD));
        log.push(EventKind::Agent, "12345".into());
        log.push(EventKind::Agent, "1234567".into());
        log.push(EventKind::Agent, "1".into());
        log.push(EventKind::Status, "still kept".into());
        log.push(EventKind::End, "end".into());
        let kinds: Vec<_> = drain(log.subscribe(0))
            .await
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::Agent,
                EventKind::Truncated,
                EventKind::Status,
                EventKind::End
            ]
        );
        assert!(log.is_truncated());
    }

    #[tokio::test]
    async fn a_subscriber_can_resume_from_a_position() {
        let log = Arc::new(EventLog::new(1 << 16));
        for n in 0..4 {
            log.push(EventKind::Agent, n.to_string());
        }
        log.push(EventKind::End, "end".into());
        let seen = drain(log.subscribe(3)).await;
        assert_eq!(
            seen,
            [
                (EventKind::Agent, "3".into()),
                (EventKind::End, "end".into())
            ]
        );
    }
}
