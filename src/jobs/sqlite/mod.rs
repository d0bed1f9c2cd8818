//! The durable job store: one SQLite file (by default inside `JOBS_DIR`), through sqlx.
//!
//! - **Acknowledged means durable.** Every write is a transaction committed before the caller
//!   hears back, in WAL mode: a committed transaction survives kill -9 of the gateway. With
//!   `synchronous=NORMAL` (the default) a power loss may roll back the last transactions before a
//!   checkpoint but never corrupts the file; `SQLITE_SYNCHRONOUS=full` syncs the log on every
//!   commit, so a power loss loses nothing acknowledged either.
//! - **One writer, group commit.** Writes go through one task on a single connection, which
//!   commits the writes waiting at each moment together ([`writer`]); reads use a small pool of
//!   their own, which WAL lets run beside the writer. The log is folded into the file by a
//!   checkpointer beside the writer, so no commit waits for the disk syncs of a checkpoint.
//! - **Bounded, and gives space back.** Finished jobs are forgotten past the time to live, the
//!   count bound and the byte budget (records and events together), oldest first, and the pages
//!   they held are returned to the file system (`auto_vacuum=INCREMENTAL`, an incremental vacuum
//!   after each eviction, and a cap on what the write-ahead log keeps after a checkpoint).
//! - **Versioned schema.** The migrations under `migrations/sqlite` are embedded and run at start;
//!   a file written by a newer gateway (a migration this one does not know) is refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

use crate::config::SqliteSync;

use super::events::JobEvent;
use super::memory::StoreLimits;
use super::record::{JobRecord, WebhookView};
use super::rows::{self, count, encode, finished_micros, micros, new_webhooks};
use super::store::{
    ChatSession, Cursor, DueWebhook, JobStore, ListQuery, Page, SpendWindow, StoreError,
    StoreFuture, Unfinished, WebhookClaim, WebhookTried,
};
use crate::policy::Spend;

/// The schema, embedded in the binary.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Connections that serve reads.
const READERS: u32 = 4;

/// How long a statement waits for a lock another process holds before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes the write-ahead log is cut back to after a checkpoint, so a burst of writes does not
/// leave a large log behind for ever.
const WAL_SIZE_LIMIT: u64 = 8 * 1024 * 1024;

/// Pages in the write-ahead log past which a commit folds the log into the file itself. A
/// backstop only: the checkpointer does that off the commit path (a checkpoint syncs the file,
/// which on a busy disk takes long enough to show in every write waiting behind it).
const WAL_BACKSTOP_PAGES: u32 = 8192;

/// How often the checkpointer folds the write-ahead log into the file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Free pages (of 4 KiB) left in the file for new jobs to reuse; past this many, evicting gives
/// them back to the file system.
const FREE_PAGES_KEPT: i64 = 256;

/// Finished jobs examined at once when forgetting.
const EVICT_BATCH: i64 = 256;

/// `SQLITE_FULL`: no room on the disk (or under the database's page limit).
const SQLITE_FULL: &str = "13";

mod writer;

use writer::Writer;

/// Job records and events in a SQLite file. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct SqliteStore {
    /// The one connection that writes (used by [`writes`](Self::writes), and for the
    /// housekeeping that cannot run in a transaction).
    writer: SqlitePool,
    /// Every write goes through here.
    writes: Writer,
    /// Folds the write-ahead log into the file in the background; stopped with the store.
    checkpointer: tokio::task::JoinHandle<()>,
    /// Held by whoever checkpoints: SQLite lets one checkpoint run at a time and turns the
    /// others away rather than waiting.
    checkpointing: Arc<tokio::sync::Mutex<()>>,
    /// Connections that read.
    readers: SqlitePool,
    /// Its bounds.
    limits: StoreLimits,
    /// Counts kept beside the file, changed only by the writing task, in commit order.
    counts: Arc<Mutex<Counts>>,
    /// The file, for messages.
    path: PathBuf,
}

