//! How the SQL stores (SQLite and PostgreSQL) lay a job out in a row and read it back: the same
//! columns and the same JSON texts in both, so what one writes the other would read.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::events::{EventKind, JobEvent};
use super::record::{JobRecord, WebhookAttempt, WebhookView};
use super::store::{
    ChatSession, Cursor, DueWebhook, LogPosition, Page, StoreError, Unfinished, WebhookKind,
};

/// A count read from a database, never negative.
pub(super) fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// A time as stored: Unix microseconds.
pub(super) fn micros(time: &DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// `finished_at` as stored: set exactly when the job is finished.
pub(super) fn finished_micros(record: &JobRecord) -> Option<i64> {
    record
        .status
        .is_terminal()
        .then(|| micros(&record.finished_at.unwrap_or(record.created_at)))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(value).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Reads back a JSON column.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::unavailable(format!("unreadable row: {e}")))
}

/// The row's JSON texts and the record's size.
pub(super) struct Encoded {
    /// The listing's view (JSON).
    pub summary: String,
    /// The whole record (JSON).
    pub record: String,
    /// Bytes of `record`, for the byte budget.
    pub record_bytes: usize,
}

/// The JSON texts of `record`'s row.
pub(super) fn encode(record: &JobRecord) -> Result<Encoded, sqlx::Error> {
    let summary = to_json(&record.summary)?;
    let text = to_json(record)?;
    Ok(Encoded {
        record_bytes: text.len(),
        summary,
        record: text,
    })
}

/// A column that cannot be read.
fn unreadable(error: sqlx::Error) -> StoreError {
    StoreError::unavailable(format!("unreadable row: {error}"))
}

/// What a row of either database can be read as: its columns by position, as integers, texts
/// and flags.
pub(super) trait SqlRow: sqlx::Row {
    /// Column `i` as an integer.
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    /// Column `i` as a text.
    fn text(&self, i: usize) -> Result<String, StoreError>;
    /// Column `i` as a flag.
    fn flag(&self, i: usize) -> Result<bool, StoreError>;
    /// Column `i` as bytes.
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError>;
}

impl<R> SqlRow for R
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.try_get(i).map_err(unreadable)
    }

    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.try_get(i).map_err(unreadable)
    }

    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        self.try_get(i).map_err(unreadable)
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        self.try_get(i).map_err(unreadable)
    }
}

/// The webhooks a new job gets: `(id, kind, url)` of each, none without a `callback_url`.
pub(super) fn new_webhooks(record: &JobRecord) -> Vec<(String, &'static str, String)> {
    let Some(url) = &record.callback_url else {
        return Vec::new();
    };
    [WebhookKind::Started, WebhookKind::Ended]
        .into_iter()
        .map(|kind| (kind.id_for(&record.job_id), kind.as_str(), url.clone()))
        .collect()
}

/// A claimed webhook from a row of `id, kind, url, attempts, summary`.
pub(super) fn due_webhook<R: SqlRow>(row: &R) -> Result<DueWebhook, StoreError> {
    Ok(DueWebhook {
        id: row.text(0)?,
        kind: WebhookKind::parse(&row.text(1)?)
            .ok_or_else(|| StoreError::unavailable("unreadable row: unknown webhook kind"))?,
        url: row.text(2)?,
        attempts: u32::try_from(row.int(3)?).unwrap_or(u32::MAX),
        job: from_json(&row.text(4)?)?,
    })
}

/// A webhook as the record shows it, from a row of `id, kind, state, tries, next_at`.
pub(super) fn webhook_view<R: SqlRow>(row: &R) -> Result<WebhookView, StoreError> {
    let state = row.text(2)?;
    let next = DateTime::from_timestamp_micros(row.int(4)?).unwrap_or_default();
    Ok(WebhookView {
        id: row.text(0)?,
        kind: format!("job.{}", row.text(1)?),
        attempts: from_json::<Vec<WebhookAttempt>>(&row.text(3)?)?,
        next_attempt_at: (state == "pending").then(|| super::record::format_iso(&next)),
        state,
    })
}

/// One try as stored in the `tries` array.
pub(super) fn attempt_json(attempt: &WebhookAttempt) -> String {
    serde_json::to_string(attempt).unwrap_or_else(|_| "{}".to_owned())
}

/// The chat session `handle` from a row of `owner, updated_at, session`.
pub(super) fn chat_session<R: SqlRow>(row: &R, handle: String) -> Result<ChatSession, StoreError> {
    Ok(ChatSession {
        owner: row.text(0)?,
        updated_at: DateTime::from_timestamp_micros(row.int(1)?).unwrap_or_default(),
        session: row.bytes(2)?,
        handle,
    })
}

