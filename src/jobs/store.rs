//! The [`JobStore`] trait: where job records live.
//!
//! The embedded default is [`MemoryStore`](super::MemoryStore). Durable (SQLite) and shared
//! (PostgreSQL) stores are meant to come later behind the same trait, which is why it is shaped the
//! way a database client is: every method is async and fallible, records go in and come out by
//! value, and nothing handed out borrows from the store.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use super::record::{JobRecord, JobStatus, JobSummary};

/// What a store method returns: a boxed future, so the trait can be used as `dyn JobStore`.
pub(crate) type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store could not do what was asked (a database was unreachable, a row unreadable).
///
/// The in-memory store never fails; the type is here for the stores that can.
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job store: {}", self.0)
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

/// Keeps job records.
///
/// Only the task running a job writes its record, so [`update`](Self::update) replaces the whole
/// record without any merging. A store bounds what it keeps: [`remove_expired`](Self::remove_expired)
/// forgets finished jobs past their time to live and past the store's count bound, and says which,
/// so the caller can drop what it holds for them.
pub(crate) trait JobStore: Send + Sync + 'static {
    /// Adds a new job.
    fn insert(&self, record: JobRecord) -> StoreFuture<'_, ()>;

    /// The job with this id, if the store still has it.
    fn get(&self, job_id: String) -> StoreFuture<'_, Option<JobRecord>>;

    /// Replaces the job's record with `record` (matched by `job_id`); `false` when the store no
    /// longer has the job.
    fn update(&self, record: JobRecord) -> StoreFuture<'_, bool>;

    /// Jobs of one owner, newest first, filtered and paginated as `query` says.
    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page>;

    /// Forgets finished jobs that finished longer than the time to live before `now`, then the
    /// oldest finished jobs past the count bound; returns the ids forgotten. Queued and running
    /// jobs are never removed.
    fn remove_expired(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>>;
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
