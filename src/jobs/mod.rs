//! Jobs: `POST /execute` runs, their records, their live events, cancellation and shutdown.
//!
//! A job is one run (see [`crate::run`]) driven by a spawned task, so the HTTP answer (202) does
//! not wait for it. Its record lives in a [`JobStore`] (the embedded [`MemoryStore`] by default,
//! bounded in age, count and bytes); its progress goes to an append-only [`EventLog`] that any
//! number of subscribers replay and follow.
//!
//! [`Jobs`] is the handle the routes and the server hold:
//!
//! - [`submit`](Jobs::submit) records a job as `queued` and starts its task;
//! - [`get`](Jobs::get), [`list`](Jobs::list) and [`events`](Jobs::events) show a caller its
//!   own jobs only (another caller's job is as good as unknown);
//! - [`cancel`](Jobs::cancel) stops a queued or running job by dropping its run, which frees its
//!   slot, kills its processes and removes its workspace;
//! - [`stop_accepting`](Jobs::stop_accepting), [`drained`](Jobs::drained) and
//!   [`abort_all`](Jobs::abort_all) are the three steps of a graceful shutdown.

mod events;
mod finish;
mod live;
mod memory;
mod record;
mod store;
mod task;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gateway_layers::admission::{Gauge, Ticket};
use tokio::time::MissedTickBehavior;

use crate::config::Config;
use crate::run::Runs;

pub(crate) use events::{EventKind, EventLog, Subscription};
pub(crate) use memory::{MemoryStore, StoreLimits};
pub(crate) use record::{is_job_id, new_job_id, timestamp_now};
pub use record::{JobRecord, JobStatus, JobSummary, NewJob};
pub(crate) use store::{Cursor, JobStore, ListQuery, Page, StoreError};

use live::{LiveSet, NotAccepting, Stop};
use task::JobTask;

/// Recorded for a job still waiting for a slot when shutdown began.
const SHUTDOWN_BEFORE_START: &str = "the gateway shut down before the job started";

/// Recorded for a job stopped by `DELETE /jobs/{id}`.
const CANCELLED: &str = "cancelled: the job was cancelled by its caller";

/// The job registry and the tasks that run jobs. Cheap to clone: an `Arc` inside.
///
/// Dropping the last clone (once every job task has ended) stops the eviction timer.
#[derive(Clone)]
pub struct Jobs {
    shared: Arc<Shared>,
}

/// What the handle and every job task share.
struct Shared {
    /// Where records live.
    store: Arc<dyn JobStore>,
    /// The event log of every job the store still holds that was run by this process.
    logs: Mutex<HashMap<String, Arc<EventLog>>>,
    /// Queued and running jobs, and whether new ones are accepted.
    live: Arc<LiveSet>,
    /// The stack every run goes down.
    runs: Runs,
    /// Where a job submitted without an admission ticket takes its place in the queue, so every
    /// job is seen moving from queued to running the same way.
    gauge: Gauge,
    /// Bytes kept of each of a record's `output`, `result` and `stderr`, and of its event log.
    output_cap: usize,
}

/// Why a job was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    /// The gateway is shutting down.
    ShuttingDown,
    /// The store could not record it.
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

/// What `GET /jobs/{id}/events` streams: the log when this process ran the job, else the record
/// alone.
#[derive(Debug)]
pub(crate) struct JobEvents {
    /// The record when the subscription began.
    pub(crate) record: JobRecord,
    /// The live log, from the position asked for; `None` when this process has no log for the job
    /// (a store shared with other processes).
    pub(crate) subscription: Option<Subscription>,
}

impl Jobs {
    /// A registry over an in-memory store bounded by `config` (`JOB_TTL_SECONDS`,
    /// `MAX_FINISHED_JOBS`, `MAX_STORED_BYTES`, `MAX_OUTPUT_BYTES`). Must be called inside a tokio
    /// runtime: it spawns the eviction timer.
    pub(crate) fn new(config: &Config, runs: Runs, gauge: Gauge) -> Self {
        let store = Arc::new(MemoryStore::new(StoreLimits {
            ttl: config.job_ttl,
            max_finished: config.max_finished_jobs,
            max_finished_bytes: config.max_stored_bytes,
        }));
        Self::with_store(
            store,
            runs,
            gauge,
            config.max_output_bytes,
            eviction_period(config.job_ttl),
        )
    }

