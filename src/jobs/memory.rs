//! The ephemeral job store: records and their events in memory, gone with the process
//! (`DATABASE_URL=memory`), bounded in age, in count and in bytes.
//!
//! Bounded, unlike the registry of the service this gateway replaced: finished jobs are forgotten
//! after the time to live, past a maximum count *and* past a byte budget (records and events
//! together), oldest finished first, so a burst of jobs with large prompts or outputs cannot
//! exhaust memory before the count bound would bite; the caller runs
//! [`remove_expired`](JobStore::remove_expired) on a timer as well as when a job finishes. The
//! bytes a record may hold are capped before it gets here (see [`super::finish`]).

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::events::{EventKind, JobEvent};
use super::record::{JobRecord, JobStatus, WebhookAttempt, WebhookView};
use super::store::{
    ChatSession, Cursor, DueWebhook, JobStore, ListQuery, LogPosition, Page, SpendWindow,
    StoreFuture, Unfinished, WebhookClaim, WebhookKind, WebhookTried,
};
use crate::policy::Spend;

/// How much a store keeps of finished jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreLimits {
    /// A finished job is forgotten this long after it finished.
    pub ttl: Duration,
    /// At most this many finished jobs are kept; past it the oldest finished go first.
    pub max_finished: usize,
    /// At most this many bytes of finished jobs (records and events) are kept; past it the oldest
    /// finished go first.
    pub max_finished_bytes: usize,
}

impl StoreLimits {
    /// The latest finishing time a job may have and still be past the time to live at `now`.
    pub(crate) fn cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ttl = TimeDelta::from_std(self.ttl).unwrap_or(TimeDelta::MAX);
        now.checked_sub_signed(ttl)
    }
}

/// Job records and events in memory. Cheap to share behind an `Arc`; every method takes the one
/// lock briefly and never across an await.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    /// Its bounds.
    limits: StoreLimits,
    /// The records and the orders they are read in.
    state: Mutex<State>,
}

/// A sort key: a time, then the id to break ties.
type Key = (DateTime<Utc>, String);

/// One job and its log.
#[derive(Debug)]
struct Entry {
    record: JobRecord,
    /// Acceptance order: the queue order after a restart.
    order: u64,
    events: Vec<JobEvent>,
    /// Bytes of `events`.
    event_bytes: usize,
    /// What its run left for a next turn.
    session: Option<Vec<u8>>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.record.approx_bytes() + self.event_bytes + self.session.as_ref().map_or(0, Vec::len)
    }

    /// Appends the events not already kept; a retried write never doubles one.
    fn append(&mut self, events: Vec<JobEvent>) -> usize {
        let mut added = 0;
        for event in events {
            let next = self.events.last().map_or(0, |e| e.seq + 1);
            if event.seq < next {
                continue;
            }
            added += event.bytes();
            self.events.push(event);
        }
        self.event_bytes += added;
        added
    }
}

#[derive(Debug, Default)]
struct State {
    /// Every job, by id.
    entries: HashMap<String, Entry>,
    /// Every job by creation time, for listing newest first.
    by_created: BTreeSet<Key>,
    /// Finished jobs by finishing time, for forgetting the oldest first.
    finished: BTreeSet<Key>,
    /// What the finished jobs hold, by [`Entry::bytes`].
    finished_bytes: usize,
    /// The order the next job gets.
    next_order: u64,
    /// Chat sessions by handle.
    chats: HashMap<String, ChatSession>,
    /// Webhooks by id.
    webhooks: HashMap<String, Webhook>,
    /// What each key spent, by owner and window.
    spend: HashMap<(String, SpendWindow), Spend>,
}

/// One webhook of a job.
#[derive(Debug)]
struct Webhook {
    job_id: String,
    kind: WebhookKind,
    url: String,
    state: &'static str,
    tries: Vec<WebhookAttempt>,
    next_at: DateTime<Utc>,
    lease_until: Option<DateTime<Utc>>,
}

