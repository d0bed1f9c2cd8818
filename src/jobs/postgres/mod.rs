//! The shared job store: one PostgreSQL database behind several replicas, through sqlx.
//!
//! - **The same rows as SQLite** ([`rows`](super::rows)): a job is a row with its record and
//!   summary as JSON, its events rows of their own, and every change a caller must see whole is
//!   one statement (a statement is atomic), so most writes are one round trip.
//! - **One queue.** A job waits with `status = 'queued'` and no `replica`; a replica with free
//!   slots [claims](PgStore::claim) the next in fair order (the start tag `vtag` given at
//!   [enqueue](PgStore::enqueue), start-time fair queueing as in the gauge; then the oldest) with
//!   `FOR UPDATE SKIP LOCKED` over a partial index on the queue, passing over owners at their
//!   `max_concurrent`, so replicas claiming at once never block each other nor take the same job.
//!   Triggers `NOTIFY` the replicas when a job joins the queue, when a caller cancels a job
//!   another replica runs, and when a job's events are stored.
//! - **Fenced writes.** A job's record is written only by the replica the row says holds it (the
//!   `replica` column): a replica taken for dead and its jobs handed on cannot overwrite what the
//!   next holder writes.
//! - **Leases.** Each replica renews a row in `replicas`, on the database's clock; one whose lease
//!   ran out is taken for dead, and the jobs it held are settled by whoever notices.
//! - **Versioned schema.** The migrations under `migrations/postgres` are embedded and run at
//!   start under sqlx's advisory lock, so replicas starting at once migrate one after another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

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
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Pooled connections per replica (one more listens for notices): ten replicas stay well
/// within PostgreSQL's default of 100 connections.
const CONNECTIONS: u32 = 8;

/// How long a caller waits for a connection before the store counts as unavailable: short, so a
/// database that is down gives a clear answer rather than a hung request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Finished jobs examined at once when forgetting.
const EVICT_BATCH: i64 = 256;

/// Advisory lock keys (in the database, shared by every replica): one replica admits into the
/// queue at a time, so the service-wide depth bound is exact; one evicts at a time.
const ADMIT_LOCK: i64 = 0x636c_6175_6465_0001;
const EVICT_LOCK: i64 = 0x636c_6175_6465_0002;

/// `disk_full` (SQLSTATE 53100): the database has no room left.
const DISK_FULL: &str = "53100";

/// [`UNFINISHED`](rows::UNFINISHED) with the replica holding the job.
const HELD: &str = concat!(
    "SELECT j.record, ",
    rows::log_position!(),
    ", j.replica FROM jobs j"
);

/// The claim of one job (see [`PgStore::claim`]): `$1` the replica, `$2`/`$3` the owners the
/// policy names and their `max_concurrent`, `$4` everyone else's, `$5` now (Unix microseconds).
/// Answers the claimed job as [`UNFINISHED`](rows::UNFINISHED) does, a row of NULLs when the job
/// found could not be taken (its owner's last slot went to another replica first), nothing when
/// none was found.
static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH cand AS (SELECT q.seq, q.owner, \
                   COALESCE((SELECT c.cap FROM UNNEST($2::TEXT[], $3::BIGINT[]) AS c(owner, cap) \
                             WHERE c.owner = q.owner), $4) AS cap \
                 FROM jobs q WHERE q.status = 'queued' AND q.replica IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM dispatch_pause p WHERE p.until_at > $5) \
                   AND COALESCE((SELECT k.running FROM key_running k WHERE k.owner = q.owner), 0) \
                       < COALESCE((SELECT c.cap FROM UNNEST($2::TEXT[], $3::BIGINT[]) \
                                     AS c(owner, cap) WHERE c.owner = q.owner), $4) \
                 ORDER BY q.vtag, q.created_at LIMIT 1 FOR UPDATE OF q SKIP LOCKED), \
              gate AS (SELECT k.owner FROM key_running k JOIN cand ON k.owner = cand.owner \
                 WHERE k.running < cand.cap FOR UPDATE OF k), \
              claimed AS (UPDATE jobs SET replica = $1 \
                 WHERE seq IN (SELECT seq FROM cand) AND EXISTS (SELECT 1 FROM gate) \
                 RETURNING seq, job_id, record) \
         {}",
        rows::UNFINISHED.replace(
            "FROM jobs j",
            "FROM cand LEFT JOIN claimed j ON j.seq = cand.seq"
        )
    )
});