    /// A registry over any store. `output_cap` bounds each of a record's `output`, `result` and
    /// `stderr` and its event log; `evict_every` is the period of the eviction timer. Must be
    /// called inside a tokio runtime.
    pub(crate) fn with_store(
        store: Arc<dyn JobStore>,
        runs: Runs,
        gauge: Gauge,
        output_cap: usize,
        evict_every: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            store,
            logs: Mutex::new(HashMap::new()),
            live: Arc::new(LiveSet::default()),
            runs,
            gauge,
            output_cap,
        });
        spawn_evictor(Arc::downgrade(&shared), evict_every);
        Self { shared }
    }

    /// Records `job` as queued and starts running it. `ticket` is its queue slot from admission;
    /// it goes down the stack with the run, so the job holds the slot it was admitted with.
    /// Without one, the job takes a place in the queue beyond its depth (an embedder's choice).
    pub async fn submit(
        &self,
        job: NewJob,
        ticket: Option<Ticket>,
    ) -> Result<JobRecord, SubmitError> {
        let shared = &self.shared;
        let record = JobRecord::queued(new_job_id(), job, timestamp_now());
        let (stops, guard) = shared
            .live
            .register(&record.job_id)
            .map_err(|NotAccepting| SubmitError::ShuttingDown)?;
        shared
            .store
            .insert(record.clone())
            .await
            .map_err(SubmitError::Store)?;
        let log = Arc::new(EventLog::new(shared.output_cap));
        shared.add_log(&record.job_id, log.clone());
        tracing::info!(job_id = %record.job_id, agent = %record.agent, owner = %record.owner, "job queued");
        let ticket = ticket.unwrap_or_else(|| shared.gauge.admit_unchecked());
        JobTask::new(shared.clone(), record.clone(), ticket, log, stops).spawn(guard);
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
            // It ended between the read and now.
            return Err(CancelError::Finished);
        };
        let (stop, acked) = Stop::acknowledged(CANCELLED, false);
        if stopper.send(stop).is_err() {
            return Err(CancelError::Finished);
        }
        // Unanswered means the job ended by itself before it read the request.
        acked.await.map_err(|_| CancelError::Finished)
    }

    /// The job's events from position `from` (0 for all), if it exists and belongs to `owner`.
    pub(crate) async fn events(
        &self,
        owner: &str,
        job_id: &str,
        from: usize,
    ) -> Result<Option<JobEvents>, StoreError> {
        let Some(record) = self.get(owner, job_id).await? else {
            return Ok(None);
        };
        let subscription = self.shared.log(job_id).map(|log| log.subscribe(from));
        Ok(Some(JobEvents {
            record,
            subscription,
        }))
    }

    /// How many jobs this gateway holds: queued, running, and finished ones not yet forgotten.
    pub(crate) fn stored_count(&self) -> usize {
        self.shared.logs().len()
    }

    /// How many jobs are queued or running.
    pub fn live_count(&self) -> usize {
        self.shared.live.count()
    }

    /// Stops accepting jobs (`POST /execute` answers 503 from now on) and stops the jobs still
    /// waiting for a slot, recording them as `error` because the gateway shut down: starting work
    /// that the end of the grace period would kill only spends money. Running jobs carry on.
    pub fn stop_accepting(&self) {
        for stopper in self.shared.live.close() {
            let _ = stopper.send(Stop::unacknowledged(SHUTDOWN_BEFORE_START, true));
        }
    }

    /// Resolves when no job is queued or running.
    pub async fn drained(&self) {
        self.shared.live.drained().await;
    }

    /// Stops every live job, recording it as `error` with `reason`, and returns once every one
    /// has recorded its end. Also stops accepting jobs.
    pub async fn abort_all(&self, reason: &str) {
        let mut acks = Vec::new();
        for stopper in self.shared.live.close() {
            let (stop, acked) = Stop::acknowledged(reason, false);
            if stopper.send(stop).is_ok() {
                acks.push(acked);
            }
        }
        for acked in acks {
            let _ = acked.await;
        }
        self.drained().await;
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("live", &self.shared.live.count())
            .field("logs", &self.shared.logs().len())
            .finish()
    }
}

impl Shared {
    /// Keeps `log` as the event log of `job_id`.
    fn add_log(&self, job_id: &str, log: Arc<EventLog>) {
        self.logs().insert(job_id.to_owned(), log);
    }

    /// The event log of `job_id`, if this process ran it and it was not forgotten.
    fn log(&self, job_id: &str) -> Option<Arc<EventLog>> {
        self.logs().get(job_id).cloned()
    }

    /// Has the store forget what is past its bounds at `now`, and drops those jobs' logs.
    /// Returns how many jobs were forgotten; a store error is logged, and the next run retries.
    async fn evict(&self, now: DateTime<Utc>) -> usize {
        match self.store.remove_expired(now).await {
            Ok(removed) => {
                if !removed.is_empty() {
                    let mut logs = self.logs();
                    for job_id in &removed {
                        logs.remove(job_id);
                    }
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

    /// Map operations cannot leave it inconsistent, so a poisoned lock is used as is.
    fn logs(&self) -> MutexGuard<'_, HashMap<String, Arc<EventLog>>> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
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
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate and there is nothing to forget yet.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.evict(timestamp_now()).await;
        }
    });
}
