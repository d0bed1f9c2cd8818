//! Jobs: `POST /execute` runs, their records, their live events, cancellation and shutdown.
//!
//! A job is one run of the agent stack driven by a spawned task, so the HTTP answer
//! (202) does not wait for it. Its record lives in a [`JobStore`] (the embedded [`MemoryStore`]
//! by default, bounded in age, count and bytes); its progress goes to an append-only
//! [`EventLog`] that any number of subscribers replay and follow.
//!
//! [`Jobs`] is the handle the routes and the server hold:
//!
//! - [`submit`](Jobs::submit) records a job as `queued` and starts its task;
//! - [`get`](Jobs::get), [`list`](Jobs::list) and [`events`](Jobs::events) show a caller its
//!   own jobs only (another caller's job is as good as unknown);
//! - [`cancel`](Jobs::cancel) stops a queued or running job by dropping its run, which frees its
//!   slot, kills its process group and removes its workspace;
//! - [`stop_accepting`](Jobs::stop_accepting), [`drained`](Jobs::drained) and
//!   [`abort_all`](Jobs::abort_all) are the three steps of a graceful shutdown.

mod cap;
mod events;
mod evictor;
mod finish;
mod id;
mod live;
mod memory;
mod record;
mod registry;
mod runner;
mod store;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use gateway_layers::admission::Ticket;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::stack::AgentStack;

pub use events::{EventKind, EventLog, JobEvent, Subscription};
pub use id::{is_job_id, new_job_id, JOB_ID_LEN};
pub use memory::{MemoryStore, StoreLimits};
pub use record::{
    format_iso, timestamp_now, JobRecord, JobStatus, JobSummary, JobUsage, NewJob, UnknownStatus,
};
pub use store::{Cursor, InvalidCursor, JobStore, ListQuery, Page, StoreError, StoreFuture};

use evictor::Evictor;
use live::{LiveSet, NotAccepting, Stop};
use registry::Registry;
use runner::{JobContext, Launch};

/// Recorded for a job still waiting for a slot when shutdown began.
const SHUTDOWN_BEFORE_START: &str = "the gateway shut down before the job started";

/// Recorded for a job stopped by `DELETE /jobs/{id}`.
const CANCELLED: &str = "cancelled: the job was cancelled by its caller";

/// The job registry and the tasks that run jobs. Cheap to clone: an `Arc` inside.
///
/// Dropping the last clone stops the eviction timer; jobs still running carry on to their end.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with every job task.
    ctx: Arc<JobContext>,
    /// Queued and running jobs.
    live: Arc<LiveSet>,
    /// Forgets expired jobs on a timer; stops when this is dropped.
    _evictor: Evictor,
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
pub enum CancelError {
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
pub struct JobEvents {
    /// The record when the subscription began.
    pub record: JobRecord,
    /// The live log, from the position asked for; `None` when this process has no log for the job
    /// (a store shared with other processes).
    pub subscription: Option<Subscription>,
}

impl Jobs {
    /// A registry over an in-memory store bounded by `config` (`JOB_TTL_SECONDS`,
    /// `MAX_FINISHED_JOBS`, `MAX_STORED_BYTES`, `MAX_OUTPUT_BYTES`), recording how runs end in `metrics`. Must be
    /// called inside a tokio runtime: it spawns the eviction timer.
    pub fn new(config: Arc<Config>, agents: AgentStack, metrics: Metrics) -> Self {
        let store = Arc::new(MemoryStore::new(StoreLimits {
            ttl: config.job_ttl,
            max_finished: config.max_finished_jobs,
            max_finished_bytes: config.max_stored_bytes,
        }));
        Self::with_store(
            store,
            agents,
            config.max_output_bytes,
            Evictor::period_for(config.job_ttl),
            metrics,
        )
    }

    /// A registry over any store. `output_cap` bounds each of a record's `output`, `result` and
    /// `stderr` and its event log; `evict_every` is the period of the eviction timer; `metrics`
    /// hears how each run ended. Must be called inside a tokio runtime.
    pub fn with_store(
        store: Arc<dyn JobStore>,
        agents: AgentStack,
        output_cap: usize,
        evict_every: std::time::Duration,
        metrics: Metrics,
    ) -> Self {
        let registry = Arc::new(Registry::new(store));
        let evictor = Evictor::spawn(registry.clone(), evict_every);
        Self {
            inner: Arc::new(Inner {
                ctx: Arc::new(JobContext {
                    registry,
                    agents,
                    output_cap,
                    metrics,
                }),
                live: Arc::new(LiveSet::default()),
                _evictor: evictor,
            }),
        }
    }

