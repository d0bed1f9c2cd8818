//! The [`JobStore`] trait: where job records and their events live.
//!
//! Three stores implement it: the durable [`SqliteStore`](super::SqliteStore) (the default, a
//! file inside `JOBS_DIR`), the ephemeral [`MemoryStore`](super::MemoryStore), and the
//! [`PgStore`](super::PgStore) that several replicas share (which adds the shared queue's claim
//! and the replicas' leases beside the trait). The trait is shaped the way a database client is:
//! every method is async and fallible, records go in and come out by value, nothing handed out
//! borrows from the store, and every change a caller must see whole (a record and the events that
//! tell of it) is one call, so one transaction.
//!
//! The queue order is the store's too: [`unfinished`](JobStore::unfinished) answers the jobs not
//! yet finished in the order they were accepted, which is the order they run in after a restart.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use super::events::JobEvent;
use super::record::{JobRecord, JobStatus, JobSummary, WebhookAttempt, WebhookView};
use crate::policy::Spend;

/// What a store method returns: a boxed future, so the trait can be used as `dyn JobStore`.
pub(crate) type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What kind of trouble a store is in, which decides what a caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No room left: the disk (or the database's size cap) is full. Nothing was written; it
    /// works again once space returns.
    Full,
    /// Anything else: the database could not be opened, read or written.
    Unavailable,
}

/// The store could not do what was asked. When a write fails, nothing of it was written.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// What kind of trouble.
    kind: StoreErrorKind,
    /// One line saying what failed.
    message: String,
}

impl StoreError {
    /// A store failure other than a full disk.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: StoreErrorKind::Unavailable,
            message: message.into(),
        }
    }

    /// The store has no room left.
    pub(crate) fn full(message: impl Into<String>) -> Self {
        Self {
            kind: StoreErrorKind::Full,
            message: message.into(),
        }
    }

    /// What kind of trouble.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job store: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

/// Where a listing resumes: just after the job with this creation time and id.
///
/// Callers see it only as an opaque string ([`Cursor::encode`]); its content is the sort key, so any
/// store can resume a listing with an indexed range query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// `created_at` of the last job of the previous page.
    pub created_at: DateTime<Utc>,
    /// Its id, breaking ties between jobs created in the same microsecond.
    pub job_id: String,
}

/// A cursor string that was not made by [`Cursor::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidCursor;

impl fmt::Display for InvalidCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid cursor: pass back the next_cursor of a previous page unchanged")
    }
}

impl std::error::Error for InvalidCursor {}

impl Cursor {
    /// The cursor that resumes after `summary`.
    pub(crate) fn after(summary: &JobSummary) -> Self {
        Self {
            created_at: summary.created_at,
            job_id: summary.job_id.clone(),
        }
    }

    /// The opaque form handed to callers: 16 hex digits of the creation time in microseconds
    /// followed by the job id.
    pub(crate) fn encode(&self) -> String {
        // Two's complement keeps the order of times before 1970 too, should one ever appear.
        format!(
            "{:016x}{}",
            self.created_at.timestamp_micros() as u64,
            self.job_id
        )
    }

    /// Reads back what [`encode`](Self::encode) made.
    pub(crate) fn decode(text: &str) -> Result<Self, InvalidCursor> {
        if text.len() != 16 + super::record::JOB_ID_LEN || !text.is_ascii() {
            return Err(InvalidCursor);
        }
        let (micros, job_id) = text.split_at(16);
        let micros = u64::from_str_radix(micros, 16).map_err(|_| InvalidCursor)? as i64;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or(InvalidCursor)?;
        if !super::record::is_job_id(job_id) {
            return Err(InvalidCursor);
        }
        Ok(Self {
            created_at,
            job_id: job_id.to_owned(),
        })
    }
}

/// Which jobs to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListQuery {
    /// Only jobs created by this caller.
    pub owner: String,
    /// Only jobs in this status, when given.
    pub status: Option<JobStatus>,
    /// At most this many jobs.
    pub limit: usize,
    /// Resume after this job (the previous page's `next_cursor`).
    pub cursor: Option<Cursor>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    /// Newest first.
    pub jobs: Vec<JobSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// A job not finished when it was read: its record, and where its event log stands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unfinished {
    /// The record, `queued` or `running`.
    pub record: JobRecord,
    /// Where its event log stands, so a new task appends after what is stored.
    pub log: LogPosition,
}