/// Appends events to the job named by `$1` when the row says the writer may (`$2` holds the
/// condition's parameter), skipping any already stored; answers the bytes added as `added`.
/// Events travel as three arrays (`$3` seqs, `$4` kinds, `$5` data).
const APPEND_EVENTS: &str = "ins AS (INSERT INTO job_events (job_id, seq, kind, data) \
        SELECT j.job_id, e.seq, e.kind, e.data FROM fenced j, \
               UNNEST($3::BIGINT[], $4::TEXT[], $5::TEXT[]) AS e(seq, kind, data) \
        ON CONFLICT DO NOTHING RETURNING octet_length(data) AS n), \
     added AS (SELECT COALESCE(SUM(n), 0)::BIGINT AS added FROM ins)";

/// Which rows a write may change: the holder check that keeps a replica taken for dead from
/// overwriting the next holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fence {
    /// The row's `replica` must be this (`None`: the job is in the shared queue).
    pub replica: Option<String>,
    /// The job must not be finished.
    pub unfinished: bool,
}

/// Job records, events, the shared queue and the replicas' leases in PostgreSQL. See the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    /// Its bounds, shared by the whole service.
    limits: StoreLimits,
    /// This replica's name: what it claims jobs under.
    replica: String,
    /// Jobs in the store, as last counted, moved by this replica's own writes in between.
    jobs: AtomicUsize,
}

/// Sorts a database error: no room left, or anything else (the database unreachable, most
/// likely). The message never holds the URL.
/// How a new job of an owner takes its place in the shared queue: its key's weight and
/// `max_queued` under the policy in force.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FairAdmit {
    /// The owner's weight.
    pub(crate) weight: u32,
    /// The owner's limit on jobs waiting in the shared queue.
    pub(crate) max_queued: Option<usize>,
}

/// What [`PgStore::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// The job is in the shared queue.
    Queued,
    /// The service's queue holds `MAX_QUEUE_DEPTH` jobs; nothing written.
    Full,
    /// The owner already has this many jobs waiting, its limit; nothing written.
    KeyFull {
        /// The owner's `max_queued`.
        max_queued: usize,
    },
}

/// Owners' `max_concurrent` for a claim: those the policy names, and the default for the rest
/// (`i64::MAX` for no limit).
#[derive(Debug, Clone)]
pub(crate) struct ClaimCaps {
    /// Names the policy has a table for.
    pub(crate) owners: Vec<String>,
    /// Their limits, in the same order.
    pub(crate) caps: Vec<i64>,
    /// Every other owner's limit.
    pub(crate) default: i64,
}

impl Default for ClaimCaps {
    /// No owner is limited.
    fn default() -> Self {
        Self {
            owners: Vec::new(),
            caps: Vec::new(),
            default: i64::MAX,
        }
    }
}

pub(super) fn failed(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(DISK_FULL) => {
            StoreError::full(format!("no space left for the database: {error}"))
        }
        sqlx::Error::PoolTimedOut => StoreError::unavailable(
            "the PostgreSQL database cannot be reached (no connection within 3 s)",
        ),
        _ => StoreError::unavailable(format!("PostgreSQL: {error}")),
    }
}

/// The events as the three arrays [`APPEND_EVENTS`] reads.
fn columns(events: &[JobEvent]) -> (Vec<i64>, Vec<&'static str>, Vec<String>) {
    let seqs = events
        .iter()
        .map(|e| i64::try_from(e.seq).unwrap_or(i64::MAX))
        .collect();
    let kinds = events.iter().map(|e| e.kind.name()).collect();
    let data = events.iter().map(|e| e.data.to_string()).collect();
    (seqs, kinds, data)
}

