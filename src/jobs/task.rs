//! The task that runs one job: drives the run, follows it into the record and the event log, and
//! stops it when asked.
//!
//! Stopping is dropping: the run's future owns its queue ticket or permit, its workspace and its
//! processes, and each is released by its own `Drop`. So cancelling a queued job frees its queue
//! slot, and cancelling a running one kills its processes and removes its workspace, with nothing
//! here that could forget to.

use std::sync::Arc;
use std::time::Duration;

use gateway_layers::admission::{Activation, Ticket};
use gateway_layers::deadline::Deadline;
use tokio::sync::mpsc;

use crate::agent::{AgentOutcome, AgentRequest, ProgressSink};
use crate::metrics::Entry;
use crate::run::RunFailure;

use super::events::{EventKind, EventLog};
use super::finish;
use super::live::{LiveGuard, Stop};
use super::record::{format_iso, timestamp_now, JobRecord, JobStatus};
use super::Shared;

/// One job from its admission to its recorded end: its state and the one method that drives it
/// (the shape of mini-redis's connection handler).
pub(super) struct JobTask {
    /// The registry: store, logs, the run stack.
    shared: Arc<Shared>,
    /// Its record, as this task last wrote it. Only this task writes it.
    record: JobRecord,
    /// Its place in the queue, until it goes down the stack with the run (which then alone holds
    /// the slot, so dropping the run frees it).
    ticket: Option<Ticket>,
    /// Its event log.
    log: Arc<EventLog>,
    /// Stop requests (cancel, shutdown).
    stops: mpsc::UnboundedReceiver<Stop>,
}

/// How the run loop ended.
enum Ended {
    /// The stack answered.
    Ran(Result<AgentOutcome, RunFailure>),
    /// A stop request won.
    Stopped(Stop),
}

impl JobTask {
    /// A task for `record`, freshly inserted as queued. Its log starts with the queued status.
    pub(super) fn new(
        shared: Arc<Shared>,
        record: JobRecord,
        ticket: Ticket,
        log: Arc<EventLog>,
        stops: mpsc::UnboundedReceiver<Stop>,
    ) -> Self {
        push_status(&log, &record);
        Self {
            shared,
            record,
            ticket: Some(ticket),
            log,
            stops,
        }
    }

    /// Starts the task. `guard` keeps the job counted as live until its end is recorded.
    ///
    /// The run itself goes in an inner task so that if it panics, the outer one still records the
    /// job as `error` instead of leaving it `running` for ever.
    pub(super) fn spawn(self, guard: LiveGuard) {
        let shared = self.shared.clone();
        let log = self.log.clone();
        let job_id = self.record.job_id.clone();
        tokio::spawn(async move {
            if let Err(error) = tokio::spawn(self.run()).await {
                tracing::error!(job_id, %error, "job task failed");
                record_crash(&shared, &job_id, &log).await;
            }
            drop(guard);
        });
    }

