//! The task that runs one job: drives the run, follows it into the record and the event log, and
//! stops it when asked.
//!
//! Stopping is dropping: the run's future owns its queue ticket or permit, its workspace and its
//! processes, and each is released by its own `Drop`. So cancelling a queued job frees its queue
//! slot, and cancelling a running one kills its processes and removes its workspace, with nothing
//! here that could forget to.
//!
//! Everything the task learns goes to the store before anyone is told: a status change is one
//! write of the record with its status event, the end is one write of the final record with its
//! last events, and subscribers are woken only once their events are stored.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use gateway_layers::admission::{Activation, Ticket};
use gateway_layers::deadline::Deadline;
use tokio::sync::{mpsc, oneshot};

use crate::agent::{
    AgentOutcome, AgentRequest, KeepSession, ProgressSink, ResumeSession, SavedSession,
};
use crate::metrics::Entry;
use crate::run::RunFailure;
use crate::workspace::{Harvest, Harvesting};

use super::events::{EventKind, EventLog, JobEvent};
use super::finish;
use super::live::{LiveGuard, Stop, StopKind};
use super::record::{timestamp_now, JobRecord, JobStatus};
use super::Shared;

/// Agent events stored in one write at most; more waiting go in the next.
const EVENT_BATCH: usize = 256;

/// The longest wait between two tries to store a job's final record.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// Tries to store a final record when the task itself failed, before giving up.
const CRASH_SAVE_TRIES: u32 = 20;

/// One job from its admission to its recorded end: its state and the one method that drives it
/// (the shape of mini-redis's connection handler).
pub(super) struct JobTask {
    /// The registry: store, the run stack.
    shared: Arc<Shared>,
    /// Its record, as this task last wrote it. Only this task writes it.
    record: JobRecord,
    /// Its place in the queue, until it goes down the stack with the run (which then alone holds
    /// the slot, so dropping the run frees it).
    ticket: Option<Ticket>,
    /// Numbers its events.
    log: EventLog,
    /// Events numbered but not stored yet: a failed write keeps them for the next one.
    pending: Vec<JobEvent>,
    /// Stop requests (cancel, shutdown).
    stops: mpsc::UnboundedReceiver<Stop>,
    /// Whether the run was already put back in the queue once because the account was
    /// rate-limited (it is only once: a second refusal is the job's end).
    requeued_on_limit: bool,
}

/// How the run loop ended.
enum Ended {
    /// The stack answered.
    Ran(Box<Result<AgentOutcome, RunFailure>>),
    /// A stop request won.
    Stopped(Stop),
}

impl JobTask {
    /// A task for `record`, stored as queued (its log continues from what `log` was made with).
    pub(super) fn new(
        shared: Arc<Shared>,
        record: JobRecord,
        ticket: Ticket,
        log: EventLog,
        stops: mpsc::UnboundedReceiver<Stop>,
    ) -> Self {
        Self {
            shared,
            record,
            ticket: Some(ticket),
            log,
            pending: Vec::new(),
            stops,
            requeued_on_limit: false,
        }
    }

    /// Starts the task. `guard` keeps the job counted as live until its end is recorded. The
    /// answer resolves once the run has taken its place in the queue, so jobs started one after
    /// another wait in that order.
    ///
    /// The run itself goes in an inner task so that if it panics, the outer one still records the
    /// job as `error` instead of leaving it `running` for ever.
    pub(super) fn spawn(self, guard: LiveGuard) -> oneshot::Receiver<()> {
        let shared = self.shared.clone();
        let job_id = self.record.job_id.clone();
        let (in_queue, queued) = oneshot::channel();
        tokio::spawn(async move {
            if let Err(error) = tokio::spawn(self.run(in_queue)).await {
                tracing::error!(job_id, %error, "job task failed");
                record_crash(&shared, &job_id).await;
            }
            drop(guard);
            // A slot came free: a replica sharing a queue looks for the next job at once.
            if let Some(replication) = &shared.replication {
                replication.poke();
            }
        });
        queued
    }