    /// Records `job` as queued and starts running it. `ticket` is its queue slot from admission;
    /// it goes down the stack with the run, so the job holds the slot it was admitted with.
    pub async fn submit(
        &self,
        job: NewJob,
        ticket: Option<Ticket>,
    ) -> Result<JobRecord, SubmitError> {
        let ctx = &self.inner.ctx;
        let record = JobRecord::queued(new_job_id(), job, timestamp_now());
        let (stops, guard) = self
            .inner
            .live
            .register(&record.job_id)
            .map_err(|NotAccepting| SubmitError::ShuttingDown)?;
        ctx.registry
            .store
            .insert(record.clone())
            .await
            .map_err(SubmitError::Store)?;
        let log = Arc::new(EventLog::new(ctx.output_cap));
        runner::queued_event(&log, &record);
        ctx.registry.add_log(&record.job_id, log.clone());
        tracing::info!(job_id = %record.job_id, agent = %record.agent, owner = %record.owner, "job queued");
        runner::spawn(
            ctx.clone(),
            Launch {
                record: record.clone(),
                ticket,
                log,
                stops,
                guard,
            },
        );
        Ok(record)
    }

    /// The job, if it exists and belongs to `owner`.
    pub async fn get(&self, owner: &str, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        if !is_job_id(job_id) {
            return Ok(None);
        }
        let record = self.inner.ctx.registry.store.get(job_id.to_owned()).await?;
        Ok(record.filter(|r| r.owner == owner))
    }

    /// A page of the owner's jobs, newest first.
    pub async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.inner.ctx.registry.store.list(query).await
    }

    /// Stops a queued or running job of `owner` and answers its final record (status `error`,
    /// saying it was cancelled). Returns once the run is gone: its processes killed, its slot free.
    pub async fn cancel(&self, owner: &str, job_id: &str) -> Result<JobRecord, CancelError> {
        let record = self
            .get(owner, job_id)
            .await
            .map_err(CancelError::Store)?
            .ok_or(CancelError::NotFound)?;
        if record.status.is_terminal() {
            return Err(CancelError::Finished);
        }
        let Some(stopper) = self.inner.live.stopper(job_id) else {
            // It ended between the read and now.
            return Err(CancelError::Finished);
        };
        let (ack, acked) = tokio::sync::oneshot::channel();
        let stop = Stop {
            reason: CANCELLED.to_owned(),
            queued_only: false,
            ack: Some(ack),
        };
        if stopper.send(stop).is_err() {
            return Err(CancelError::Finished);
        }
        // Unanswered means the job ended by itself before it read the request.
        acked.await.map_err(|_| CancelError::Finished)
    }

    /// The job's events from position `from` (0 for all), if it exists and belongs to `owner`.
    pub async fn events(
        &self,
        owner: &str,
        job_id: &str,
        from: usize,
    ) -> Result<Option<JobEvents>, StoreError> {
        let Some(record) = self.get(owner, job_id).await? else {
            return Ok(None);
        };
        let subscription = self
            .inner
            .ctx
            .registry
            .log(job_id)
            .map(|log| log.subscribe(from));
        Ok(Some(JobEvents {
            record,
            subscription,
        }))
    }

    /// How many jobs this gateway holds: queued, running, and finished ones not yet forgotten.
    pub fn stored_count(&self) -> usize {
        self.inner.ctx.registry.held()
    }

    /// How many jobs are queued or running.
    pub fn live_count(&self) -> usize {
        self.inner.live.count()
    }

    /// Stops accepting jobs (`POST /execute` answers 503 from now on) and stops the jobs still
    /// waiting for a slot, recording them as `error` because the gateway shut down: starting work
    /// that the end of the grace period would kill only spends money. Running jobs carry on.
    pub fn stop_accepting(&self) {
        for stopper in self.inner.live.close() {
            let _ = stopper.send(Stop {
                reason: SHUTDOWN_BEFORE_START.to_owned(),
                queued_only: true,
                ack: None,
            });
        }
    }

    /// Resolves when no job is queued or running.
    pub async fn drained(&self) {
        self.inner.live.drained().await;
    }

    /// Stops every live job, recording it as `error` with `reason`, and returns once every one
    /// has recorded its end. Also stops accepting jobs.
    pub async fn abort_all(&self, reason: &str) {
        let mut acks = Vec::new();
        for stopper in self.inner.live.close() {
            let (ack, acked) = tokio::sync::oneshot::channel();
            let stop = Stop {
                reason: reason.to_owned(),
                queued_only: false,
                ack: Some(ack),
            };
            if stopper.send(stop).is_ok() {
                acks.push(acked);
            }
        }
        for acked in acks {
            let _ = acked.await;
        }
        self.drained().await;
    }

    /// Forgets what is past the store's bounds now, as the timer does; returns how many jobs went.
    pub async fn evict_now(&self) -> usize {
        self.inner.ctx.registry.evict(timestamp_now()).await
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("live", &self.inner.live.count())
            .field("registry", &self.inner.ctx.registry)
            .finish()
    }
}