/// Events from rows of `seq, kind, data`.
pub(super) fn events<R: SqlRow>(rows: &[R]) -> Result<Vec<JobEvent>, StoreError> {
    rows.iter()
        .map(|row| {
            let kind = EventKind::from_str(&row.text(1)?)
                .map_err(|e| StoreError::unavailable(format!("unreadable event kind {:?}", e.0)))?;
            Ok(JobEvent {
                seq: u64::try_from(row.int(0)?).unwrap_or(0),
                kind,
                data: row.text(2)?.into(),
            })
        })
        .collect()
}

/// A page of a listing from rows of `summary`, fetched one past `limit` to know whether more
/// follow.
pub(super) fn page<R: SqlRow>(rows: &[R], limit: usize) -> Result<Page, StoreError> {
    let mut jobs = rows
        .iter()
        .map(|row| from_json(&row.text(0)?))
        .collect::<Result<Vec<_>, _>>()?;
    let more = jobs.len() > limit;
    jobs.truncate(limit);
    let next_cursor = if more {
        jobs.last().map(Cursor::after)
    } else {
        None
    };
    Ok(Page { jobs, next_cursor })
}

/// Unfinished jobs from rows of their record's JSON and where their log stands (the next `seq`,
/// the bytes of agent events, whether some were dropped).
pub(super) fn unfinished<R: SqlRow>(rows: &[R]) -> Result<Vec<Unfinished>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(Unfinished {
                record: from_json(&row.text(0)?)?,
                log: LogPosition {
                    next_seq: u64::try_from(row.int(1)?).unwrap_or(0),
                    agent_bytes: count(row.int(2)?),
                    truncated: row.flag(3)?,
                },
            })
        })
        .collect()
}

/// Where a job's event log stands, as three columns: the next `seq`, the bytes of its agent
/// events, whether some were dropped (as both databases take it).
macro_rules! log_position {
    () => {
        "(SELECT COALESCE(MAX(e.seq) + 1, 0) FROM job_events e WHERE e.job_id = j.job_id), \
         CAST((SELECT COALESCE(SUM(octet_length(e.data)), 0) FROM job_events e \
           WHERE e.job_id = j.job_id AND e.kind = 'agent') AS BIGINT), \
         EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = j.job_id AND e.kind = 'truncated')"
    };
}
pub(super) use log_position;

/// The columns of an unfinished job, as [`unfinished`] reads them: its record and where its
/// event log stands.
pub(super) const UNFINISHED: &str = concat!("SELECT j.record, ", log_position!(), " FROM jobs j");

/// The statement that keeps a chat session (an upsert on its handle), as both databases take it:
/// `$n` placeholders are PostgreSQL's and SQLite reads them too. A macro, so that each store runs
/// it on its own kind of connection.
macro_rules! keep_chat_session {
    ($session:expr) => {
        sqlx::query(
            "INSERT INTO chat_sessions (handle, owner, updated_at, session) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (handle) DO UPDATE SET \
             owner = excluded.owner, updated_at = excluded.updated_at, \
             session = excluded.session",
        )
        .bind(&$session.handle)
        .bind(&$session.owner)
        .bind($crate::jobs::rows::micros(&$session.updated_at))
        .bind(&$session.session)
    };
}
pub(super) use keep_chat_session;