/// Where a job's stored event log stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogPosition {
    /// The `seq` the next event gets.
    pub next_seq: u64,
    /// Bytes of agent events stored, which count against the job's output cap.
    pub agent_bytes: usize,
    /// Whether agent events were already dropped at the cap.
    pub truncated: bool,
}

/// A chat conversation's session, kept between its requests by its handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatSession {
    /// The handle the caller presents (`session_id`).
    pub handle: String,
    /// The token name of the caller it belongs to.
    pub owner: String,
    /// When its last turn ended; it is forgotten a time to live after.
    pub updated_at: DateTime<Utc>,
    /// The session ([`SavedSession::to_bytes`](crate::agent::SavedSession::to_bytes)).
    pub session: Vec<u8>,
}

/// One window of a key's budget: its start and its end (the reset time), as
/// [`Budget::window_at`](crate::policy::Budget::window_at) gives them.
pub(crate) type SpendWindow = (DateTime<Utc>, DateTime<Utc>);

/// Which moment of a job a webhook tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookKind {
    /// The job got a run slot (`job.started`).
    Started,
    /// The job reached a terminal status (`job.ended`).
    Ended,
}

impl WebhookKind {
    /// Its stored name, also the second half of the `type` sent (`job.<name>`).
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            WebhookKind::Started => "started",
            WebhookKind::Ended => "ended",
        }
    }

    /// Reads back [`as_str`](Self::as_str).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "started" => Some(WebhookKind::Started),
            "ended" => Some(WebhookKind::Ended),
            _ => None,
        }
    }

    /// The `webhook-id` of this webhook of `job_id`: the same for every try, so a receiver
    /// can tell a retry from a new message.
    pub(crate) fn id_for(self, job_id: &str) -> String {
        format!("msg_{job_id}_{}", self.as_str())
    }
}

/// A webhook whose moment has come and whose next try is due, claimed for one sender for a
/// while (its lease), so other senders (replicas) skip it meanwhile.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DueWebhook {
    /// Its `webhook-id`.
    pub id: String,
    /// Which moment.
    pub kind: WebhookKind,
    /// Where it goes.
    pub url: String,
    /// Tries so far.
    pub attempts: u32,
    /// The job as it is now, for the body.
    pub job: JobSummary,
}

/// A claim of due webhooks: up to `limit` of those due at `now` (pending, next try due, no live
/// lease, and their moment has come: the job left the queue, or ended), leased until
/// `lease_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WebhookClaim {
    /// The moment they are due by.
    pub now: DateTime<Utc>,
    /// When the lease of those claimed runs out.
    pub lease_until: DateTime<Utc>,
    /// Most webhooks claimed at once.
    pub limit: usize,
}

impl WebhookClaim {
    /// Up to `limit` webhooks due at `now`, leased until `lease_until`.
    pub(crate) fn new(now: DateTime<Utc>, lease_until: DateTime<Utc>, limit: usize) -> Self {
        Self {
            now,
            lease_until,
            limit,
        }
    }
}

/// What one try of a webhook came to, and what follows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebhookTried {
    /// The try, as the record shows it; `None` when nothing was sent (skipped).
    pub attempt: Option<WebhookAttempt>,
    /// What the webhook is now: `delivered`, `pending` (tried again at `next_at`), `failed`
    /// or `skipped`.
    pub state: &'static str,
    /// When a pending webhook is tried next.
    pub next_at: DateTime<Utc>,
}

