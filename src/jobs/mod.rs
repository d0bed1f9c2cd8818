//! Jobs: `POST /execute` runs, their records, their events, cancellation, shutdown and restart.
//!
//! A job is one run (see [`crate::run`]) driven by a spawned task, so the HTTP answer (202) does
//! not wait for it. Its record and its events live in a job store (the `JobStore` trait): by
//! default the durable SQLite store (a file in `JOBS_DIR`, so a 202 survives kill -9), the
//! ephemeral memory store, or a PostgreSQL database shared by several replicas; all bounded in
//! age, count and bytes.
//!
//! With PostgreSQL the queue is the database's, not this process's: a submission is a row in the
//! shared queue, and each replica claims what its free slots can start now (see the `replicas` module).
//!
//! [`Jobs`] is the handle the routes and the server hold:
//!
//! - `open` opens the store and [`recover`](Jobs::recover) picks up what an earlier
//!   process left: queued jobs run again in their original order; jobs that were running are
//!   recorded as interrupted, or queued again when their caller allowed more attempts;
//! - [`submit`](Jobs::submit) stores a job as `queued` and starts its task;
//! - [`get`](Jobs::get), `list` and `events` show a caller its
//!   own jobs only (another caller's job is as good as unknown);
//! - `cancel` stops a queued or running job by dropping its run, which frees its
//!   slot, kills its processes and removes its workspace;
//! - [`stop_accepting`](Jobs::stop_accepting), [`drained`](Jobs::drained),
//!   [`abort_all`](Jobs::abort_all) and [`close`](Jobs::close) are the steps of a graceful
//!   shutdown.

#[doc(hidden)]
pub mod bench;
mod events;
mod finish;
mod live;
mod memory;
mod postgres;
mod record;
mod replicas;
mod rows;
mod sqlite;
mod store;
mod task;
mod webhooks;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gateway_layers::admission::{Gauge, Ticket};
use tokio::time::MissedTickBehavior;

use crate::agent::SavedSession;
use crate::config::{Config, StoreConfig};
use crate::policy::Policies;
use crate::run::Runs;

pub(crate) use events::{EventKind, Subscription};
pub(crate) use memory::{MemoryStore, StoreLimits};
pub(crate) use postgres::PgStore;
pub(crate) use record::{is_job_id, new_job_id, timestamp_now};
pub use record::{JobRecord, JobStatus, JobSummary, NewJob};
pub(crate) use sqlite::SqliteStore;
pub(crate) use store::{ChatSession, Cursor, JobStore, ListQuery, Page};
pub use store::{StoreError, StoreErrorKind};

use events::{EventLog, JobEvent};
use live::{LiveSet, NotAccepting, Stop, StopKind};
use postgres::{ClaimCaps, Enqueued, FairAdmit, Fence, Held};
use replicas::Replication;
use store::{LogPosition, Unfinished};
use task::JobTask;

/// Recorded for a job still waiting for a slot when shutdown began (ephemeral store only: a
/// durable store keeps it queued for the next start).
const SHUTDOWN_BEFORE_START: &str = "the gateway shut down before the job started";

/// Recorded for a job stopped by `DELETE /jobs/{id}`.
const CANCELLED: &str = "cancelled: the job was cancelled by its caller";

/// Recorded for a job found running at start: the process that ran it is gone.
const INTERRUPTED: &str =
    "interrupted: the gateway stopped while the job was running (killed, or shut down past its grace period)";

/// Recorded for a job whose replica's lease ran out while it ran.
const REPLICA_LOST: &str =
    "interrupted: the replica running the job stopped answering (its lease ran out)";

/// How long a submission waits for a shared database that does not answer (one that refuses
/// connections answers sooner): past it, the caller gets a 503 rather than a hung request.
const ENQUEUE_WAIT: Duration = Duration::from_secs(10);

/// How long `DELETE /jobs/{id}` waits for the replica running the job to record it stopped.
const REMOTE_CANCEL_WAIT: Duration = Duration::from_secs(10);

/// The job registry and the tasks that run jobs. Cheap to clone: an `Arc` inside.
///
/// Dropping the last clone (once every job task has ended) stops the eviction timer.
#[derive(Clone)]
pub struct Jobs {
    shared: Arc<Shared>,
}

