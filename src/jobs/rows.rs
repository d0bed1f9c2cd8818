//! How the SQL stores (SQLite and PostgreSQL) lay a job out in a row and read it back: the same
//! columns and the same JSON texts in both, so what one writes the other would read.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::events::{EventKind, JobEvent};
use super::record::JobRecord;
use super::store::{LogPosition, StoreError, Unfinished};

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

/// An event from its columns `seq`, `kind` and `data`.
pub(super) fn event(seq: i64, kind: &str, data: String) -> Result<JobEvent, StoreError> {
    let kind = EventKind::from_str(kind)
        .map_err(|e| StoreError::unavailable(format!("unreadable event kind {:?}", e.0)))?;
    Ok(JobEvent {
        seq: u64::try_from(seq).unwrap_or(0),
        kind,
        data: data.into(),
    })
}

/// An unfinished job from its record's JSON and where its log stands (the next `seq`, the bytes
/// of agent events, whether some were dropped).
pub(super) fn unfinished(
    record: &str,
    next_seq: i64,
    agent_bytes: i64,
    truncated: bool,
) -> Result<Unfinished, StoreError> {
    Ok(Unfinished {
        record: from_json(record)?,
        log: LogPosition {
            next_seq: u64::try_from(next_seq).unwrap_or(0),
            agent_bytes: count(agent_bytes),
            truncated,
        },
    })
}