/// Keeps job records and their event logs.
///
/// Only the task running a job writes its record and its events, so
/// [`update`](Self::update) replaces the whole record without any merging, and event `seq`s are
/// given by that task; an event whose `(job_id, seq)` is already stored is ignored, so a write
/// retried after an unclear failure never doubles an event. A store bounds what it keeps:
/// [`remove_expired`](Self::remove_expired) forgets finished jobs (and their events) past their
/// time to live, past the store's count bound and past its byte budget, and says which.
pub(crate) trait JobStore: Send + Sync + 'static {
    /// Whether what it holds outlives the process (a database), or goes with it (memory).
    fn is_durable(&self) -> bool;

    /// How many jobs it holds, finished or not. Kept by the store as it goes, so it costs
    /// nothing to read (for `/metrics`).
    fn len(&self) -> usize;

    /// Adds a new job and the first events of its log, in one step.
    fn insert(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, ()>;

    /// The job with this id, if the store still has it.
    fn get(&self, job_id: String) -> StoreFuture<'_, Option<JobRecord>>;

    /// Replaces the job's record with `record` (matched by `job_id`) and appends `events` to its
    /// log, in one step; `false` (and nothing written) when the store no longer has the job.
    fn update(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, bool>;

    /// Appends `events` to the job's log; `false` when the store no longer has the job.
    fn append(&self, job_id: String, events: Vec<JobEvent>) -> StoreFuture<'_, bool>;

    /// Keeps `session` (what the job's run left for a next turn: see
    /// [`SavedSession`](crate::agent::SavedSession)) with the job, replacing any kept before. It
    /// counts in the job's bytes and is forgotten with the job. `false` (nothing written) when the
    /// store no longer has the job. A store that keeps no sessions answers `false`.
    fn keep_session(&self, job_id: String, session: Vec<u8>) -> StoreFuture<'_, bool> {
        let _ = (job_id, session);
        Box::pin(async { Ok(false) })
    }

    /// The session kept with the job, if the store still has one.
    fn session(&self, job_id: String) -> StoreFuture<'_, Option<Vec<u8>>> {
        let _ = job_id;
        Box::pin(async { Ok(None) })
    }

    /// Keeps a chat conversation's session, replacing the one kept under the same handle.
    /// [`remove_expired`](Self::remove_expired) forgets it a time to live after its last turn, and
    /// the least recently used past the count bound. `false` when the store keeps none.
    fn keep_chat_session(&self, session: ChatSession) -> StoreFuture<'_, bool> {
        let _ = session;
        Box::pin(async { Ok(false) })
    }

    /// The chat session kept under `handle`, if any.
    fn chat_session(&self, handle: String) -> StoreFuture<'_, Option<ChatSession>> {
        let _ = handle;
        Box::pin(async { Ok(None) })
    }

    /// At most `limit` events of the job's log from `seq` `from` on, in order; empty when there
    /// are none (yet) or the job is unknown.
    fn events(&self, job_id: String, from: u64, limit: usize) -> StoreFuture<'_, Vec<JobEvent>>;

    /// Jobs of one owner, newest first, filtered and paginated as `query` says.
    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page>;

    /// Every job that is `queued` or `running`, in the order the jobs were accepted.
    fn unfinished(&self) -> StoreFuture<'_, Vec<Unfinished>>;

    /// Forgets finished jobs that finished longer than the time to live before `now`, then the
    /// oldest finished jobs past the count bound or the byte budget; returns the ids forgotten.
    /// Queued and running jobs are never removed. A store that keeps a file gives the space
    /// back.
    fn remove_expired(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>>;

    /// Finishes pending writes and refuses later ones; called once, at shutdown. Reads still
    /// answer.
    fn close(&self) -> StoreFuture<'_, ()>;

    // Webhooks: a job inserted with a `callback_url` gets its two webhooks (`started`, `ended`)
    // in the same step, pending, so no restart can lose one; they are forgotten with the job.

    /// Claims the webhooks `claim` asks for (see [`WebhookClaim`]).
    fn claim_webhooks(&self, claim: WebhookClaim) -> StoreFuture<'_, Vec<DueWebhook>>;

    /// Records a try of the webhook `id` (and ends its lease); `false` when it is gone.
    fn webhook_tried(&self, id: String, tried: WebhookTried) -> StoreFuture<'_, bool>;

    /// The job's webhooks with their tries, `started` first.
    fn webhooks(&self, job_id: String) -> StoreFuture<'_, Vec<WebhookView>>;

    /// The earliest next try of a pending webhook that is later than `now`.
    fn next_webhook(&self, now: DateTime<Utc>) -> StoreFuture<'_, Option<DateTime<Utc>>>;

    // Spend: what each key's runs cost, per budget window (`key_spend`).

    /// Adds `spend` to what `owner` spent in `window`, by addition in the store (never read,
    /// add, write back), so replicas charging at once all count. Windows that ended before
    /// `window` started are forgotten for `owner` in the same step: only the current window is
    /// ever read.
    fn charge(&self, owner: String, window: SpendWindow, spend: Spend) -> StoreFuture<'_, ()>;

    /// What `owner` spent in `window` (zero when nothing was charged).
    fn spent(&self, owner: String, window: SpendWindow) -> StoreFuture<'_, Spend>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cursors_read_back_and_refuse_anything_else() {
        let cursor = Cursor {
            created_at: Utc.timestamp_micros(1_700_000_000_123_456).unwrap(),
            job_id: "0123456789abcdef0123456789abcdef".into(),
        };
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text), Ok(cursor));
        for bad in ["", "zz", &"g".repeat(48), &format!("{}x", &text[..47])] {
            assert_eq!(Cursor::decode(bad), Err(InvalidCursor), "{bad}");
        }
    }
}