/// What the handle and every job task share.
struct Shared {
    /// Where records and events live.
    store: Arc<dyn JobStore>,
    /// Queued and running jobs, and whether new ones are accepted.
    live: Arc<LiveSet>,
    /// The stack every run goes down.
    runs: Runs,
    /// Where a job submitted without an admission ticket takes its place in the queue, so every
    /// job is seen moving from queued to running the same way.
    gauge: Gauge,
    /// Bytes kept of each of a record's `output`, `result` and `stderr`, and of its event log.
    output_cap: usize,
    /// Bytes of session (transcript and workspace changes) kept per job; 0 keeps none.
    session_cap: usize,
    /// This replica's name, recorded on the jobs it runs.
    replica: String,
    /// With a PostgreSQL store: the shared queue, the notices and the lease.
    replication: Option<Replication>,
    /// Sends the jobs' webhooks; `None` when `WEBHOOK_ALLOW` allows none.
    webhooks: Option<webhooks::Webhooks>,
    /// Per-key policy: a job picked up again takes its place under its owner's weight and limits.
    policies: Arc<Policies>,
}

/// Why a job was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    /// The gateway is shutting down.
    ShuttingDown,
    /// The service's shared queue holds `MAX_QUEUE_DEPTH` jobs already.
    QueueFull,
    /// The caller's key already has its `max_queued` jobs waiting in the shared queue.
    KeyQueueFull {
        /// The key's `max_queued`.
        max_queued: usize,
    },
    /// The store could not record it; nothing of it was kept.
    Store(StoreError),
}

/// Why a job could not be cancelled.
#[derive(Debug)]
pub(crate) enum CancelError {
    /// No such job for this caller.
    NotFound,
    /// The job had already ended.
    Finished,
    /// The store could not be read.
    Store(StoreError),
}

/// Why a job cannot be continued (`continue_from`).
#[derive(Debug)]
pub(crate) enum ContinueError {
    /// No such job for this caller (unknown, another caller's, or forgotten).
    NotFound,
    /// The job exists but its session cannot be resumed; says why.
    NotResumable(String),
    /// The store could not be read.
    Store(StoreError),
}

/// What [`Jobs::recover`] found an earlier process had left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs queued again, in their original order (those left queued, then any that were
    /// running and had attempts left, in the order they were accepted).
    pub queued: usize,
    /// Jobs that were running and had attempts left: among `queued`.
    pub requeued: usize,
    /// Jobs that were running, recorded `error` with `interrupted: true`.
    pub interrupted: usize,
}

impl Jobs {
    /// Opens the store `config` names (`DATABASE_URL`), bounded by `JOB_TTL_SECONDS`,
    /// `MAX_FINISHED_JOBS` and `MAX_STORED_BYTES`, with `MAX_OUTPUT_BYTES` per job. Must be
    /// called inside a tokio runtime: it spawns the eviction timer. Call
    /// [`recover`](Self::recover) next, before serving.
    pub(crate) async fn open(
        config: &Config,
        runs: Runs,
        gauge: Gauge,
    ) -> Result<Self, StoreError> {
        let limits = StoreLimits {
            ttl: config.job_ttl,
            max_finished: config.max_finished_jobs,
            max_finished_bytes: config.max_stored_bytes,
        };
        let (store, replication): (Arc<dyn JobStore>, _) = match &config.store {
            StoreConfig::Memory => (Arc::new(MemoryStore::new(limits)), None),
            StoreConfig::Sqlite { path, sync } => (
                Arc::new(SqliteStore::open(path, *sync, limits).await?),
                None,
            ),
            StoreConfig::Postgres { url } => {
                let pg = Arc::new(PgStore::open(&url.0, &config.replica_id, limits).await?);
                let replication =
                    Replication::new(pg.clone(), config.replica_lease, config.max_queue_depth);
                (pg, Some(replication))
            }
        };
        let webhooks = if config.webhooks.allow.is_empty() {
            None
        } else {
            let sender = webhooks::Webhooks::new(Arc::clone(&store), config.webhooks.clone())
                .map_err(StoreError::unavailable)?;
            sender.start();
            Some(sender)
        };
        let jobs = Self::assemble(
            store,
            (replication, webhooks),
            runs,
            gauge,
            (
                config.max_output_bytes,
                config.max_session_bytes,
                config.replica_id.clone(),
            ),
            eviction_period(config.job_ttl),
            config.policies.clone(),
        );
        Ok(jobs)
    }

    /// Shares `quota`'s upstream pause with the other replicas, when the store is shared
    /// (PostgreSQL); nothing otherwise.
    pub(crate) fn share_pause(&self, quota: &crate::quota::Quota) {
        if let Some(replication) = &self.shared.replication {
            replication.share_pause(quota);
        }
    }

