//! The per-job event log behind `GET /jobs/{id}/events`: stored, bounded, replayable, live.
//!
//! Events live in the [`JobStore`] with the record, so they replay after a restart and a client
//! resumes with `Last-Event-ID` across one. The job's task is the only writer: it numbers the
//! events ([`EventLog`]), stores them, then wakes the subscribers through a watch that never
//! blocks it, so a slow reader cannot slow the run; it only falls behind, and catches up from the
//! store. A subscriber ([`Subscription`]) reads the store from its own position and waits for a
//! wake-up while the job is live in this process.
//!
//! The agent's events are bounded by the job's output cap in bytes; past it they are dropped and
//! one `truncated` event says so. Status changes and the end marker are always kept.

use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::watch;

use super::record::JobSummary;
use super::store::{JobStore, LogPosition, StoreError};

/// Events read from the store at once by a subscriber.
const READ_BATCH: usize = 256;

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
    /// The SSE event name, which is also how a store keeps it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::Agent => "agent",
            EventKind::Truncated => "truncated",
            EventKind::End => "end",
        }
    }
}

/// A stored kind that names no event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKind(pub(crate) String);

impl FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            EventKind::Status,
            EventKind::Agent,
            EventKind::Truncated,
            EventKind::End,
        ]
        .into_iter()
        .find(|kind| kind.name() == s)
        .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// One entry of a job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobEvent {
    /// Its position in the log, from 0; sent as the SSE `id:` so a client can resume.
    pub seq: u64,
    /// What it reports.
    pub kind: EventKind,
    /// Its JSON.
    pub data: Arc<str>,
}

impl JobEvent {
    /// Bytes it holds, for the store's byte budget.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// The writing end of one job's log, owned by the job's task: numbers events, applies the cap,
/// and wakes subscribers once what it numbered is stored.
#[derive(Debug)]
pub(crate) struct EventLog {
    /// The `seq` the next event gets.
    next_seq: u64,
    /// Bytes of agent events kept so far.
    agent_bytes: usize,
    /// Bytes of agent events the log keeps at most.
    cap: usize,
    /// Whether agent events were dropped.
    truncated: bool,
    /// Whether the end marker was numbered; nothing follows it.
    closed: bool,
    /// Bumped once events are stored, so waiting subscribers read them; a watch never blocks its
    /// sender. Dropped with the log, which tells subscribers nothing more comes from here.
    stored: watch::Sender<u64>,
}

impl EventLog {
    /// A log keeping at most `cap` bytes of agent events, continuing from `at` (the default for
    /// a new job).
    pub(crate) fn new(cap: usize, at: LogPosition) -> Self {
        Self {
            next_seq: at.next_seq,
            agent_bytes: at.agent_bytes,
            cap,
            truncated: at.truncated,
            closed: false,
            stored: watch::channel(at.next_seq).0,
        }
    }

    /// Numbers an event and adds it to `out`, to be stored. Agent events past the cap are
    /// dropped (the first drop adds a `truncated` event instead); anything after the end marker
    /// is ignored.
    pub(crate) fn record(&mut self, kind: EventKind, data: String, out: &mut Vec<JobEvent>) {
        if self.closed {
            return;
        }
        if kind == EventKind::Agent {
            if self.truncated {
                return;
            }
            if self.agent_bytes.saturating_add(data.len()) > self.cap {
                self.truncated = true;
                let note = serde_json::json!({ "dropped": "agent events past the output cap", "cap_bytes": self.cap });
                self.number(EventKind::Truncated, note.to_string(), out);
                return;
            }
            self.agent_bytes += data.len();
        }
        if kind == EventKind::End {
            self.closed = true;
        }
        self.number(kind, data, out);
    }

    /// Numbers the last two events of a finished job into `out`: its final status and the end
    /// marker.
    pub(crate) fn record_end(&mut self, job: &JobSummary, out: &mut Vec<JobEvent>) {
        self.record(EventKind::Status, job.status_event().to_string(), out);
        self.record(EventKind::End, job.id_and_status().to_string(), out);
    }

    fn number(&mut self, kind: EventKind, data: String, out: &mut Vec<JobEvent>) {
        out.push(JobEvent {
            seq: self.next_seq,
            kind,
            data: data.into(),
        });
        self.next_seq += 1;
    }

    /// Tells subscribers that every event numbered so far is stored.
    pub(crate) fn stored(&self) {
        self.stored.send_replace(self.next_seq);
    }

    /// A wake-up for one subscriber; it errs once this log is gone.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.stored.subscribe()
    }

    /// Whether agent events were dropped at the cap.
    #[cfg(test)]
    pub(crate) fn is_truncated(&self) -> bool {
        self.truncated
    }
}

/// One reader of a job's log, with its own position.
pub(crate) struct Subscription {
    /// Where the events are.
    store: Arc<dyn JobStore>,
    /// Whose events.
    job_id: String,
    /// The next `seq` this reader has not had.
    next: u64,
    /// Wakes this reader when the job's task stored something; `None` once the job is not (or
    /// no longer) live in this process, when what is stored is all there will be from here.
    wake: Option<watch::Receiver<u64>>,
    /// The end marker was handed out.
    ended: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("job_id", &self.job_id)
            .field("next", &self.next)
            .field("live", &self.wake.is_some())
            .finish()
    }
}

impl Subscription {
    /// A reader of `job_id`'s log from `seq` `from`, woken by `wake` while the job is live here.
    pub(crate) fn new(
        store: Arc<dyn JobStore>,
        job_id: String,
        from: u64,
        wake: Option<watch::Receiver<u64>>,
    ) -> Self {
        Self {
            store,
            job_id,
            next: from,
            wake,
            ended: false,
        }
    }