    /// Drives the run to its end, or until a stop request wins, and records how it ended.
    async fn run(mut self) {
        let (progress_tx, mut progress) = mpsc::unbounded_channel();
        let mut request = http::Request::new(AgentRequest {
            prompt: self.record.prompt.clone(),
            agent: self.record.agent.clone(),
            model: None,
            max_budget_usd: self.record.max_budget_usd,
            partial_messages: false,
            options: self.record.options.clone(),
        });
        let extensions = request.extensions_mut();
        extensions.insert(Deadline(Duration::from_secs(self.record.timeout_seconds)));
        extensions.insert(ProgressSink(progress_tx));
        // Watches for the run getting its permit (queued -> running) without holding the slot.
        let mut activation = self.ticket.as_ref().map(Ticket::activation);
        if let Some(ticket) = self.ticket.take() {
            extensions.insert(ticket);
        }
        let mut run = Box::pin(self.shared.runs.run(Entry::Job, request));

        let ended = loop {
            tokio::select! {
                // A stop wins over everything, even a run that just finished; the start of the
                // run is seen before its end.
                biased;
                Some(stop) = self.stops.recv() => {
                    let started = self.record.status != JobStatus::Queued
                        || activation.as_ref().is_some_and(Activation::is_active);
                    if stop.queued_only && started {
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
                result = &mut run => break Ended::Ran(result),
                Some(event) = progress.recv() => {
                    self.log.push(EventKind::Agent, event.into());
                    // The run may have printed many at once: take them all before polling it
                    // again, so they never pile up in the channel.
                    while let Ok(event) = progress.try_recv() {
                        self.log.push(EventKind::Agent, event.into());
                    }
                }
            }
        };

        // A run that got its permit and ended within one poll was never seen starting above.
        if self.record.status == JobStatus::Queued
            && activation.as_ref().is_some_and(Activation::is_active)
        {
            self.mark_running().await;
        }
        let now = timestamp_now();
        let ack = match ended {
            Ended::Stopped(stop) => {
                // Kills the processes, frees the slot, removes the workspace, and counts the run
                // as cancelled before the canceller hears back.
                drop(run);
                tracing::info!(job_id = %self.record.job_id, reason = %stop.reason, "job stopped");
                finish::stopped(&mut self.record, &stop.reason, now);
                stop.ack
            }
            Ended::Ran(result) => {
                // Events still in flight when the run ended belong before its end.
                while let Ok(event) = progress.try_recv() {
                    self.log.push(EventKind::Agent, event.into());
                }
                match result {
                    Ok(outcome) => {
                        finish::with_outcome(&mut self.record, outcome, self.shared.output_cap, now)
                    }
                    Err(failure) => finish::with_failure(&mut self.record, failure, now),
                }
                None
            }
        };
        conclude(&self.shared, &self.record, &self.log).await;
        if let Some(ack) = ack {
            let _ = ack.send(self.record);
        }
    }

    /// Records the move from queued to running, at the moment the run got its permit.
    async fn mark_running(&mut self) {
        self.record.status = JobStatus::Running;
        self.record.started_at = Some(timestamp_now());
        save(&self.shared, &self.record).await;
        push_status(&self.log, &self.record);
    }
}

/// Resolves when the watched ticket becomes active (`true`) or leaves unstarted (`false`).
async fn activated(activation: &mut Option<Activation>) -> bool {
    match activation {
        Some(activation) => activation.wait().await,
        None => std::future::pending().await,
    }
}

/// Records a terminal record: the store, the log's last status and its end marker, then lets
/// the store forget what is past its bounds.
async fn conclude(shared: &Shared, record: &JobRecord, log: &EventLog) {
    save(shared, record).await;
    push_status(log, record);
    log.push(EventKind::End, record.id_and_status().to_string());
    tracing::info!(
        job_id = %record.job_id,
        status = %record.status,
        exit_code = ?record.exit_code,
        error = record.error.as_deref().unwrap_or(""),
        "job finished"
    );
    shared.evict(timestamp_now()).await;
}

async fn save(shared: &Shared, record: &JobRecord) {
    match shared.store.update(record.clone()).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(job_id = %record.job_id, "job record vanished from the store"),
        Err(error) => tracing::error!(job_id = %record.job_id, %error, "could not save job record"),
    }
}

fn push_status(log: &EventLog, record: &JobRecord) {
    let at = match record.status {
        JobStatus::Queued => Some(record.created_at),
        JobStatus::Running => record.started_at,
        _ => record.finished_at,
    };
    let mut data = record.id_and_status();
    data["at"] = serde_json::json!(at.as_ref().map(format_iso));
    data["error"] = serde_json::json!(record.error);
    log.push(EventKind::Status, data.to_string());
}

/// Records a job whose task panicked, so it does not stay `running` for ever.
async fn record_crash(shared: &Shared, job_id: &str, log: &EventLog) {
    let Ok(Some(mut record)) = shared.store.get(job_id.to_owned()).await else {
        return;
    };
    if record.status.is_terminal() {
        return;
    }
    finish::stopped(
        &mut record,
        "internal error: the task running the job failed",
        timestamp_now(),
    );
    conclude(shared, &record, log).await;
}