    /// `owner`'s unfinished jobs on other replicas and in the shared queue, as (queued,
    /// running); `None` when the store is not shared (this gateway's gauge holds them all).
    pub(crate) async fn held_elsewhere(&self, owner: &str) -> Option<(usize, usize)> {
        let replication = self.shared.replication.as_ref()?;
        match replication.pg.held_elsewhere(owner).await {
            Ok(held) => Some(held),
            Err(error) => {
                tracing::warn!(owner, %error, "could not count a key's jobs on the other replicas");
                None
            }
        }
    }

    /// The store as the ledger budgets are charged to.
    pub(crate) fn ledger(&self) -> Arc<dyn crate::quota::Ledger> {
        Arc::new(StoreLedger(Arc::clone(&self.shared.store)))
    }

    /// Checks a job's `callback_url` (or the default one) against `WEBHOOK_ALLOW`; says why
    /// it is refused.
    pub(crate) async fn check_callback(&self, url: &str) -> Result<(), String> {
        match &self.shared.webhooks {
            Some(webhooks) => webhooks.check_url(url).await,
            None => Err("webhooks are off: WEBHOOK_ALLOW lists no destination".into()),
        }
    }

    /// `WEBHOOK_URL`, for jobs that give no `callback_url`.
    pub(crate) fn default_callback(&self) -> Option<String> {
        self.shared
            .webhooks
            .as_ref()
            .and_then(|w| w.default_url().map(str::to_owned))
    }

    /// The job's webhooks with their tries, for its record.
    pub(crate) async fn webhooks_of(
        &self,
        job_id: &str,
    ) -> Result<Vec<record::WebhookView>, StoreError> {
        self.shared.store.webhooks(job_id.to_owned()).await
    }

    /// A registry over any store. `output_cap` bounds each of a record's `output`, `result` and
    /// `stderr` and its event log; `session_cap` the session kept of each job for a later one to
    /// continue (0 keeps none); `evict_every` is the period of the eviction timer. Must be called
    /// inside a tokio runtime.
    #[cfg(test)]
    pub(crate) fn with_store(
        store: Arc<dyn JobStore>,
        runs: Runs,
        gauge: Gauge,
        output_cap: usize,
        session_cap: usize,
        evict_every: Duration,
    ) -> Self {
        let this_host = (output_cap, session_cap, String::new());
        let policies = Arc::new(Policies::fixed(crate::policy::PolicyBook::default()));
        Self::assemble(
            store,
            (None, None),
            runs,
            gauge,
            this_host,
            evict_every,
            policies,
        )
    }

    /// [`with_store`](Self::with_store), with the replica's name beside the output and session caps, and
    /// the replication of a shared store.
    fn assemble(
        store: Arc<dyn JobStore>,
        (replication, webhooks): (Option<Replication>, Option<webhooks::Webhooks>),
        runs: Runs,
        gauge: Gauge,
        (output_cap, session_cap, replica): (usize, usize, String),
        evict_every: Duration,
        policies: Arc<Policies>,
    ) -> Self {
        let shared = Arc::new(Shared {
            store,
            live: Arc::new(LiveSet::default()),
            runs,
            gauge,
            output_cap,
            session_cap,
            replica,
            replication,
            webhooks,
            policies,
        });
        spawn_evictor(Arc::downgrade(&shared), evict_every);
        Self { shared }
    }