/// An unfinished job and the replica holding it.
#[derive(Debug)]
pub(crate) struct Held {
    /// The replica that claimed it; `None` while it waits in the queue.
    pub holder: Option<String>,
    /// The job and where its log stands.
    pub job: Unfinished,
}

/// Rows of [`UNFINISHED`](rows::UNFINISHED) followed by the `replica` column.
fn read_held(rows: Vec<PgRow>) -> Result<Vec<Held>, StoreError> {
    let holders = rows
        .iter()
        .map(|row| row.try_get::<Option<String>, _>(4).map_err(failed))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(holders
        .into_iter()
        .zip(rows::unfinished(&rows)?)
        .map(|(holder, job)| Held { holder, job })
        .collect())
}

impl PgStore {
    /// Connects to the database at `url` as replica `replica`, migrates it to this gateway's
    /// schema (one replica at a time) and counts its jobs. Refuses a database migrated by a newer
    /// gateway, in one line.
    pub(crate) async fn open(
        url: &str,
        replica: &str,
        limits: StoreLimits,
    ) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| StoreError::unavailable("DATABASE_URL is not a valid postgres:// URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        MIGRATOR.run(&pool).await.map_err(|error| match error {
            MigrateError::VersionMissing(version) => StoreError::unavailable(format!(
                "the PostgreSQL database was migrated by a newer claude-gateway (schema version {version}; this one knows up to {known}): run that version or newer"
            )),
            other => StoreError::unavailable(format!(
                "cannot bring the PostgreSQL database to schema version {known}: {other}"
            )),
        })?;
        let store = Self {
            pool,
            limits,
            replica: replica.to_owned(),
            jobs: AtomicUsize::new(0),
        };
        store.recount().await?;
        Ok(store)
    }

    /// The connections, for the listener that follows the store's notices.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Counts the jobs again (other replicas add and forget jobs too).
    async fn recount(&self) -> Result<(), StoreError> {
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(&self.pool)
            .await
            .map_err(failed)?;
        self.jobs.store(count(jobs), Ordering::Relaxed);
        Ok(())
    }

    /// Adds a new job to the shared queue unless `max_queued` jobs of the whole service already
    /// wait there; `false` (nothing written) when they do. Admissions take an advisory lock in
    /// turn, so the bound holds exactly across replicas.
    ///
    /// The job is tagged for fair dispatch (see `migrations/postgres/0004_fair_queue.sql`): its
    /// start tag is GREATEST(V, the owner's last finish tag) and the owner's finish tag moves on
    /// by `1/fair.weight`, in the same transaction. An owner with `fair.max_queued` jobs already
    /// waiting is refused ([`Enqueued::KeyFull`]) while others are still taken.
    pub(crate) async fn enqueue(
        &self,
        record: &JobRecord,
        events: &[JobEvent],
        max_queued: usize,
        fair: FairAdmit,
    ) -> Result<Enqueued, StoreError> {
        let encoded = encode(record).map_err(failed)?;
        let event_bytes: usize = events.iter().map(JobEvent::bytes).sum();
        let (seqs, kinds, data) = columns(events);
        let mut tx = self.pool.begin().await.map_err(failed)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ADMIT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        let (mine, start): (i64, f64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM jobs \
                      WHERE owner = $1 AND status = 'queued' AND replica IS NULL), \
                    GREATEST( \
                      COALESCE((SELECT MIN(vtag) FROM jobs \
                                WHERE replica IS NOT NULL AND finished_at IS NULL), \
                               (SELECT max_finish FROM dispatch_clock)), \
                      COALESCE((SELECT last_finish FROM key_clock WHERE owner = $1), 0))",
        )
        .bind(&record.owner)
        .fetch_one(&mut *tx)
        .await
        .map_err(failed)?;
        if let Some(limit) = fair.max_queued {
            if usize::try_from(mine).unwrap_or(usize::MAX) >= limit {
                return Ok(Enqueued::KeyFull { max_queued: limit });
            }
        }
        let finish = start + 1.0 / f64::from(fair.weight.max(1));
        let inserted: i64 = sqlx::query_scalar(&format!(
            "WITH room AS (SELECT COUNT(*) < $14 AS ok FROM jobs \
                           WHERE status = 'queued' AND replica IS NULL), \
                  fenced AS (INSERT INTO jobs (job_id, owner, status, created_at, finished_at, \
                                               record_bytes, event_bytes, summary, record, vtag) \
                             SELECT $1, $6, $7, $8, $9, $10, $11, $12, $13, $15 \
                             FROM room WHERE room.ok \
                             RETURNING job_id), \
                  {APPEND_EVENTS} \
             SELECT COUNT(*) FROM fenced WHERE $2::TEXT IS NULL"
        ))
        .bind(&record.job_id)
        .bind(None::<String>)
        .bind(&seqs)
        .bind(&kinds)
        .bind(&data)
        .bind(&record.owner)
        .bind(record.status.as_str())
        .bind(micros(&record.created_at))
        .bind(finished_micros(record))
        .bind(encoded.record_bytes as i64)
        .bind(event_bytes as i64)
        .bind(&encoded.summary)
        .bind(&encoded.record)
        .bind(i64::try_from(max_queued).unwrap_or(i64::MAX))
        .bind(start)
        .fetch_one(&mut *tx)
        .await
        .map_err(failed)?;
        if inserted > 0 {
            sqlx::query(
                "INSERT INTO key_clock (owner, last_finish) VALUES ($1, $2) \
                 ON CONFLICT (owner) DO UPDATE SET last_finish = EXCLUDED.last_finish",
            )
            .bind(&record.owner)
            .bind(finish)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            sqlx::query("UPDATE dispatch_clock SET max_finish = GREATEST(max_finish, $1)")
                .bind(finish)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            // With the job, in its transaction: no webhook is lost between the two.
            for webhook in new_webhooks(record) {
                rows::insert_webhook!(record, webhook)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
            }
        }
        tx.commit().await.map_err(failed)?;
        if inserted > 0 {
            self.jobs.fetch_add(1, Ordering::Relaxed);
            return Ok(Enqueued::Queued);
        }
        Ok(Enqueued::Full)
    }

    /// Replaces the job's record and appends `events`, in one statement, if the row passes
    /// `fence`; `false` (nothing written) when it does not or the job is gone.
    pub(crate) async fn update_fenced(
        &self,
        record: &JobRecord,
        events: &[JobEvent],
        fence: &Fence,
    ) -> Result<bool, StoreError> {
        let encoded = encode(record).map_err(failed)?;
        let (seqs, kinds, data) = columns(events);
        let updated = sqlx::query(&format!(
            "WITH fenced AS (SELECT job_id FROM jobs WHERE job_id = $1 \
                               AND replica IS NOT DISTINCT FROM $2 \
                               AND (NOT $12 OR finished_at IS NULL)), \
                  {APPEND_EVENTS} \
             UPDATE jobs SET status = $6, replica = $7, finished_at = $8, record_bytes = $9, \
                             event_bytes = event_bytes + (SELECT added FROM added), \
                             summary = $10, record = $11 \
             WHERE job_id IN (SELECT job_id FROM fenced)"
        ))
        .bind(&record.job_id)
        .bind(&fence.replica)
        .bind(&seqs)
        .bind(&kinds)
        .bind(&data)
        .bind(record.status.as_str())
        .bind(&record.replica)
        .bind(finished_micros(record))
        .bind(encoded.record_bytes as i64)
        .bind(&encoded.summary)
        .bind(&encoded.record)
        .bind(fence.unfinished)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(updated.rows_affected() > 0)
    }

    /// Claims up to `n` jobs of the shared queue for this replica, in fair order (least start
    /// tag, then oldest), passing over owners that already hold their `max_concurrent` jobs on
    /// any replica (`caps`), and answers them with where their logs stand. Nothing is claimed
    /// while the shared upstream pause (`dispatch_pause`) lasts.
    ///
    /// Each job is claimed by one indexed statement (`jobs_fair_queue`, FOR UPDATE SKIP LOCKED:
    /// replicas claiming at once skip each other's rows instead of waiting for them). The owner's
    /// `max_concurrent` is checked on its `key_running` row, locked by the claim: two replicas
    /// claiming for one owner at once take turns on that row, and the second, seeing the count the
    /// first's claim added (by the trigger of `0006_shared_dispatch.sql`), takes no job past the
    /// limit; it tries the queue again, so another owner's job still gets the slot.
    pub(crate) async fn claim(
        &self,
        n: usize,
        caps: &ClaimCaps,
    ) -> Result<Vec<Unfinished>, StoreError> {
        let mut claimed = Vec::new();
        // A try lost to another replica's claim of the same owner's last slot is tried again,
        // a few times at most (each loss means another replica took a job meanwhile).
        let mut tries = n.saturating_mul(2).max(4);
        while claimed.len() < n && tries > 0 {
            tries -= 1;
            let rows = sqlx::query(&CLAIM)
                .bind(&self.replica)
                .bind(&caps.owners)
                .bind(&caps.caps)
                .bind(caps.default)
                .bind(micros(&Utc::now()))
                .fetch_all(&self.pool)
                .await
                .map_err(failed)?;
            // A row without a record: the job was found, but its owner's last slot went to
            // another replica's claim first.
            let (won, lost): (Vec<PgRow>, Vec<PgRow>) = rows.into_iter().partition(|row| {
                row.try_get::<Option<String>, _>(0)
                    .is_ok_and(|record| record.is_some())
            });
            if won.is_empty() && lost.is_empty() {
                break;
            }
            claimed.append(&mut rows::unfinished(&won)?);
        }
        Ok(claimed)
    }

    /// The job, where its log stands and who holds it, if it is not finished.
    pub(crate) async fn unfinished_one(&self, job_id: &str) -> Result<Option<Held>, StoreError> {
        let rows = sqlx::query(&format!(
            "{HELD} WHERE j.job_id = $1 AND j.finished_at IS NULL"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        Ok(read_held(rows)?.pop())
    }

    /// Jobs held by replicas that have no lease (dead, or gone), or, with `of`, by that replica
    /// alone; oldest first.
    pub(crate) async fn orphans(&self, of: Option<&str>) -> Result<Vec<Held>, StoreError> {
        let rows = sqlx::query(&format!(
            "{HELD} WHERE j.finished_at IS NULL AND j.replica IS NOT NULL AND \
               CASE WHEN $1::TEXT IS NULL \
                    THEN NOT EXISTS (SELECT 1 FROM replicas r WHERE r.replica_id = j.replica) \
                    ELSE j.replica = $1 END \
             ORDER BY j.seq"
        ))
        .bind(of)
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        read_held(rows)
    }

    /// Asks the replica holding the job to stop it (it hears at once through a notice, or at its
    /// next poll); `false` when no replica holds it unfinished.
    pub(crate) async fn request_cancel(&self, job_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET cancel_requested = TRUE \
             WHERE job_id = $1 AND finished_at IS NULL AND replica IS NOT NULL",
        )
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(done.rows_affected() > 0)
    }

    /// The unfinished jobs of this replica a caller asked to cancel.
    pub(crate) async fn cancels_here(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT job_id FROM jobs \
             WHERE replica = $1 AND cancel_requested AND finished_at IS NULL",
        )
        .bind(&self.replica)
        .fetch_all(&self.pool)
        .await
        .map_err(failed)
    }

    /// Renews this replica's lease for `lease` from now (the database's now).
    pub(crate) async fn renew_lease(&self, lease: Duration) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replicas (replica_id, lease_until) \
             VALUES ($1, now() + make_interval(secs => $2)) \
             ON CONFLICT (replica_id) DO UPDATE SET lease_until = EXCLUDED.lease_until",
        )
        .bind(&self.replica)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(failed)
    }

    /// Forgets the replicas whose lease ran out; answers their names. Whoever gets a name here
    /// is the one that settles its jobs (a delete is atomic; see [`orphans`](Self::orphans) for
    /// the jobs of replicas whose settling was cut short).
    pub(crate) async fn expire_leases(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("DELETE FROM replicas WHERE lease_until < now() RETURNING replica_id")
            .fetch_all(&self.pool)
            .await
            .map_err(failed)
    }

    /// Gives up this replica's lease, at a graceful shutdown, once its jobs are settled.
    pub(crate) async fn leave(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM replicas WHERE replica_id = $1")
            .bind(&self.replica)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(failed)
    }

    /// Jobs of the whole service waiting in the shared queue.
    pub(crate) async fn queued(&self) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND replica IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(failed)?;
        Ok(count(n))
    }

    /// Pauses dispatch on every replica until `until` (or later, when a pause in force ends
    /// later), and wakes the replicas' claim loops to read it.
    pub(crate) async fn pause_dispatch(&self, until: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "WITH up AS (UPDATE dispatch_pause SET until_at = GREATEST(until_at, $1) RETURNING 1) \
             SELECT pg_notify('claude_gateway_queue', '') FROM up",
        )
        .bind(micros(&until))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(failed)
    }

    /// The end of the shared upstream pause, if one is in force at `now`.
    pub(crate) async fn dispatch_paused_until(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let until: Option<i64> =
            sqlx::query_scalar("SELECT until_at FROM dispatch_pause WHERE until_at > $1")
                .bind(micros(&now))
                .fetch_optional(&self.pool)
                .await
                .map_err(failed)?;
        Ok(until.and_then(DateTime::from_timestamp_micros))
    }

    /// `owner`'s unfinished jobs that are not on this replica (in the shared queue, or claimed
    /// by another one): how many wait (`queued`) and how many run, in one indexed statement.
    pub(crate) async fn held_elsewhere(&self, owner: &str) -> Result<(usize, usize), StoreError> {
        let (queued, running): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE status = 'queued'), \
                    COUNT(*) FILTER (WHERE status <> 'queued') \
             FROM jobs WHERE owner = $1 AND finished_at IS NULL \
               AND replica IS DISTINCT FROM $2",
        )
        .bind(owner)
        .bind(&self.replica)
        .fetch_one(&self.pool)
        .await
        .map_err(failed)?;
        Ok((count(queued), count(running)))
    }

    /// One batch of eviction under the eviction lock (held by the caller's transaction): which
    /// of the oldest finished jobs to forget, given the totals of finished jobs.
    async fn evict_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        cutoff: Option<i64>,
        finished: &mut usize,
        bytes: &mut usize,
    ) -> Result<Vec<String>, sqlx::Error> {
        let limits = self.limits;
        let rows = sqlx::query(
            "SELECT job_id, finished_at, record_bytes + event_bytes + session_bytes FROM jobs \
             WHERE finished_at IS NOT NULL ORDER BY finished_at, job_id LIMIT $1",
        )
        .bind(EVICT_BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let mut gone = Vec::new();
        for row in rows {
            let finished_at: i64 = row.try_get(1)?;
            let expired = cutoff.is_some_and(|cutoff| finished_at <= cutoff);
            let within = *finished <= limits.max_finished && *bytes <= limits.max_finished_bytes;
            if !expired && within {
                break;
            }
            *finished = finished.saturating_sub(1);
            *bytes = bytes.saturating_sub(count(row.try_get(2)?));
            gone.push(row.try_get::<String, _>(0)?);
        }
        if !gone.is_empty() {
            sqlx::query("DELETE FROM jobs WHERE job_id = ANY($1)")
                .bind(&gone)
                .execute(&mut *conn)
                .await?;
        }
        Ok(gone)
    }
}