    /// Drives the run to its end, or until a stop request wins, and records how it ended.
    async fn run(mut self, in_queue: oneshot::Sender<()>) {
        // A job that continues another one resumes its session, or does not run at all: never a
        // silent fresh start.
        let resume = match &self.record.continue_from {
            Some(from) => match self.shared.session_of(from).await {
                Ok(saved) => Some(ResumeSession(saved)),
                Err(reason) => {
                    let _ = in_queue.send(());
                    finish::stopped(&mut self.record, &reason, timestamp_now());
                    self.conclude().await;
                    return;
                }
            },
            None => None,
        };
        let (progress_tx, mut progress) = mpsc::unbounded_channel();
        let mut request = http::Request::new(AgentRequest {
            prompt: self.record.prompt.as_str().into(),
            agent: self.record.agent.clone(),
            model: None,
            max_budget_usd: self.record.max_budget_usd,
            partial_messages: false,
            options: self.record.options.clone(),
        });
        let extensions = request.extensions_mut();
        extensions.insert(Deadline(Duration::from_secs(self.record.timeout_seconds)));
        extensions.insert(ProgressSink(progress_tx));
        extensions.insert(crate::quota::ChargeTo(self.record.owner.clone()));
        if self.shared.session_cap > 0 {
            extensions.insert(KeepSession {
                max_bytes: self.shared.session_cap,
            });
        }
        if let Some(resume) = resume {
            extensions.insert(resume);
        }
        // What the run changed is taken before its checkout goes, and delivered when asked.
        let harvested = Arc::new(std::sync::Mutex::new(None));
        extensions.insert(Harvesting {
            job_id: self.record.job_id.clone(),
            deliver: self.record.deliver.clone(),
            slot: Arc::clone(&harvested),
        });
        // Watches for the run getting its permit (queued -> running) without holding the slot.
        let mut activation = self.ticket.as_ref().map(Ticket::activation);
        if let Some(ticket) = self.ticket.take() {
            extensions.insert(ticket);
        }
        let mut run = Box::pin(self.shared.runs.run(Entry::Job, request));

        // The first poll takes the run's place in the queue (a fair semaphore): only then is the
        // submitter answered, so the queue keeps the order jobs were accepted in.
        let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
        let _ = in_queue.send(());

        let ended = match first {
            Poll::Ready(result) => Ended::Ran(Box::new(result)),
            Poll::Pending => loop {
                tokio::select! {
                    // A stop wins over everything, even a run that just finished; the start of
                    // the run is seen before its end.
                    biased;
                    Some(stop) = self.stops.recv() => {
                        let started = self.record.status != JobStatus::Queued
                            || activation.as_ref().is_some_and(Activation::is_active);
                        if stop.kind == StopKind::Drain && started {
                            // Left to finish; its ack drops unanswered.
                            continue;
                        }
                        break Ended::Stopped(stop);
                    }
                    started = activated(&mut activation), if activation.is_some() => {
                        activation = None;
                        if started {
                            self.mark_running().await;
                        }
                    }
                    result = &mut run => break Ended::Ran(Box::new(result)),
                    Some(event) = progress.recv() => {
                        self.agent_event(event);
                        while self.pending.len() < EVENT_BATCH {
                            match progress.try_recv() {
                                Ok(event) => self.agent_event(event),
                                Err(_) => break,
                            }
                        }
                        self.flush().await;
                    }
                }
            },
        };

        // A run that got its permit and ended within one poll was never seen starting above.
        if self.record.status == JobStatus::Queued
            && activation.as_ref().is_some_and(Activation::is_active)
        {
            self.mark_running().await;
        }
        let now = timestamp_now();
        match ended {
            Ended::Stopped(stop) => {
                // Kills the processes, frees the slot, removes the workspace, and counts the run
                // as cancelled before the canceller hears back.
                drop(run);
                self.stopped(stop, now).await;
            }
            Ended::Ran(result) => {
                // Events still in flight when the run ended belong before its end.
                while let Ok(event) = progress.try_recv() {
                    self.agent_event(event);
                }
                if let Ok(outcome) = result.as_ref() {
                    if !self.requeued_on_limit && crate::quota::refused_upstream(outcome) {
                        drop(run);
                        return Box::pin(self.requeue_on_limit()).await;
                    }
                }
                let harvest = harvested
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(harvest) = harvest {
                    self.take_harvest(harvest);
                }
                match *result {
                    Ok(mut outcome) => {
                        self.keep_session(outcome.session.take()).await;
                        finish::with_outcome(&mut self.record, outcome, self.shared.output_cap, now)
                    }
                    Err(failure) => finish::with_failure(&mut self.record, failure, now),
                }
                self.conclude().await;
            }
        }
    }