    /// Checks that `owner`'s job `job_id` can be continued by a new job: it exists, has ended and
    /// left its session.
    pub(crate) async fn continuable(&self, owner: &str, job_id: &str) -> Result<(), ContinueError> {
        let record = self
            .get(owner, job_id)
            .await
            .map_err(ContinueError::Store)?
            .ok_or(ContinueError::NotFound)?;
        if !record.status.is_terminal() {
            return Err(ContinueError::NotResumable(format!(
                "job {job_id} has not finished yet ({}); continue it once it has",
                record.status
            )));
        }
        if self.shared.session_cap == 0 {
            return Err(ContinueError::NotResumable(
                "sessions are not kept on this gateway (MAX_SESSION_BYTES is 0)".into(),
            ));
        }
        match self.shared.store.session(job_id.to_owned()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ContinueError::NotResumable(format!(
                "job {job_id} left no session to resume: its agent never reported one, or the session was larger than MAX_SESSION_BYTES"
            ))),
            Err(error) => Err(ContinueError::Store(error)),
        }
    }

    /// Bytes of session kept per job or chat turn; 0 keeps none.
    pub(crate) fn session_cap(&self) -> usize {
        self.shared.session_cap
    }

    /// The session of `owner`'s chat conversation `handle`.
    pub(crate) async fn chat_session(
        &self,
        owner: &str,
        handle: &str,
    ) -> Result<SavedSession, ContinueError> {
        if self.shared.session_cap == 0 {
            return Err(ContinueError::NotResumable(
                "sessions are not kept on this gateway (MAX_SESSION_BYTES is 0)".into(),
            ));
        }
        if !is_job_id(handle) {
            return Err(ContinueError::NotFound);
        }
        let chat = self
            .shared
            .store
            .chat_session(handle.to_owned())
            .await
            .map_err(ContinueError::Store)?
            .filter(|chat| chat.owner == owner)
            .ok_or(ContinueError::NotFound)?;
        SavedSession::from_bytes(&chat.session).map_err(ContinueError::NotResumable)
    }

    /// Keeps `session` as the chat conversation `handle` of `owner`, for its next request; a
    /// failure is logged (the next request then hears the session is unknown).
    pub(crate) async fn keep_chat_session(&self, owner: &str, handle: &str, session: SavedSession) {
        let chat = ChatSession {
            handle: handle.to_owned(),
            owner: owner.to_owned(),
            updated_at: timestamp_now(),
            session: session.to_bytes(),
        };
        match self.shared.store.keep_chat_session(chat).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("chat session not kept: the store keeps none"),
            Err(error) => tracing::warn!(%error, "chat session not kept"),
        }
    }

    /// Picks up what an earlier process left in the store: jobs found running are recorded as
    /// interrupted (or queued again when their caller allowed another attempt), and every queued
    /// job starts again, in the order it was accepted, before any new one. Their workspaces are
    /// swept at start; jobs this process already runs are left alone, so a second call is
    /// harmless.
    ///
    /// With a shared store, only the jobs an earlier process of this replica (the same
    /// `REPLICA_ID`) held are picked up (queued jobs belong to no replica: they stay in the
    /// shared queue); then this replica takes its lease and starts claiming.
    pub async fn recover(&self) -> Result<Recovered, StoreError> {
        let shared = &self.shared;
        let mut recovered = Recovered::default();
        let now = timestamp_now();
        if let Some(replication) = &shared.replication {
            for held in replication.pg.orphans(Some(&shared.replica)).await? {
                if shared.live.stopper(&held.job.record.job_id).is_none() {
                    shared
                        .settle(held, INTERRUPTED, now, &mut recovered)
                        .await?;
                }
            }
            replication.pg.renew_lease(replication.lease).await?;
            replicas::spawn(shared);
        } else {
            for job in shared.store.unfinished().await? {
                if shared.live.stopper(&job.record.job_id).is_some() {
                    // This process runs it: nothing to pick up (a second call finds only these).
                    continue;
                }
                let held = Held {
                    holder: job.record.replica.clone(),
                    job,
                };
                let Some((record, log)) = shared
                    .settle(held, INTERRUPTED, now, &mut recovered)
                    .await?
                else {
                    continue;
                };
                // Its owner's key and weight, so recovered jobs go on in fair order, each key's
                // in the order they were accepted.
                let ticket = shared.ticket_for(&record.owner);
                if self.start(record, log, ticket).await.is_err() {
                    break;
                }
                recovered.queued += 1;
            }
        }
        if recovered != Recovered::default() {
            tracing::info!(
                queued = recovered.queued,
                requeued = recovered.requeued,
                interrupted = recovered.interrupted,
                "picked up the jobs an earlier process left"
            );
        }
        shared.evict(now).await;
        Ok(recovered)
    }

    /// Settles the jobs of replicas whose lease ran out (see [`replicas`]).
    async fn settle_dead(shared: &Arc<Shared>) {
        let Some(replication) = &shared.replication else {
            return;
        };
        let result = async {
            for dead in replication.pg.expire_leases().await? {
                tracing::warn!(replica = %dead, "a replica's lease ran out: settling the jobs it held");
            }
            let mut settled = Recovered::default();
            for held in replication.pg.orphans(None).await? {
                shared
                    .settle(held, REPLICA_LOST, timestamp_now(), &mut settled)
                    .await?;
            }
            if settled != Recovered::default() {
                tracing::warn!(
                    requeued = settled.requeued,
                    interrupted = settled.interrupted,
                    "settled the jobs of replicas that stopped answering"
                );
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not settle the jobs of dead replicas; will retry");
        }
    }

    /// Starts a job this replica claimed from the shared queue; gives it back to the queue if
    /// the replica is shutting down.
    async fn start_claimed(shared: &Arc<Shared>, claimed: Unfinished) {
        let Unfinished { mut record, log } = claimed;
        record.replica = Some(shared.replica.clone());
        let log = EventLog::new(shared.output_cap, log);
        let ticket = shared.ticket_for(&record.owner);
        let this = Jobs {
            shared: shared.clone(),
        };
        if this.start(record.clone(), log, ticket).await.is_err() {
            record.replica = None;
            let _ = shared
                .write_held(&record, Vec::new(), Some(shared.replica.clone()))
                .await;
        }
    }

    /// Registers a stored, queued job as live and starts its task; returns once its run has
    /// taken its place in the queue.
    async fn start(
        &self,
        record: JobRecord,
        log: EventLog,
        ticket: Ticket,
    ) -> Result<(), NotAccepting> {
        let shared = &self.shared;
        let (stops, guard) = shared.live.register(&record.job_id, log.watch())?;
        let in_queue = JobTask::new(shared.clone(), record, ticket, log, stops).spawn(guard);
        // Errs only if the task ended without taking a place, which is just as final.
        let _ = in_queue.await;
        Ok(())
    }

    /// Stores `job` as queued and starts running it. `ticket` is its queue slot from admission;
    /// it goes down the stack with the run, so the job holds the slot it was admitted with.
    /// Without one, the job takes a place in the queue beyond its depth (an embedder's choice).
    ///
    /// When this answers `Ok`, the job is stored (durably, with a durable store) and waits in the
    /// queue behind every job accepted before it. The work is done in a task of its own, so a
    /// caller that goes away half-way cannot leave a job stored but never started.
    pub async fn submit(
        &self,
        job: NewJob,
        ticket: Option<Ticket>,
    ) -> Result<JobRecord, SubmitError> {
        let this = self.clone();
        let submitting = tokio::spawn(async move { this.submit_now(job, ticket).await });
        match submitting.await {
            Ok(result) => result,
            Err(error) => Err(SubmitError::Store(StoreError::unavailable(format!(
                "the job could not be recorded: {error}"
            )))),
        }
    }

    async fn submit_now(
        &self,
        job: NewJob,
        ticket: Option<Ticket>,
    ) -> Result<JobRecord, SubmitError> {
        let shared = &self.shared;
        let record = JobRecord::queued(new_job_id(), job, timestamp_now());
        let mut log = EventLog::new(shared.output_cap, LogPosition::default());
        let mut events = Vec::new();
        log.record(
            EventKind::Status,
            record.status_event().to_string(),
            &mut events,
        );
        if let Some(replication) = &shared.replication {
            // Into the shared queue: whichever replica has a free slot claims it. The ticket
            // (this replica's slot) is not the job's: it may run elsewhere.
            if !shared.live.is_accepting() {
                return Err(SubmitError::ShuttingDown);
            }
            let enqueued = tokio::time::timeout(
                ENQUEUE_WAIT,
                replication.pg.enqueue(
                    &record,
                    &events,
                    replication.max_queued,
                    shared.fair(&record.owner),
                ),
            )
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::unavailable(
                    "the PostgreSQL database did not answer within 10 s",
                ))
            });
            return match enqueued {
                Ok(Enqueued::Queued) => {
                    tracing::info!(job_id = %record.job_id, agent = %record.agent, owner = %record.owner, "job queued");
                    Ok(record)
                }
                Ok(Enqueued::Full) => Err(SubmitError::QueueFull),
                Ok(Enqueued::KeyFull { max_queued }) => {
                    Err(SubmitError::KeyQueueFull { max_queued })
                }
                Err(error) => Err(SubmitError::Store(error)),
            };
        }
        // Registered before it is stored, so a shutdown cannot slip between the two and leave a
        // stored job that nothing runs.
        let (stops, guard) = shared
            .live
            .register(&record.job_id, log.watch())
            .map_err(|NotAccepting| SubmitError::ShuttingDown)?;
        shared
            .store
            .insert(record.clone(), events)
            .await
            .map_err(SubmitError::Store)?;
        log.stored();
        tracing::info!(job_id = %record.job_id, agent = %record.agent, owner = %record.owner, "job queued");
        let ticket = ticket.unwrap_or_else(|| shared.ticket_for(&record.owner));
        let in_queue =
            JobTask::new(shared.clone(), record.clone(), ticket, log, stops).spawn(guard);
        let _ = in_queue.await;
        Ok(record)
    }

    /// The job, if it exists and belongs to `owner`.
    pub async fn get(&self, owner: &str, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        if !is_job_id(job_id) {
            return Ok(None);
        }
        let record = self.shared.store.get(job_id.to_owned()).await?;
        Ok(record.filter(|r| r.owner == owner))
    }

    /// A page of the owner's jobs, newest first.
    pub(crate) async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.shared.store.list(query).await
    }

    /// Stops a queued or running job of `owner` and answers its final record (status `error`,
    /// saying it was cancelled). Returns once the run is gone: its processes killed, its slot free.
    pub(crate) async fn cancel(&self, owner: &str, job_id: &str) -> Result<JobRecord, CancelError> {
        let record = self
            .get(owner, job_id)
            .await
            .map_err(CancelError::Store)?
            .ok_or(CancelError::NotFound)?;
        if record.status.is_terminal() {
            return Err(CancelError::Finished);
        }
        let Some(stopper) = self.shared.live.stopper(job_id) else {
            if self.shared.replication.is_some() {
                return self.cancel_elsewhere(record).await;
            }
            // It ended between the read and now.
            return Err(CancelError::Finished);
        };
        let (stop, acked) = Stop::acknowledged(StopKind::Cancel, CANCELLED);
        if stopper.send(stop).is_err() {
            return Err(CancelError::Finished);
        }
        // Unanswered means the job ended by itself before it read the request.
        acked.await.map_err(|_| CancelError::Finished)
    }

    /// Cancels a job that does not run here: one still in the shared queue is recorded
    /// cancelled at once; one another replica holds is stopped by that replica, asked through the
    /// store, and its final record answered once stored.
    async fn cancel_elsewhere(&self, record: JobRecord) -> Result<JobRecord, CancelError> {
        let shared = &self.shared;
        let Some(replication) = &shared.replication else {
            return Err(CancelError::Finished);
        };
        let job_id = record.job_id.clone();
        let held = replication
            .pg
            .unfinished_one(&job_id)
            .await
            .map_err(CancelError::Store)?
            .ok_or(CancelError::Finished)?;
        if held.holder.is_none() {
            let Unfinished { mut record, log } = held.job;
            let mut log = EventLog::new(shared.output_cap, log);
            let mut events = Vec::new();
            finish::stopped(&mut record, CANCELLED, timestamp_now());
            log.record_end(&record, &mut events);
            let fence = Fence {
                replica: None,
                unfinished: true,
            };
            if replication
                .pg
                .update_fenced(&record, &events, &fence)
                .await
                .map_err(CancelError::Store)?
            {
                tracing::info!(%job_id, "queued job cancelled");
                return Ok(record);
            }
            // A replica claimed it meanwhile: ask that one.
        }
        if !replication
            .pg
            .request_cancel(&job_id)
            .await
            .map_err(CancelError::Store)?
        {
            return Err(CancelError::Finished);
        }
        let deadline = tokio::time::Instant::now() + REMOTE_CANCEL_WAIT;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = shared
                .store
                .get(job_id.clone())
                .await
                .map_err(CancelError::Store)?
                .ok_or(CancelError::NotFound)?;
            if now.status.is_terminal() {
                return Ok(now);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CancelError::Store(StoreError::unavailable(
                    "the replica running the job did not record it stopped in time; it will stop it, ask again to see its final record",
                )));
            }
        }
    }

    /// The job's events from `seq` `from` (0 for all): the stored log, followed live while the
    /// job runs here; `None` unless the job exists and belongs to `owner`.
    pub(crate) async fn events(
        &self,
        owner: &str,
        job_id: &str,
        from: u64,
    ) -> Result<Option<Subscription>, StoreError> {
        let Some(record) = self.get(owner, job_id).await? else {
            return Ok(None);
        };
        let shared = &self.shared;
        // Run elsewhere (or still in the shared queue): woken by the store's notices.
        let wake = shared.live.watch(job_id).or_else(|| {
            let replication = shared.replication.as_ref()?;
            (!record.status.is_terminal()).then(|| replication.follow(job_id))
        });
        Ok(Some(Subscription::new(
            shared.store.clone(),
            job_id.to_owned(),
            from,
            wake,
        )))
    }

    /// How many jobs the store holds: queued, running, and finished ones not yet forgotten.
    pub(crate) fn stored_count(&self) -> usize {
        self.shared.store.len()
    }

    /// How many jobs are queued or running in this process.
    pub fn live_count(&self) -> usize {
        self.shared.live.count()
    }

    /// Stops accepting jobs (`POST /execute` answers 503 from now on) and stops the jobs still
    /// waiting for a slot: starting work that the end of the grace period would kill only spends
    /// money. A durable store keeps them queued, to run at the next start; the ephemeral store
    /// records them as `error` because the gateway shut down. Running jobs carry on.
    pub fn stop_accepting(&self) {
        for stopper in self.shared.live.close() {
            let _ = stopper.send(Stop::unacknowledged(StopKind::Drain, SHUTDOWN_BEFORE_START));
        }
    }

    /// Resolves when no job is queued or running.
    pub async fn drained(&self) {
        self.shared.live.drained().await;
    }

    /// Interrupts every live job with `reason` and returns once every one has recorded it: a
    /// running job ends `error` with `interrupted: true`, or, in a durable store with attempts
    /// left, is stored as queued again for the next start. Also stops accepting jobs.
    pub async fn abort_all(&self, reason: &str) {
        let mut acks = Vec::new();
        for stopper in self.shared.live.close() {
            let (stop, acked) = Stop::acknowledged(StopKind::Interrupt, reason);
            if stopper.send(stop).is_ok() {
                acks.push(acked);
            }
        }
        for acked in acks {
            let _ = acked.await;
        }
        self.drained().await;
    }

    /// The store's state for `/health`: whether it answers, and the jobs of the whole service
    /// waiting in a shared queue (0 with a store of this process alone, whose queue the gauge
    /// counts).
    pub(crate) async fn store_health(&self) -> (bool, usize) {
        let Some(replication) = &self.shared.replication else {
            return (true, 0);
        };
        match tokio::time::timeout(Duration::from_secs(2), replication.pg.queued()).await {
            Ok(Ok(queued)) => (true, queued),
            _ => (false, 0),
        }
    }

    /// This replica's name (`REPLICA_ID`).
    pub fn replica(&self) -> &str {
        &self.shared.replica
    }

    /// Releases the store once nothing writes to it any more: the last step of a shutdown.
    pub async fn close(&self) {
        if let Some(webhooks) = &self.shared.webhooks {
            webhooks.stop();
        }
        if let Some(replication) = &self.shared.replication {
            replication.leave().await;
        }
        if let Err(error) = self.shared.store.close().await {
            tracing::warn!(%error, "could not close the job store");
        }
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("live", &self.shared.live.count())
            .field("stored", &self.shared.store.len())
            .field("durable", &self.shared.store.is_durable())
            .finish()
    }
}