impl MemoryStore {
    /// An empty store with these bounds.
    pub(crate) fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Every method leaves the maps consistent before it can panic, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn finished_key(record: &JobRecord) -> Option<Key> {
    record.status.is_terminal().then(|| {
        (
            record.finished_at.unwrap_or(record.created_at),
            record.job_id.clone(),
        )
    })
}

impl State {
    /// Takes `entry` out of the finished accounting, if it is in it.
    fn unaccount(&mut self, entry_key: Option<Key>, bytes: usize) {
        if let Some(key) = entry_key {
            if self.finished.remove(&key) {
                self.finished_bytes = self.finished_bytes.saturating_sub(bytes);
            }
        }
    }

    /// Puts `entry` in the finished accounting, if it is finished.
    fn account(&mut self, job_id: &str) {
        if let Some(entry) = self.entries.get(job_id) {
            if let Some(key) = finished_key(&entry.record) {
                let bytes = entry.bytes();
                self.finished.insert(key);
                self.finished_bytes += bytes;
            }
        }
    }

    /// Changes the entry of `job_id` with `change`, keeping the accounting right; `false` when
    /// there is no such job.
    fn change(&mut self, job_id: &str, change: impl FnOnce(&mut Entry)) -> bool {
        let Some(entry) = self.entries.get_mut(job_id) else {
            return false;
        };
        let old_key = finished_key(&entry.record);
        let old_bytes = entry.bytes();
        change(entry);
        self.unaccount(old_key, old_bytes);
        self.account(job_id);
        true
    }

    fn remove(&mut self, job_id: &str) {
        self.webhooks.retain(|_, w| w.job_id != job_id);
        if let Some(entry) = self.entries.remove(job_id) {
            self.unaccount(finished_key(&entry.record), entry.bytes());
            self.by_created
                .remove(&(entry.record.created_at, entry.record.summary.job_id));
        }
    }
}

impl JobStore for MemoryStore {
    fn is_durable(&self) -> bool {
        false
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn insert(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, ()> {
        let mut state = self.lock();
        let job_id = record.job_id.clone();
        state.remove(&job_id);
        let order = state.next_order;
        state.next_order += 1;
        state.by_created.insert((record.created_at, job_id.clone()));
        let mut entry = Entry {
            record,
            order,
            events: Vec::new(),
            event_bytes: 0,
            session: None,
        };
        entry.append(events);
        if let Some(url) = &entry.record.callback_url {
            for kind in [WebhookKind::Started, WebhookKind::Ended] {
                state.webhooks.insert(
                    kind.id_for(&job_id),
                    Webhook {
                        job_id: job_id.clone(),
                        kind,
                        url: url.clone(),
                        state: "pending",
                        tries: Vec::new(),
                        next_at: entry.record.created_at,
                        lease_until: None,
                    },
                );
            }
        }
        state.entries.insert(job_id.clone(), entry);
        state.account(&job_id);
        Box::pin(async { Ok(()) })
    }

    fn get(&self, job_id: String) -> StoreFuture<'_, Option<JobRecord>> {
        let record = self.lock().entries.get(&job_id).map(|e| e.record.clone());
        Box::pin(async move { Ok(record) })
    }

    fn update(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, bool> {
        // A job forgotten meanwhile stays forgotten: an update never brings it back.
        let job_id = record.job_id.clone();
        let found = self.lock().change(&job_id, |entry| {
            entry.record = record;
            entry.append(events);
        });
        Box::pin(async move { Ok(found) })
    }

    fn append(&self, job_id: String, events: Vec<JobEvent>) -> StoreFuture<'_, bool> {
        let found = self.lock().change(&job_id, |entry| {
            entry.append(events);
        });
        Box::pin(async move { Ok(found) })
    }

    fn keep_session(&self, job_id: String, session: Vec<u8>) -> StoreFuture<'_, bool> {
        let found = self.lock().change(&job_id, |entry| {
            entry.session = Some(session);
        });
        Box::pin(async move { Ok(found) })
    }