    /// The events stored since the last call, waiting for at least one while the job is live
    /// here; `None` once the end marker has been handed out, or when the job is not live here
    /// and nothing more is stored (the gateway is stopping: the client resumes from its last id).
    pub(crate) async fn next_batch(&mut self) -> Result<Option<Vec<JobEvent>>, StoreError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            // Marked seen before reading, so a store after the read is never missed.
            if let Some(wake) = &mut self.wake {
                wake.borrow_and_update();
            }
            let batch = self
                .store
                .events(self.job_id.clone(), self.next, READ_BATCH)
                .await?;
            if let Some(last) = batch.last() {
                self.next = last.seq + 1;
                self.ended = last.kind == EventKind::End;
                return Ok(Some(batch));
            }
            match &mut self.wake {
                Some(wake) => {
                    if wake.changed().await.is_err() {
                        // The task is gone: read once more what it stored last, then stop.
                        self.wake = None;
                    }
                }
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::memory::{MemoryStore, StoreLimits};
    use crate::jobs::record::{JobRecord, NewJob};
    use std::time::Duration;

    fn store_with_job(id: &str) -> Arc<dyn JobStore> {
        let store = MemoryStore::new(StoreLimits {
            ttl: Duration::from_secs(60),
            max_finished: 10,
            max_finished_bytes: usize::MAX,
        });
        let record = JobRecord::queued(
            id.to_owned(),
            NewJob::new("o", "p", "a", 1.0, 1),
            chrono::Utc::now(),
        );
        futures_util::FutureExt::now_or_never(store.insert(record, Vec::new()))
            .expect("the memory store answers at once")
            .expect("inserted");
        Arc::new(store)
    }

    /// Numbers and stores `events`, then wakes subscribers, as a job's task does.
    async fn write(store: &Arc<dyn JobStore>, log: &mut EventLog, events: &[(EventKind, &str)]) {
        let mut out = Vec::new();
        for (kind, data) in events {
            log.record(*kind, (*data).to_owned(), &mut out);
        }
        assert!(store.append("j".into(), out).await.unwrap());
        log.stored();
    }

    async fn drain(mut sub: Subscription) -> Vec<(EventKind, String)> {
        let mut seen = Vec::new();
        while let Some(batch) = sub.next_batch().await.unwrap() {
            seen.extend(batch.into_iter().map(|e| (e.kind, e.data.to_string())));
        }
        seen
    }

    #[tokio::test]
    async fn a_late_subscriber_replays_everything_and_nothing_follows_the_end() {
        let store = store_with_job("j");
        let mut log = EventLog::new(1024, LogPosition::default());
        write(
            &store,
            &mut log,
            &[
                (EventKind::Status, "queued"),
                (EventKind::Agent, "a"),
                (EventKind::End, "done"),
                (EventKind::Agent, "after the end"),
            ],
        )
        .await;
        let seen = drain(Subscription::new(store, "j".into(), 0, None)).await;
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
        let store = store_with_job("j");
        let mut log = EventLog::new(1024, LogPosition::default());
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let sub = Subscription::new(store.clone(), "j".into(), 0, Some(log.watch()));
                tokio::spawn(drain(sub))
            })
            .collect();
        for n in 0..50 {
            write(&store, &mut log, &[(EventKind::Agent, &n.to_string())]).await;
            tokio::task::yield_now().await;
        }
        write(&store, &mut log, &[(EventKind::End, "end")]).await;
        for reader in readers {
            let seen = reader.await.unwrap();
            assert_eq!(seen.len(), 51);
            assert_eq!(seen[49], (EventKind::Agent, "49".into()));
        }
    }

    #[tokio::test]
    async fn a_subscriber_stops_when_the_log_goes_without_an_end() {
        let store = store_with_job("j");
        let mut log = EventLog::new(1024, LogPosition::default());
        let sub = Subscription::new(store.clone(), "j".into(), 0, Some(log.watch()));
        let reader = tokio::spawn(drain(sub));
        write(&store, &mut log, &[(EventKind::Status, "queued")]).await;
        drop(log);
        assert_eq!(
            reader.await.unwrap(),
            [(EventKind::Status, "queued".into())]
        );
    }

    #[tokio::test]
    async fn agent_events_past_the_cap_are_dropped_and_flagged_once() {
        let store = store_with_job("j");
        let mut log = EventLog::new(10, LogPosition::default());
        write(
            &store,
            &mut log,
            &[
                (EventKind::Agent, "12345"),
                (EventKind::Agent, "123456"),
                (EventKind::Agent, "1"),
                (EventKind::Status, "still kept"),
                (EventKind::End, "end"),
            ],
        )
        .await;
        let kinds: Vec<_> = drain(Subscription::new(store, "j".into(), 0, None))
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
    async fn a_log_continued_after_a_restart_numbers_on_and_keeps_its_cap() {
        let mut log = EventLog::new(
            10,
            LogPosition {
                next_seq: 7,
                agent_bytes: 8,
                truncated: false,
            },
        );
        let mut out = Vec::new();
        log.record(EventKind::Agent, "12".into(), &mut out);
        log.record(EventKind::Agent, "3".into(), &mut out);
        let seen: Vec<_> = out.iter().map(|e| (e.seq, e.kind)).collect();
        assert_eq!(seen, [(7, EventKind::Agent), (8, EventKind::Truncated)]);
    }

    #[test]
    fn kinds_read_back_from_their_names() {
        for kind in [
            EventKind::Status,
            EventKind::Agent,
            EventKind::Truncated,
            EventKind::End,
        ] {
            assert_eq!(kind.name().parse::<EventKind>(), Ok(kind));
        }
        assert!("other".parse::<EventKind>().is_err());
    }
}