impl Shared {
    /// How a job of `owner` enters the shared queue under the policy in force.
    fn fair(&self, owner: &str) -> FairAdmit {
        let policy = self.policies.current();
        let key = policy.for_key(owner);
        FairAdmit {
            weight: key.limits.weight,
            max_queued: key.limits.max_queued,
        }
    }

    /// Every owner's `max_concurrent` under the policy in force, for a claim.
    fn claim_caps(&self) -> ClaimCaps {
        let policy = self.policies.current();
        let cap =
            |max: Option<usize>| max.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let (owners, caps) = policy
            .named()
            .map(|(name, key)| (name.to_owned(), cap(key.limits.max_concurrent)))
            .unzip();
        ClaimCaps {
            owners,
            caps,
            default: cap(policy.defaults().limits.max_concurrent),
        }
    }
    /// A place in the local queue for a job of `owner` accepted earlier, beyond the depth: under
    /// the owner's weight and `max_concurrent` in force now.
    fn ticket_for(&self, owner: &str) -> Ticket {
        let policy = self.policies.current();
        self.gauge
            .admit_unchecked_for(Arc::from(owner), policy.for_key(owner).limits)
    }

    /// The session job `job_id` left, for a job that continues it; `Err` says why there is none.
    async fn session_of(&self, job_id: &str) -> Result<SavedSession, String> {
        match self.store.session(job_id.to_owned()).await {
            Ok(Some(bytes)) => SavedSession::from_bytes(&bytes),
            Ok(None) => Err(format!(
                "the session of job {job_id} is no longer kept (the job was forgotten or left none)"
            )),
            Err(error) => Err(format!(
                "the session of job {job_id} could not be read: {error}"
            )),
        }
    }