impl JobStore for PgStore {
    rows::shared_reads!(readers: pool, unfinished_from: pool, failed: failed);

    fn charge(&self, owner: String, window: SpendWindow, spend: Spend) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (forget, add) = rows::charge!(&owner, window, spend);
            let mut tx = self.pool.begin().await.map_err(failed)?;
            forget.execute(&mut *tx).await.map_err(failed)?;
            add.execute(&mut *tx).await.map_err(failed)?;
            tx.commit().await.map_err(failed)
        })
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn len(&self) -> usize {
        self.jobs.load(Ordering::Relaxed)
    }

    fn insert(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let fair = FairAdmit {
                weight: 1,
                max_queued: None,
            };
            if self.enqueue(&record, &events, usize::MAX, fair).await? == Enqueued::Queued {
                Ok(())
            } else {
                Err(StoreError::unavailable("the job could not be inserted"))
            }
        })
    }

    fn keep_session(&self, job_id: String, session: Vec<u8>) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let done =
                sqlx::query("UPDATE jobs SET session = $1, session_bytes = $2 WHERE job_id = $3")
                    .bind(&session)
                    .bind(session.len() as i64)
                    .bind(&job_id)
                    .execute(&self.pool)
                    .await
                    .map_err(failed)?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn keep_chat_session(&self, session: ChatSession) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            rows::keep_chat_session!(session)
                .execute(&self.pool)
                .await
                .map_err(failed)?;
            Ok(true)
        })
    }

    fn update(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let fence = Fence {
                replica: record.replica.clone(),
                unfinished: false,
            };
            self.update_fenced(&record, &events, &fence).await
        })
    }

    fn append(&self, job_id: String, events: Vec<JobEvent>) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let (seqs, kinds, data) = columns(&events);
            // Only the holder (or, for a job in the queue, anyone) appends to a job's log.
            let found: Option<i32> = sqlx::query_scalar(&format!(
                "WITH fenced AS (SELECT job_id FROM jobs WHERE job_id = $1 \
                                   AND (replica IS NULL OR replica = $2)), \
                      {APPEND_EVENTS}, \
                      up AS (UPDATE jobs SET event_bytes = event_bytes + (SELECT added FROM added) \
                             WHERE job_id IN (SELECT job_id FROM fenced) RETURNING 1) \
                 SELECT 1 FROM up"
            ))
            .bind(&job_id)
            .bind(&self.replica)
            .bind(&seqs)
            .bind(&kinds)
            .bind(&data)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed)?;
            Ok(found.is_some())
        })
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page> {
        Box::pin(async move {
            let limit = query.limit.max(1);
            let status = query.status.map(|s| s.as_str());
            let (after_time, after_id) = match &query.cursor {
                Some(Cursor { created_at, job_id }) => {
                    (Some(micros(created_at)), Some(job_id.as_str()))
                }
                None => (None, None),
            };
            // A cursor is one row comparison, so a deep page is an index range, not a scan.
            let rows = sqlx::query(
                "SELECT summary FROM jobs WHERE owner = $1 AND ($2::TEXT IS NULL OR status = $2) \
                 AND ($3::BIGINT IS NULL OR (created_at, job_id) < ($3, $4)) \
                 ORDER BY created_at DESC, job_id DESC LIMIT $5",
            )
            .bind(&query.owner)
            .bind(status)
            .bind(after_time)
            .bind(after_id)
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(failed)?;
            rows::page(&rows, limit)
        })
    }

    fn remove_expired(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let cutoff = self.limits.cutoff(now).map(|t| micros(&t));
            let result = async {
                let mut tx = self.pool.begin().await?;
                // One replica evicts at a time; the others have nothing to add meanwhile.
                let alone: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(EVICT_LOCK)
                    .fetch_one(&mut *tx)
                    .await?;
                if !alone {
                    return Ok(Vec::new());
                }
                let totals = sqlx::query(
                    "SELECT COUNT(*), \
                            COALESCE(SUM(record_bytes + event_bytes + session_bytes), 0)::BIGINT \
                     FROM jobs WHERE finished_at IS NOT NULL",
                )
                .fetch_one(&mut *tx)
                .await?;
                let mut finished = count(totals.try_get(0)?);
                let mut bytes = count(totals.try_get(1)?);
                let mut removed = Vec::new();
                loop {
                    let batch = self
                        .evict_batch(&mut tx, cutoff, &mut finished, &mut bytes)
                        .await?;
                    let done = batch.len() < EVICT_BATCH as usize;
                    removed.extend(batch);
                    if done {
                        break;
                    }
                }
                // Chat sessions: a time to live after their last turn, then the least recently
                // used past the count bound.
                sqlx::query(
                    "DELETE FROM chat_sessions WHERE updated_at <= $1 OR handle NOT IN \
                     (SELECT handle FROM chat_sessions ORDER BY updated_at DESC LIMIT $2)",
                )
                .bind(cutoff.unwrap_or(i64::MIN))
                .bind(i64::try_from(self.limits.max_finished).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(removed)
            }
            .await
            .map_err(failed)?;
            self.recount().await?;
            Ok(result)
        })
    }

    fn claim_webhooks(&self, claim: WebhookClaim) -> StoreFuture<'_, Vec<DueWebhook>> {
        Box::pin(async move {
            // Replicas claiming at once skip each other's rows; the lease keeps a claimed
            // webhook from every other sender until it runs out (a crashed sender's included).
            let rows = sqlx::query(
                "WITH claimed AS (UPDATE webhooks SET lease_until = $1 WHERE id IN ( \
                     SELECT w.id FROM webhooks w JOIN jobs j ON j.job_id = w.job_id \
                     WHERE w.state = 'pending' AND w.next_at <= $2 \
                       AND (w.lease_until IS NULL OR w.lease_until <= $2) \
                       AND ((w.kind = 'started' AND j.status <> 'queued') \
                            OR (w.kind = 'ended' AND j.finished_at IS NOT NULL)) \
                     ORDER BY w.next_at LIMIT $3 FOR UPDATE OF w SKIP LOCKED) \
                   RETURNING id, kind, url, attempts, job_id) \
                 SELECT c.id, c.kind, c.url, c.attempts, j.summary \
                 FROM claimed c JOIN jobs j ON j.job_id = c.job_id",
            )
            .bind(micros(&claim.lease_until))
            .bind(micros(&claim.now))
            .bind(i64::try_from(claim.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(failed)?;
            rows.iter().map(rows::due_webhook).collect()
        })
    }

    fn webhook_tried(&self, id: String, tried: WebhookTried) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let counted = i64::from(tried.attempt.is_some());
            let attempt = tried
                .attempt
                .as_ref()
                .map(|a| format!("[{}]", rows::attempt_json(a)));
            let done = sqlx::query(
                "UPDATE webhooks SET attempts = attempts + $1, \
                     tries = tries || COALESCE($2::jsonb, '[]'::jsonb), \
                     state = $3, next_at = $4, lease_until = NULL \
                 WHERE id = $5",
            )
            .bind(counted)
            .bind(&attempt)
            .bind(tried.state)
            .bind(micros(&tried.next_at))
            .bind(&id)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        // Every write is committed before it answers: nothing is pending. Reads go on working.
        Box::pin(async { Ok(()) })
    }
}

/// A database of its own for each test, on the PostgreSQL of the machine (shared with the
/// integration tests).
#[cfg(test)]
#[path = "../../../tests/common/postgres.rs"]
#[allow(unreachable_pub)]
pub(crate) mod testdb;

#[cfg(test)]
mod tests;