/// The statement that adds a new job's webhook `(id, kind, url)` (see [`new_webhooks`]), due at
/// once, as both databases take it.
macro_rules! insert_webhook {
    ($record:expr, $webhook:expr) => {{
        let (id, kind, url) = $webhook;
        sqlx::query(
            "INSERT INTO webhooks (id, job_id, kind, url, next_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&$record.job_id)
        .bind(kind)
        .bind(url)
        .bind($crate::jobs::rows::micros(&$record.created_at))
    }};
}
pub(super) use insert_webhook;

/// The two statements that charge `spend` to `owner` in `window`, as both databases take them:
/// the first forgets the owner's windows that have ended, the second adds to this one.
macro_rules! charge {
    ($owner:expr, $window:expr, $spend:expr) => {
        (
            sqlx::query("DELETE FROM key_spend WHERE owner = $1 AND window_end <= $2")
                .bind($owner)
                .bind($crate::jobs::rows::micros(&$window.0)),
            sqlx::query(
                "INSERT INTO key_spend (owner, window_start, window_end, usd, tokens) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner, window_start, window_end) \
                 DO UPDATE SET usd = key_spend.usd + excluded.usd, \
                 tokens = key_spend.tokens + excluded.tokens",
            )
            .bind($owner)
            .bind($crate::jobs::rows::micros(&$window.0))
            .bind($crate::jobs::rows::micros(&$window.1))
            .bind($spend.usd)
            .bind(i64::try_from($spend.tokens).unwrap_or(i64::MAX)),
        )
    };
}
pub(super) use charge;

/// The [`JobStore`](super::store::JobStore) reads that are one statement each, the same in both
/// databases, run on the store's pool of readers (`$readers`, a field of the store; unfinished
/// jobs, read at start, on `$unfinished_from`) with the store's own error mapping (`$failed`). Expands to trait methods: invoke it inside the store's
/// `impl JobStore`.
macro_rules! shared_reads {
    (readers: $readers:ident, unfinished_from: $unfinished_from:ident, failed: $failed:path) => {
        fn get(&self, job_id: String) -> StoreFuture<'_, Option<JobRecord>> {
            Box::pin(async move {
                let text: Option<String> =
                    sqlx::query_scalar("SELECT record FROM jobs WHERE job_id = $1")
                        .bind(&job_id)
                        .fetch_optional(&self.$readers)
                        .await
                        .map_err($failed)?;
                text.as_deref().map(rows::from_json).transpose()
            })
        }

        fn session(&self, job_id: String) -> StoreFuture<'_, Option<Vec<u8>>> {
            Box::pin(async move {
                let session: Option<Option<Vec<u8>>> =
                    sqlx::query_scalar("SELECT session FROM jobs WHERE job_id = $1")
                        .bind(&job_id)
                        .fetch_optional(&self.$readers)
                        .await
                        .map_err($failed)?;
                Ok(session.flatten())
            })
        }

        fn chat_session(&self, handle: String) -> StoreFuture<'_, Option<ChatSession>> {
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT owner, updated_at, session FROM chat_sessions WHERE handle = $1",
                )
                .bind(&handle)
                .fetch_optional(&self.$readers)
                .await
                .map_err($failed)?;
                row.map(|row| rows::chat_session(&row, handle)).transpose()
            })
        }

        fn events(
            &self,
            job_id: String,
            from: u64,
            limit: usize,
        ) -> StoreFuture<'_, Vec<JobEvent>> {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT seq, kind, data FROM job_events WHERE job_id = $1 AND seq >= $2 \
                     ORDER BY seq LIMIT $3",
                )
                .bind(&job_id)
                .bind(i64::try_from(from).unwrap_or(i64::MAX))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.$readers)
                .await
                .map_err($failed)?;
                rows::events(&rows)
            })
        }

        fn webhooks(&self, job_id: String) -> StoreFuture<'_, Vec<WebhookView>> {
            Box::pin(async move {
                // CAST: `tries` is JSON text in SQLite and jsonb in PostgreSQL.
                let rows = sqlx::query(
                    "SELECT id, kind, state, CAST(tries AS TEXT), next_at FROM webhooks \
                     WHERE job_id = $1 ORDER BY kind DESC",
                )
                .bind(&job_id)
                .fetch_all(&self.$readers)
                .await
                .map_err($failed)?;
                rows.iter().map(rows::webhook_view).collect()
            })
        }

        fn next_webhook(&self, now: DateTime<Utc>) -> StoreFuture<'_, Option<DateTime<Utc>>> {
            Box::pin(async move {
                let next: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(next_at) FROM webhooks WHERE state = 'pending' AND next_at > $1",
                )
                .bind(rows::micros(&now))
                .fetch_one(&self.$readers)
                .await
                .map_err($failed)?;
                Ok(next.and_then(DateTime::from_timestamp_micros))
            })
        }

        fn unfinished(&self) -> StoreFuture<'_, Vec<Unfinished>> {
            Box::pin(async move {
                let rows = sqlx::query(&format!(
                    "{} WHERE j.finished_at IS NULL ORDER BY j.seq",
                    rows::UNFINISHED
                ))
                .fetch_all(&self.$unfinished_from)
                .await
                .map_err($failed)?;
                rows::unfinished(&rows)
            })
        }

        fn spent(&self, owner: String, window: SpendWindow) -> StoreFuture<'_, Spend> {
            Box::pin(async move {
                let row: Option<(f64, i64)> = sqlx::query_as(
                    "SELECT usd, tokens FROM key_spend \
                     WHERE owner = $1 AND window_start = $2 AND window_end = $3",
                )
                .bind(&owner)
                .bind(rows::micros(&window.0))
                .bind(rows::micros(&window.1))
                .fetch_optional(&self.$readers)
                .await
                .map_err($failed)?;
                Ok(row.map_or_else(Spend::default, |(usd, tokens)| Spend {
                    usd,
                    tokens: u64::try_from(tokens).unwrap_or(0),
                }))
            })
        }
    };
}
pub(super) use shared_reads;