    /// Stores `record` with `events`, written over a row `holder` holds: with a shared store, a
    /// write only lands while the row still names that holder (see [`Fence`]); `false` when it
    /// did not land.
    async fn write_held(
        &self,
        record: &JobRecord,
        events: Vec<JobEvent>,
        holder: Option<String>,
    ) -> Result<bool, StoreError> {
        match &self.replication {
            Some(replication) => {
                let fence = Fence {
                    replica: holder,
                    unfinished: true,
                };
                replication.pg.update_fenced(record, &events, &fence).await
            }
            None => self.store.update(record.clone(), events).await,
        }
    }

    /// Settles a job whose holder is gone (an earlier process, a dead replica) as the restart
    /// semantics say: a running job is queued again when it has attempts left, else recorded
    /// `error` with `interrupted: true` and `reason`. Answers the job to start here when this
    /// process keeps its own queue; with a shared queue a job to run goes back to that queue.
    async fn settle(
        &self,
        held: Held,
        reason: &str,
        now: DateTime<Utc>,
        recovered: &mut Recovered,
    ) -> Result<Option<(JobRecord, EventLog)>, StoreError> {
        let Held {
            holder,
            job: Unfinished { mut record, log },
        } = held;
        let mut log = EventLog::new(self.output_cap, log);
        let mut events = Vec::new();
        if record.status == JobStatus::Running {
            if record.attempts < record.max_attempts {
                let event = finish::requeued(&mut record, reason, now);
                log.record(EventKind::Status, event.to_string(), &mut events);
                recovered.requeued += 1;
            } else {
                finish::interrupted(&mut record, reason, now);
                log.record_end(&record, &mut events);
                recovered.interrupted += 1;
            }
        }
        let shared_queue = self.replication.is_some();
        if shared_queue && !record.status.is_terminal() {
            record.replica = None;
            recovered.queued += 1;
        }
        let write = !events.is_empty() || shared_queue;
        if write && !self.write_held(&record, events, holder).await? {
            // Someone else settled it first.
            return Ok(None);
        }
        if record.status.is_terminal() {
            tracing::warn!(job_id = %record.job_id, "job interrupted: its run stopped with the process running it");
            return Ok(None);
        }
        if record.attempts > 0 && record.status == JobStatus::Queued {
            tracing::warn!(job_id = %record.job_id, attempts = record.attempts, "job queued again: its run stopped with the process running it");
        }
        Ok((!shared_queue).then_some((record, log)))
    }