    fn keep_chat_session(&self, session: ChatSession) -> StoreFuture<'_, bool> {
        self.lock().chats.insert(session.handle.clone(), session);
        Box::pin(async { Ok(true) })
    }

    fn chat_session(&self, handle: String) -> StoreFuture<'_, Option<ChatSession>> {
        let session = self.lock().chats.get(&handle).cloned();
        Box::pin(async move { Ok(session) })
    }

    fn session(&self, job_id: String) -> StoreFuture<'_, Option<Vec<u8>>> {
        let session = self
            .lock()
            .entries
            .get(&job_id)
            .and_then(|e| e.session.clone());
        Box::pin(async move { Ok(session) })
    }

    fn events(&self, job_id: String, from: u64, limit: usize) -> StoreFuture<'_, Vec<JobEvent>> {
        let events = self
            .lock()
            .entries
            .get(&job_id)
            .map(|entry| {
                let start = entry.events.partition_point(|e| e.seq < from);
                let end = start.saturating_add(limit).min(entry.events.len());
                entry.events[start..end].to_vec()
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(events) })
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page> {
        let state = self.lock();
        let limit = query.limit.max(1);
        // Newest first, strictly after the cursor's job when resuming.
        let upper = match query.cursor {
            Some(Cursor { created_at, job_id }) => Bound::Excluded((created_at, job_id)),
            None => Bound::Unbounded,
        };
        let keys = state.by_created.range((Bound::Unbounded, upper)).rev();
        let mut jobs = Vec::with_capacity(limit.min(64));
        let mut more = false;
        for (_, id) in keys {
            let Some(entry) = state.entries.get(id) else {
                continue;
            };
            let record = &entry.record;
            if record.owner != query.owner || query.status.is_some_and(|s| s != record.status) {
                continue;
            }
            if jobs.len() == limit {
                more = true;
                break;
            }
            jobs.push(record.summary.clone());
        }
        let next_cursor = if more {
            jobs.last().map(Cursor::after)
        } else {
            None
        };
        Box::pin(async move { Ok(Page { jobs, next_cursor }) })
    }

    fn unfinished(&self) -> StoreFuture<'_, Vec<Unfinished>> {
        let state = self.lock();
        let mut live: Vec<(u64, Unfinished)> = state
            .entries
            .values()
            .filter(|entry| !entry.record.status.is_terminal())
            .map(|entry| {
                let log = LogPosition {
                    next_seq: entry.events.last().map_or(0, |e| e.seq + 1),
                    agent_bytes: entry
                        .events
                        .iter()
                        .filter(|e| e.kind == EventKind::Agent)
                        .map(JobEvent::bytes)
                        .sum(),
                    truncated: entry.events.iter().any(|e| e.kind == EventKind::Truncated),
                };
                let unfinished = Unfinished {
                    record: entry.record.clone(),
                    log,
                };
                (entry.order, unfinished)
            })
            .collect();
        live.sort_by_key(|(order, _)| *order);
        let live = live.into_iter().map(|(_, unfinished)| unfinished).collect();
        Box::pin(async move { Ok(live) })
    }

    fn remove_expired(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>> {
        let cutoff = self.limits.cutoff(now);
        let mut state = self.lock();
        let mut removed = Vec::new();
        while let Some(oldest) = state.finished.first().cloned() {
            let expired = cutoff.is_some_and(|cutoff| oldest.0 <= cutoff);
            let within_bounds = state.finished.len() <= self.limits.max_finished
                && state.finished_bytes <= self.limits.max_finished_bytes;
            if !expired && within_bounds {
                break;
            }
            state.remove(&oldest.1);
            removed.push(oldest.1);
        }
        // Chat sessions: gone a time to live after their last turn, and past the count bound,
        // the least recently used first.
        if let Some(cutoff) = cutoff {
            state.chats.retain(|_, chat| chat.updated_at > cutoff);
        }
        if state.chats.len() > self.limits.max_finished {
            let mut ages: Vec<_> = state
                .chats
                .values()
                .map(|chat| (chat.updated_at, chat.handle.clone()))
                .collect();
            ages.sort();
            let excess = ages.len() - self.limits.max_finished;
            for (_, handle) in ages.into_iter().take(excess) {
                state.chats.remove(&handle);
            }
        }
        Box::pin(async move { Ok(removed) })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn charge(&self, owner: String, window: SpendWindow, spend: Spend) -> StoreFuture<'_, ()> {
        let mut state = self.lock();
        state
            .spend
            .retain(|(who, (_, end)), _| *who != owner || *end > window.0);
        let total = state.spend.entry((owner, window)).or_default();
        total.usd += spend.usd;
        total.tokens = total.tokens.saturating_add(spend.tokens);
        Box::pin(async { Ok(()) })
    }

    fn spent(&self, owner: String, window: SpendWindow) -> StoreFuture<'_, Spend> {
        let spent = self
            .lock()
            .spend
            .get(&(owner, window))
            .copied()
            .unwrap_or_default();
        Box::pin(async move { Ok(spent) })
    }

    fn claim_webhooks(&self, claim: WebhookClaim) -> StoreFuture<'_, Vec<DueWebhook>> {
        let mut state = self.lock();
        let State {
            webhooks, entries, ..
        } = &mut *state;
        let mut due: Vec<(&String, &mut Webhook)> = webhooks
            .iter_mut()
            .filter(|(_, w)| {
                let Some(entry) = entries.get(&w.job_id) else {
                    return false;
                };
                let come = match w.kind {
                    WebhookKind::Started => entry.record.status != JobStatus::Queued,
                    WebhookKind::Ended => entry.record.status.is_terminal(),
                };
                w.state == "pending"
                    && w.next_at <= claim.now
                    && w.lease_until.is_none_or(|until| until <= claim.now)
                    && come
            })
            .collect();
        due.sort_by_key(|(_, w)| w.next_at);
        let claimed: Vec<DueWebhook> = due
            .into_iter()
            .take(claim.limit)
            .filter_map(|(id, w)| {
                w.lease_until = Some(claim.lease_until);
                Some(DueWebhook {
                    id: id.clone(),
                    kind: w.kind,
                    url: w.url.clone(),
                    attempts: u32::try_from(w.tries.len()).unwrap_or(u32::MAX),
                    job: entries.get(&w.job_id)?.record.summary.clone(),
                })
            })
            .collect();
        Box::pin(async move { Ok(claimed) })
    }

    fn webhook_tried(&self, id: String, tried: WebhookTried) -> StoreFuture<'_, bool> {
        let found = match self.lock().webhooks.get_mut(&id) {
            Some(w) => {
                w.tries.extend(tried.attempt);
                w.state = tried.state;
                w.next_at = tried.next_at;
                w.lease_until = None;
                true
            }
            None => false,
        };
        Box::pin(async move { Ok(found) })
    }

    fn webhooks(&self, job_id: String) -> StoreFuture<'_, Vec<WebhookView>> {
        let state = self.lock();
        let mut views: Vec<(WebhookKind, WebhookView)> = state
            .webhooks
            .iter()
            .filter(|(_, w)| w.job_id == job_id)
            .map(|(id, w)| {
                (
                    w.kind,
                    WebhookView {
                        id: id.clone(),
                        kind: format!("job.{}", w.kind.as_str()),
                        state: w.state.to_owned(),
                        attempts: w.tries.clone(),
                        next_attempt_at: (w.state == "pending")
                            .then(|| super::record::format_iso(&w.next_at)),
                    },
                )
            })
            .collect();
        views.sort_by_key(|(kind, _)| *kind != WebhookKind::Started);
        let views = views.into_iter().map(|(_, v)| v).collect();
        Box::pin(async move { Ok(views) })
    }

    fn next_webhook(&self, now: DateTime<Utc>) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        let next = self
            .lock()
            .webhooks
            .values()
            .filter(|w| w.state == "pending" && w.next_at > now)
            .map(|w| w.next_at)
            .min();
        Box::pin(async move { Ok(next) })
    }
}