    /// The run failed only because the account behind the CLI is rate-limited (dispatch is
    /// paused meanwhile: see [`crate::quota`]): the job goes back to the queue once, with a status
    /// event saying why, and runs again when dispatch resumes.
    async fn requeue_on_limit(mut self) {
        self.requeued_on_limit = true;
        self.record.status = JobStatus::Queued;
        self.record.started_at = None;
        let mut event = self.record.status_event();
        event["reason"] = serde_json::Value::from(
            "upstream rate limit: the run was refused by the API's rate limit; put back in the queue once",
        );
        self.log
            .record(EventKind::Status, event.to_string(), &mut self.pending);
        self.save(false).await;
        tracing::info!(job_id = %self.record.job_id, "job put back in the queue: the account is rate-limited");
        self.record.attempts = self.record.attempts.saturating_sub(1);
        self.ticket = Some(self.shared.ticket_for(&self.record.owner));
        let (in_queue, _queued) = oneshot::channel();
        self.run(in_queue).await;
    }

    /// Records a run stopped by `stop`, and answers whoever waits for it.
    async fn stopped(mut self, stop: Stop, now: chrono::DateTime<chrono::Utc>) {
        let job_id = self.record.job_id.clone();
        let started = self.record.status == JobStatus::Running;
        let durable = self.shared.store.is_durable();
        match stop.kind {
            // A durable store keeps a job that never started queued: the next start runs it.
            StopKind::Drain | StopKind::Interrupt if !started && durable => {
                tracing::info!(%job_id, "job left queued for the next start");
                if self.shared.replication.is_some() {
                    // Back to the shared queue, for whichever replica has a slot.
                    self.record.replica = None;
                    self.save(true).await;
                } else {
                    self.flush().await;
                }
                return;
            }
            StopKind::Interrupt
                if started && durable && self.record.attempts < self.record.max_attempts =>
            {
                let event = finish::requeued(&mut self.record, &stop.reason, now);
                if self.shared.replication.is_some() {
                    self.record.replica = None;
                }
                self.log
                    .record(EventKind::Status, event.to_string(), &mut self.pending);
                tracing::info!(%job_id, attempts = self.record.attempts, "job queued again for the next start");
                self.save(true).await;
                return;
            }
            StopKind::Interrupt if started => {
                finish::interrupted(&mut self.record, &stop.reason, now);
            }
            StopKind::Cancel | StopKind::Drain | StopKind::Interrupt => {
                finish::stopped(&mut self.record, &stop.reason, now);
            }
        }
        tracing::info!(%job_id, reason = %stop.reason, "job stopped");
        self.conclude().await;
        if let Some(ack) = stop.ack {
            let _ = ack.send(self.record);
        }
    }