    /// Has the store forget what is past its bounds at `now`. Returns how many jobs were
    /// forgotten; a store error is logged, and the next run retries.
    async fn evict(&self, now: DateTime<Utc>) -> usize {
        match self.store.remove_expired(now).await {
            Ok(removed) => {
                if !removed.is_empty() {
                    tracing::debug!(count = removed.len(), "forgot finished jobs");
                }
                removed.len()
            }
            Err(error) => {
                tracing::warn!(%error, "could not forget expired jobs");
                0
            }
        }
    }
}

/// How often to forget expired jobs for a time to live of `ttl`: often enough that a job
/// outlives its TTL by a tenth at most, never more than once a second nor less than once a minute.
fn eviction_period(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Forgets expired jobs on a timer even when none finishes (the replaced service only evicted
/// when a job finished, so an idle service kept its last hour of output for ever). Holds the
/// registry weakly, and ends once it is gone.
fn spawn_evictor(shared: Weak<Shared>, period: Duration) {
    tokio::spawn(async move {
        // Nothing can have expired at the start: the first tick is one period away.
        let first = tokio::time::Instant::now() + period;
        let mut ticks = tokio::time::interval_at(first, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match shared.upgrade() {
                Some(shared) => {
                    shared.evict(timestamp_now()).await;
                }
                None => return,
            }
        }
    });
}

/// The job store as the [`Ledger`](crate::quota::Ledger) of key spend.
struct StoreLedger(Arc<dyn JobStore>);

impl crate::quota::Ledger for StoreLedger {
    fn charge(
        &self,
        owner: String,
        window: store::SpendWindow,
        spend: crate::policy::Spend,
    ) -> crate::quota::LedgerFuture<'_, ()> {
        Box::pin(async move {
            self.0
                .charge(owner, window, spend)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn spent(
        &self,
        owner: String,
        window: store::SpendWindow,
    ) -> crate::quota::LedgerFuture<'_, crate::policy::Spend> {
        Box::pin(async move { self.0.spent(owner, window).await.map_err(|e| e.to_string()) })
    }
}