/// What the store holds, kept as it goes so bounds and `/metrics` need no scan.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    /// Every job.
    jobs: usize,
    /// Finished jobs.
    finished: usize,
    /// Bytes of finished jobs (records and events).
    finished_bytes: usize,
}

/// A job's row as far as the accounting goes.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    finished: bool,
    bytes: usize,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, migrates it to this gateway's schema and
    /// reads its counts. Refuses a file written by a newer gateway, in one line.
    pub(crate) async fn open(
        path: &Path,
        sync: SqliteSync,
        limits: StoreLimits,
    ) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                SqliteSync::Normal => SqliteSynchronous::Normal,
                SqliteSync::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES.to_string());
        let opening = |e: sqlx::Error| {
            StoreError::unavailable(format!("cannot open {}: {e}", path.display()))
        };
        if !path.exists() {
            // Only a new file can be made to hand freed pages back (the pragma takes before the
            // first table and before WAL mode). Not an option of every connection: on an existing
            // file the pragma writes, and a connection opened on a full disk would fail for it.
            options
                .clone()
                .auto_vacuum(SqliteAutoVacuum::Incremental)
                .connect()
                .await
                .map_err(opening)?
                .close()
                .await
                .map_err(opening)?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(opening)?;
        migrate(&writer, path).await?;
        // One process owns the file: a lease on a webhook is a claim of a sender that is gone.
        sqlx::query("UPDATE webhooks SET lease_until = NULL WHERE lease_until IS NOT NULL")
            .execute(&writer)
            .await
            .map_err(failed)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await
            .map_err(opening)?;
        let counts = Arc::new(Mutex::new(read_counts(&writer).await?));
        let checkpointing = Arc::new(tokio::sync::Mutex::new(()));
        Ok(Self {
            writes: Writer::spawn(writer.clone(), counts.clone()),
            checkpointer: tokio::spawn(checkpoint(readers.clone(), checkpointing.clone())),
            checkpointing,
            writer,
            readers,
            limits,
            counts,
            path: path.to_path_buf(),
        })
    }

    /// The counts hold plain numbers changed in one step, so a poisoned lock is used as is.
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` in the writing task's next transaction (see [`writer`]).
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut SqliteConnection,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(T, Delta), sqlx::Error>> + Send + 'c>,
            > + Send
            + 'static,
    {
        self.writes.write(work).await
    }

    /// Hands freed pages back to the file system once enough are free to be worth a checkpoint
    /// (below that, new jobs reuse them, so the file does not grow either). A failure only means
    /// the file stays larger for now.
    async fn give_space_back(&self) {
        let result = async {
            let mut conn = self.writer.acquire().await?;
            let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
                .fetch_one(&mut *conn)
                .await?;
            if free < FREE_PAGES_KEPT {
                return Ok(());
            }
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&mut *conn)
                .await?;
            // Moves the log into the file now, so the file shrinks and the log starts over; not
            // while the checkpointer runs, which would make this one give up at once.
            let _alone = self.checkpointing.lock().await;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await
                .map(|_| ())
        }
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, path = %self.path.display(), "could not give space back");
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

/// How a write changes the counts.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Delta {
    jobs: isize,
    finished: isize,
    finished_bytes: isize,
}

impl Delta {
    /// The change from a job's footprint `before` (none: a new job) to `after` (none: removed).
    fn between(before: Option<Footprint>, after: Option<Footprint>) -> Self {
        let mut delta = Delta {
            jobs: after.is_some() as isize - before.is_some() as isize,
            ..Delta::default()
        };
        for (footprint, sign) in [(before, -1), (after, 1)] {
            if let Some(Footprint {
                finished: true,
                bytes,
            }) = footprint
            {
                delta.finished += sign;
                delta.finished_bytes += sign * bytes as isize;
            }
        }
        delta
    }

    fn add(self, other: Delta) -> Delta {
        Delta {
            jobs: self.jobs + other.jobs,
            finished: self.finished + other.finished,
            finished_bytes: self.finished_bytes + other.finished_bytes,
        }
    }

    fn apply(self, counts: &mut Counts) {
        counts.jobs = counts.jobs.saturating_add_signed(self.jobs);
        counts.finished = counts.finished.saturating_add_signed(self.finished);
        counts.finished_bytes = counts
            .finished_bytes
            .saturating_add_signed(self.finished_bytes);
    }
}

/// Folds the write-ahead log into the file every [`CHECKPOINT_EVERY`], beside the writer (a
/// passive checkpoint never blocks it), so commits do not pay for it; the log then starts over
/// at the next commit that finds it all folded in. An error is only logged: the backstop in the
/// writer bounds the log meanwhile.
async fn checkpoint(pool: SqlitePool, alone: Arc<tokio::sync::Mutex<()>>) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let _alone = alone.lock().await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "background checkpoint failed");
        }
    }
}

/// What the file holds, counted once at open.
async fn read_counts(pool: &SqlitePool) -> Result<Counts, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*), \
                COUNT(finished_at), \
                COALESCE(SUM(CASE WHEN finished_at IS NOT NULL THEN record_bytes + event_bytes + session_bytes END), 0) \
         FROM jobs",
    )
    .fetch_one(pool)
    .await
    .map_err(failed)?;
    Ok(Counts {
        jobs: count(row.try_get(0).map_err(failed)?),
        finished: count(row.try_get(1).map_err(failed)?),
        finished_bytes: count(row.try_get(2).map_err(failed)?),
    })
}

/// Runs the embedded migrations, refusing a store from a newer gateway in one line.
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> = match sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await
    {
        Ok(0) => None,
        Ok(_) => sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await
            .map_err(failed)?,
        Err(e) => return Err(failed(e)),
    };
    let newer = |version: i64| {
        StoreError::unavailable(format!(
            "{} was written by a newer claude-gateway (schema version {version}; this one knows up to {known}): run that version or newer, or point DATABASE_URL at another store",
            path.display()
        ))
    };
    if let Some(version) = applied.filter(|v| *v > known) {
        return Err(newer(version));
    }
    MIGRATOR.run(pool).await.map_err(|error| match error {
        MigrateError::VersionMissing(version) => newer(version),
        other => StoreError::unavailable(format!(
            "cannot bring {} to schema version {known}: {other}",
            path.display()
        )),
    })
}

/// Sorts a database error: a full disk, or anything else.
pub(super) fn failed(error: sqlx::Error) -> StoreError {
    let full = match &error {
        sqlx::Error::Database(db) => db.code().as_deref() == Some(SQLITE_FULL),
        sqlx::Error::Io(io) => io.raw_os_error() == Some(nix::libc::ENOSPC),
        _ => false,
    };
    if full {
        StoreError::full(format!("no space left for the database: {error}"))
    } else {
        StoreError::unavailable(error.to_string())
    }
}

/// Appends the events not stored yet; answers the bytes added.
async fn append_events(
    conn: &mut SqliteConnection,
    job_id: &str,
    events: &[JobEvent],
) -> Result<usize, sqlx::Error> {
    let mut added = 0;
    for event in events {
        let done = sqlx::query(
            "INSERT INTO job_events (job_id, seq, kind, data) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(job_id)
        .bind(i64::try_from(event.seq).unwrap_or(i64::MAX))
        .bind(event.kind.name())
        .bind(&*event.data)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() > 0 {
            added += event.bytes();
        }
    }
    Ok(added)
}

/// The job's footprint, if it exists.
async fn footprint(
    conn: &mut SqliteConnection,
    job_id: &str,
) -> Result<Option<Footprint>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT finished_at IS NOT NULL, record_bytes + event_bytes + session_bytes FROM jobs WHERE job_id = ?",
    )
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(Footprint {
            finished: row.try_get(0)?,
            bytes: count(row.try_get(1)?),
        })
    })
    .transpose()
}

impl JobStore for SqliteStore {
    rows::shared_reads!(readers: readers, unfinished_from: writer, failed: failed);

    fn is_durable(&self) -> bool {
        true
    }

    fn len(&self) -> usize {
        self.counts().jobs
    }

    fn insert(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |conn| {
            Box::pin(async move {
                let encoded = encode(&record)?;
                // A new job's events are all new: their bytes go in with the row.
                let event_bytes: usize = events.iter().map(JobEvent::bytes).sum();
                sqlx::query(
                    "INSERT INTO jobs (job_id, owner, status, created_at, finished_at, \
                                       record_bytes, event_bytes, summary, record) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&record.job_id)
                .bind(&record.owner)
                .bind(record.status.as_str())
                .bind(micros(&record.created_at))
                .bind(finished_micros(&record))
                .bind(encoded.record_bytes as i64)
                .bind(event_bytes as i64)
                .bind(&encoded.summary)
                .bind(&encoded.record)
                .execute(&mut *conn)
                .await?;
                append_events(conn, &record.job_id, &events).await?;
                for webhook in new_webhooks(&record) {
                    rows::insert_webhook!(record, webhook)
                        .execute(&mut *conn)
                        .await?;
                }
                let after = Footprint {
                    finished: record.status.is_terminal(),
                    bytes: encoded.record_bytes + event_bytes,
                };
                Ok(((), Delta::between(None, Some(after))))
            })
        }))
    }

    fn update(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |conn| {
            Box::pin(async move {
                // A job forgotten meanwhile stays forgotten: an update never brings it back.
                let Some(before) = footprint(conn, &record.job_id).await? else {
                    return Ok((false, Delta::default()));
                };
                let encoded = encode(&record)?;
                let event_bytes = append_events(conn, &record.job_id, &events).await?;
                let total: i64 = sqlx::query_scalar(
                    "UPDATE jobs SET status = ?, finished_at = ?, record_bytes = ?, \
                                     event_bytes = event_bytes + ?, summary = ?, record = ? \
                     WHERE job_id = ? RETURNING record_bytes + event_bytes + session_bytes",
                )
                .bind(record.status.as_str())
                .bind(finished_micros(&record))
                .bind(encoded.record_bytes as i64)
                .bind(event_bytes as i64)
                .bind(&encoded.summary)
                .bind(&encoded.record)
                .bind(&record.job_id)
                .fetch_one(&mut *conn)
                .await?;
                let after = Footprint {
                    finished: record.status.is_terminal(),
                    bytes: count(total),
                };
                Ok((true, Delta::between(Some(before), Some(after))))
            })
        }))
    }

    fn keep_session(&self, job_id: String, session: Vec<u8>) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |conn| {
            Box::pin(async move {
                let Some(before) = footprint(conn, &job_id).await? else {
                    return Ok((false, Delta::default()));
                };
                let total: i64 = sqlx::query_scalar(
                    "UPDATE jobs SET session = ?, session_bytes = ? WHERE job_id = ? \
                     RETURNING record_bytes + event_bytes + session_bytes",
                )
                .bind(&session)
                .bind(session.len() as i64)
                .bind(&job_id)
                .fetch_one(&mut *conn)
                .await?;
                let after = Footprint {
                    bytes: count(total),
                    ..before
                };
                Ok((true, Delta::between(Some(before), Some(after))))
            })
        }))
    }

    fn keep_chat_session(&self, session: ChatSession) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |conn| {
            Box::pin(async move {
                rows::keep_chat_session!(session)
                    .execute(&mut *conn)
                    .await?;
                Ok((true, Delta::default()))
            })
        }))
    }

    fn append(&self, job_id: String, events: Vec<JobEvent>) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |conn| {
            Box::pin(async move {
                let Some(before) = footprint(conn, &job_id).await? else {
                    return Ok((false, Delta::default()));
                };
                let added = append_events(conn, &job_id, &events).await?;
                if added > 0 {
                    sqlx::query("UPDATE jobs SET event_bytes = event_bytes + ? WHERE job_id = ?")
                        .bind(added as i64)
                        .bind(&job_id)
                        .execute(&mut *conn)
                        .await?;
                }
                let after = Footprint {
                    bytes: before.bytes + added,
                    ..before
                };
                Ok((true, Delta::between(Some(before), Some(after))))
            })
        }))
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page> {
        Box::pin(async move {
            let limit = query.limit.max(1);
            let status = query.status.map(|s| s.as_str());
            // Two texts rather than one with optional clauses, so a deep page is an index range,
            // not a scan from the newest job.
            let rows =
                match &query.cursor {
                    None => sqlx::query(
                        "SELECT summary FROM jobs WHERE owner = ? AND (? IS NULL OR status = ?) \
                         ORDER BY created_at DESC, job_id DESC LIMIT ?",
                    )
                    .bind(&query.owner)
                    .bind(status)
                    .bind(status)
                    .bind(limit as i64 + 1)
                    .fetch_all(&self.readers)
                    .await,
                    Some(Cursor { created_at, job_id }) => sqlx::query(
                        "SELECT summary FROM jobs WHERE owner = ? AND (? IS NULL OR status = ?) \
                         AND (created_at, job_id) < (?, ?) \
                         ORDER BY created_at DESC, job_id DESC LIMIT ?",
                    )
                    .bind(&query.owner)
                    .bind(status)
                    .bind(status)
                    .bind(micros(created_at))
                    .bind(job_id)
                    .bind(limit as i64 + 1)
                    .fetch_all(&self.readers)
                    .await,
                }
                .map_err(failed)?;
            rows::page(&rows, limit)
        })
    }

    fn remove_expired(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let cutoff = self.limits.cutoff(now).map(|t| micros(&t));
            let limits = self.limits;
            let mut removed = Vec::new();
            loop {
                let counts = self.counts.clone();
                let batch = self
                    .write(move |conn| {
                        Box::pin(async move {
                            // Read in the writing task, so in step with every committed write.
                            let counts = *counts.lock().unwrap_or_else(PoisonError::into_inner);
                            let over = counts.finished > limits.max_finished
                                || counts.finished_bytes > limits.max_finished_bytes;
                            // Within bounds only expired jobs can go, and they are one index
                            // range; past a bound the oldest go whatever their age.
                            let rows = if over {
                                sqlx::query(
                                    "SELECT job_id, finished_at, record_bytes + event_bytes + session_bytes \
                                     FROM jobs WHERE finished_at IS NOT NULL \
                                     ORDER BY finished_at, job_id LIMIT ?",
                                )
                                .bind(EVICT_BATCH)
                                .fetch_all(&mut *conn)
                                .await?
                            } else {
                                sqlx::query(
                                    "SELECT job_id, finished_at, record_bytes + event_bytes + session_bytes \
                                     FROM jobs WHERE finished_at <= ? \
                                     ORDER BY finished_at, job_id LIMIT ?",
                                )
                                .bind(cutoff.unwrap_or(i64::MIN))
                                .bind(EVICT_BATCH)
                                .fetch_all(&mut *conn)
                                .await?
                            };
                            let mut left = counts;
                            let mut gone = Vec::new();
                            let mut delta = Delta::default();
                            for row in rows {
                                let job_id: String = row.try_get(0)?;
                                let finished_at: i64 = row.try_get(1)?;
                                let bytes = count(row.try_get(2)?);
                                let expired = cutoff.is_some_and(|cutoff| finished_at <= cutoff);
                                let within = left.finished <= limits.max_finished
                                    && left.finished_bytes <= limits.max_finished_bytes;
                                if !expired && within {
                                    break;
                                }
                                sqlx::query("DELETE FROM jobs WHERE job_id = ?")
                                    .bind(&job_id)
                                    .execute(&mut *conn)
                                    .await?;
                                let change = Delta::between(
                                    Some(Footprint {
                                        finished: true,
                                        bytes,
                                    }),
                                    None,
                                );
                                change.apply(&mut left);
                                delta = delta.add(change);
                                gone.push(job_id);
                            }
                            Ok((gone, delta))
                        })
                    })
                    .await?;
                let done = batch.is_empty();
                removed.extend(batch);
                if done {
                    break;
                }
            }
            let max_chats = i64::try_from(limits.max_finished).unwrap_or(i64::MAX);
            let chats = self
                .write(move |conn| {
                    Box::pin(async move {
                        // A time to live after their last turn, then the least recently used
                        // past the count bound.
                        let done = sqlx::query(
                            "DELETE FROM chat_sessions WHERE updated_at <= ? OR handle NOT IN \
                             (SELECT handle FROM chat_sessions ORDER BY updated_at DESC LIMIT ?)",
                        )
                        .bind(cutoff.unwrap_or(i64::MIN))
                        .bind(max_chats)
                        .execute(&mut *conn)
                        .await?;
                        Ok((done.rows_affected(), Delta::default()))
                    })
                })
                .await?;
            if !removed.is_empty() || chats > 0 {
                self.give_space_back().await;
            }
            Ok(removed)
        })
    }

    fn claim_webhooks(&self, claim: WebhookClaim) -> StoreFuture<'_, Vec<DueWebhook>> {
        Box::pin(async move {
            let claimed: Vec<String> = self
                .write(move |conn| {
                    Box::pin(async move {
                        let ids: Vec<String> = sqlx::query_scalar(
                            "UPDATE webhooks SET lease_until = ?1 WHERE id IN ( \
                                 SELECT w.id FROM webhooks w JOIN jobs j ON j.job_id = w.job_id \
                                 WHERE w.state = 'pending' AND w.next_at <= ?2 \
                                   AND (w.lease_until IS NULL OR w.lease_until <= ?2) \
                                   AND ((w.kind = 'started' AND j.status <> 'queued') \
                                        OR (w.kind = 'ended' AND j.finished_at IS NOT NULL)) \
                                 ORDER BY w.next_at LIMIT ?3) \
                             RETURNING id",
                        )
                        .bind(micros(&claim.lease_until))
                        .bind(micros(&claim.now))
                        .bind(i64::try_from(claim.limit).unwrap_or(i64::MAX))
                        .fetch_all(&mut *conn)
                        .await?;
                        Ok((ids, Delta::default()))
                    })
                })
                .await?;
            let mut due = Vec::with_capacity(claimed.len());
            for id in claimed {
                let row = sqlx::query(
                    "SELECT w.id, w.kind, w.url, w.attempts, j.summary \
                     FROM webhooks w JOIN jobs j ON j.job_id = w.job_id WHERE w.id = ?",
                )
                .bind(&id)
                .fetch_optional(&self.readers)
                .await
                .map_err(failed)?;
                if let Some(row) = row {
                    due.push(rows::due_webhook(&row)?);
                }
            }
            Ok(due)
        })
    }

    fn webhook_tried(&self, id: String, tried: WebhookTried) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |conn| {
            Box::pin(async move {
                let counted = i64::from(tried.attempt.is_some());
                let attempt = tried.attempt.as_ref().map(rows::attempt_json);
                let done = sqlx::query(
                    "UPDATE webhooks SET attempts = attempts + ?, \
                         tries = CASE WHEN ? IS NULL THEN tries ELSE json_insert(tries, '$[#]', json(?)) END, \
                         state = ?, next_at = ?, lease_until = NULL \
                     WHERE id = ?",
                )
                .bind(counted)
                .bind(&attempt)
                .bind(&attempt)
                .bind(tried.state)
                .bind(micros(&tried.next_at))
                .bind(&id)
                .execute(&mut *conn)
                .await?;
                Ok((done.rows_affected() > 0, Delta::default()))
            })
        }))
    }

    fn charge(&self, owner: String, window: SpendWindow, spend: Spend) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |conn| {
            Box::pin(async move {
                let (forget, add) = rows::charge!(&owner, window, spend);
                forget.execute(&mut *conn).await?;
                add.execute(&mut *conn).await?;
                Ok(((), Delta::default()))
            })
        }))
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.checkpointer.abort();
            // Every queued write is committed; reads go on working (an embedder may still look
            // at what was stored), and the connections close when the store is dropped.
            self.writes.close().await;
            // The log folded into the file, so the file alone is the whole store.
            let _alone = self.checkpointing.lock().await;
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.writer)
                .await
            {
                tracing::debug!(%error, "could not fold the write-ahead log into the file at close");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