    /// Stores the session the run left, for a later job to continue. Before the final record, so
    /// a job seen finished has its session in place; one that cannot be stored is logged.
    async fn keep_session(&self, session: Option<SavedSession>) {
        let Some(session) = session else {
            return;
        };
        let job_id = self.record.job_id.clone();
        match self
            .shared
            .store
            .keep_session(job_id.clone(), session.to_bytes())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%job_id, "session not kept: the store keeps none, or forgot the job")
            }
            Err(error) => tracing::warn!(%job_id, %error, "session not kept"),
        }
    }

    /// Puts what the run changed, and what delivery did, on the record.
    fn take_harvest(&mut self, harvest: Harvest) {
        use base64::Engine as _;
        self.record.changes = harvest.changes;
        self.record.patch = harvest
            .patch
            .map(|patch| base64::engine::general_purpose::STANDARD.encode(patch));
        if let Some(delivery) = &harvest.delivery {
            match &delivery.error {
                Some(error) => {
                    tracing::warn!(job_id = %self.record.job_id, branch = %delivery.branch, %error, "delivery failed")
                }
                None => {
                    tracing::info!(job_id = %self.record.job_id, branch = %delivery.branch, "delivered")
                }
            }
        }
        self.record.delivery = harvest.delivery;
    }

    /// Numbers one agent event into the pending batch.
    fn agent_event(&mut self, event: Box<str>) {
        self.log
            .record(EventKind::Agent, event.into(), &mut self.pending);
    }

    /// Stores the pending events; on failure they stay pending for the next write.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let events = self.pending.clone();
        match self
            .shared
            .store
            .append(self.record.job_id.clone(), events)
            .await
        {
            Ok(_) => {
                self.pending.clear();
                self.log.stored();
            }
            Err(error) => {
                tracing::warn!(job_id = %self.record.job_id, %error, "could not store job events; will retry");
            }
        }
    }

    /// Records the move from queued to running, at the moment the run got its permit.
    async fn mark_running(&mut self) {
        self.record.status = JobStatus::Running;
        self.record.started_at = Some(timestamp_now());
        if !self.shared.replica.is_empty() {
            self.record.replica = Some(self.shared.replica.clone());
        }
        self.record.attempts = self.record.attempts.saturating_add(1);
        let event = self.record.status_event().to_string();
        self.log.record(EventKind::Status, event, &mut self.pending);
        self.save(false).await;
        if let Some(webhooks) = &self.shared.webhooks {
            webhooks.poke();
        }
    }

    /// Records a terminal record with its last status and the end marker, then lets the store
    /// forget what is past its bounds.
    async fn conclude(&mut self) {
        self.log.record_end(&self.record, &mut self.pending);
        self.save(true).await;
        if let Some(webhooks) = &self.shared.webhooks {
            webhooks.poke();
        }
        tracing::info!(
            job_id = %self.record.job_id,
            status = %self.record.status,
            exit_code = ?self.record.exit_code,
            error = self.record.error.as_deref().unwrap_or(""),
            "job finished"
        );
        // A shared store is kept within bounds by the eviction timer alone: one replica at a
        // time, not a transaction per finished job.
        if self.shared.replication.is_none() {
            self.shared.evict(timestamp_now()).await;
        }
    }

    /// Stores the record with the pending events. A write that must not be lost (`must`: the
    /// end of the job) is retried until it succeeds, backing off up to [`MAX_RETRY_WAIT`], so a
    /// full disk delays the record rather than losing it; only the end of the grace period at
    /// shutdown stops the retries, and the next start then finds the job interrupted.
    async fn save(&mut self, must: bool) {
        let mut wait = Duration::from_millis(50);
        loop {
            let events = self.pending.clone();
            // With a shared queue this replica holds the row; elsewhere the holder is not read.
            let holder = Some(self.shared.replica.clone());
            match self.shared.write_held(&self.record, events, holder).await {
                Ok(found) => {
                    self.pending.clear();
                    self.log.stored();
                    if !found {
                        tracing::warn!(job_id = %self.record.job_id, "job record vanished from the store");
                    }
                    return;
                }
                Err(error) if !must => {
                    tracing::error!(job_id = %self.record.job_id, %error, "could not save job record");
                    return;
                }
                Err(error) => {
                    tracing::error!(
                        job_id = %self.record.job_id,
                        %error,
                        retry_in_ms = wait.as_millis() as u64,
                        "could not save job record; retrying"
                    );
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                Some(stop) = self.stops.recv() => {
                    if stop.kind == StopKind::Interrupt {
                        tracing::error!(job_id = %self.record.job_id, "gave up saving the job record at shutdown");
                        return;
                    }
                }
            }
            wait = (wait * 2).min(MAX_RETRY_WAIT);
        }
    }
}

/// Resolves when the watched ticket becomes active (`true`) or leaves unstarted (`false`).
async fn activated(activation: &mut Option<Activation>) -> bool {
    match activation {
        Some(activation) => activation.wait().await,
        None => std::future::pending().await,
    }
}

/// Records a job whose task panicked, so it does not stay `running` for ever.
async fn record_crash(shared: &Shared, job_id: &str) {
    let mut record = match shared.store.get(job_id.to_owned()).await {
        Ok(Some(record)) if !record.status.is_terminal() => record,
        _ => return,
    };
    let next_seq = match shared.store.events(job_id.to_owned(), 0, usize::MAX).await {
        Ok(events) => events.last().map_or(0, |e| e.seq + 1),
        Err(_) => return,
    };
    finish::stopped(
        &mut record,
        "internal error: the task running the job failed",
        timestamp_now(),
    );
    let mut log = EventLog::new(
        shared.output_cap,
        super::store::LogPosition {
            next_seq,
            ..Default::default()
        },
    );
    let mut events = Vec::new();
    log.record_end(&record, &mut events);
    for _ in 0..CRASH_SAVE_TRIES {
        if shared
            .store
            .update(record.clone(), events.clone())
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(MAX_RETRY_WAIT / 10).await;
    }
    shared.evict(timestamp_now()).await;
}
