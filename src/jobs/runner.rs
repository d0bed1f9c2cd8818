//! The task that runs one job: drives the agent stack, follows the run into the record and the
//! event log, and stops the run when asked.
//!
//! Stopping is dropping: the run's future owns its queue ticket or permit, its workspace and its
//! process group, and each is released by its own `Drop`. So cancelling a queued job frees its
//! queue slot, and cancelling a running one kills its processes and removes its workspace, with
//! nothing here that could forget to.

use std::sync::Arc;
use std::time::Duration;

use gateway_layers::admission::{Activation, Ticket};
use gateway_layers::deadline::Deadline;
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::agent::{AgentOutcome, AgentRequest, ProgressSink};
use crate::metrics::{Entry, Metrics};
use crate::rescue::classify;
use crate::stack::AgentStack;
use crate::BoxError;

use super::events::{EventKind, EventLog};
use super::finish;
use super::live::{LiveGuard, Stop};
use super::record::{format_iso, timestamp_now, JobRecord, JobStatus};
use super::registry::Registry;

/// What every job task needs.
pub struct JobContext {
    /// Records and event logs.
    pub registry: Arc<Registry>,
    /// The stack every run goes down.
    pub agents: AgentStack,
    /// Bytes kept of each of `output`, `result` and `stderr`.
    pub output_cap: usize,
    /// Hears how each run ended.
    pub metrics: Metrics,
}

/// One job to start.
pub struct Launch {
    /// Its record, as inserted into the store (queued).
    pub record: JobRecord,
    /// Its queue slot, from admission; `None` when the job was admitted without one.
    pub ticket: Option<Ticket>,
    /// Its event log.
    pub log: Arc<EventLog>,
    /// Stop requests.
    pub stops: mpsc::UnboundedReceiver<Stop>,
    /// Keeps it counted as live until its end is recorded.
    pub guard: LiveGuard,
}

/// Starts the job's task.
///
/// The run itself goes in an inner task so that if it panics, the outer one still records the job
/// as `error` instead of leaving it `running` for ever.
pub fn spawn(ctx: Arc<JobContext>, launch: Launch) {
    let Launch {
        record,
        ticket,
        log,
        stops,
        guard,
    } = launch;
    let job_id = record.job_id.clone();
    tokio::spawn(async move {
        let run = tokio::spawn(drive(ctx.clone(), record, ticket, log.clone(), stops));
        if let Err(error) = run.await {
            tracing::error!(job_id, %error, "job task failed");
            record_crash(&ctx, &job_id, &log).await;
        }
        drop(guard);
    });
}

/// How the run loop ended.
enum Ended {
    /// The stack answered.
    Ran(Result<AgentOutcome, BoxError>),
    /// A stop request won.
    Stopped(Stop),
}

async fn drive(
    ctx: Arc<JobContext>,
    mut record: JobRecord,
    ticket: Option<Ticket>,
    log: Arc<EventLog>,
    mut stops: mpsc::UnboundedReceiver<Stop>,
) {
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let mut request = http::Request::new(AgentRequest {
        prompt: record.prompt.clone(),
        agent: record.agent.clone(),
        model: None,
        max_budget_usd: record.max_budget_usd,
        partial_messages: false,
    });
    let extensions = request.extensions_mut();
    extensions.insert(Deadline(Duration::from_secs(record.timeout_seconds)));
    extensions.insert(ProgressSink(progress_tx));
    // Watches for the run getting its permit (queued -> running) without holding the slot.
    let mut activation = ticket.as_ref().map(Ticket::activation);
    if let Some(ticket) = ticket {
        extensions.insert(ticket);
    }

    let mut run = Box::pin(ctx.agents.clone().oneshot(request));
    let timer = ctx.metrics.start_run(Entry::Job);

    let ended = loop {
        tokio::select! {
            // A stop wins over everything, even a run that just finished.
            biased;
            Some(stop) = stops.recv() => {
                let started = record.status != JobStatus::Queued
                    || activation.as_ref().is_some_and(Activation::is_active);
                if stop.queued_only && started {
                    // Left to finish; its ack drops unanswered.
                    continue;
                }
                break Ended::Stopped(stop);
            }
            result = &mut run => break Ended::Ran(result),
            Some(event) = progress.recv() => {
                if record.status == JobStatus::Queued {
                    activation = None;
                    mark_running(&ctx, &mut record, &log).await;
                }
                log.push(EventKind::Agent, event.to_string());
            }
            started = activated(&mut activation), if activation.is_some() && record.status == JobStatus::Queued => {
                activation = None;
                if started {
                    mark_running(&ctx, &mut record, &log).await;
                }
            }
        }
    };

    let now = timestamp_now();
    let ack = match ended {
        Ended::Stopped(stop) => {
            // Kills the process group, frees the slot, removes the workspace.
            drop(run);
            // Unfinished, so counted as cancelled, before the canceller hears back.
            drop(timer);
            tracing::info!(job_id = %record.job_id, reason = %stop.reason, "job stopped");
            finish::stopped(&mut record, &stop.reason, now);
            stop.ack
        }
        Ended::Ran(result) => {
            if record.status == JobStatus::Queued {
                // It ran, too fast to be seen starting: back-date the start by the run's length.
                let ran_for = result.as_ref().map_or(0, |o| o.duration_ms);
                let ran_for = chrono::TimeDelta::milliseconds(i64::try_from(ran_for).unwrap_or(0));
                record.status = JobStatus::Running;
                record.started_at = Some(now - ran_for);
                push_status(&log, &record);
            }
            // Events still in flight when the run ended belong before its end.
            while let Ok(event) = progress.try_recv() {
                log.push(EventKind::Agent, event.to_string());
            }
            let result = result.map_err(classify);
            timer.finish(result.as_ref());
            match result {
                Ok(outcome) => finish::with_outcome(&mut record, outcome, ctx.output_cap, now),
                Err(failure) => finish::with_failure(&mut record, failure, now),
            }
            None
        }
    };
    conclude(&ctx, &record, &log).await;
    if let Some(ack) = ack {
        let _ = ack.send(record);
    }
}

/// Resolves when the watched ticket becomes active (`true`) or leaves unstarted (`false`).
async fn activated(activation: &mut Option<Activation>) -> bool {
    match activation {
        Some(activation) => activation.wait().await,
        None => std::future::pending().await,
    }
}

/// Records the move from queued to running.
async fn mark_running(ctx: &JobContext, record: &mut JobRecord, log: &EventLog) {
    record.status = JobStatus::Running;
    record.started_at = Some(timestamp_now());
    save(ctx, record).await;
    push_status(log, record);
}

/// Records a terminal record: the store, the log's last status and its end marker, then lets
/// the store forget what is past its bounds.
async fn conclude(ctx: &JobContext, record: &JobRecord, log: &EventLog) {
    save(ctx, record).await;
    push_status(log, record);
    log.push(
        EventKind::End,
        serde_json::json!({ "job_id": record.job_id, "status": record.status }).to_string(),
    );
    tracing::info!(
        job_id = %record.job_id,
        status = %record.status,
        exit_code = ?record.exit_code,
        error = record.error.as_deref().unwrap_or(""),
        "job finished"
    );
    ctx.registry.evict(timestamp_now()).await;
}

async fn save(ctx: &JobContext, record: &JobRecord) {
    match ctx.registry.store.update(record.clone()).await {
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
    let data = serde_json::json!({
        "job_id": record.job_id,
        "status": record.status,
        "at": at.as_ref().map(format_iso),
        "error": record.error,
    });
    log.push(EventKind::Status, data.to_string());
}

/// The status event a new job's log starts with.
pub fn queued_event(log: &EventLog, record: &JobRecord) {
    push_status(log, record);
}

/// Records a job whose task panicked, so it does not stay `running` for ever.
async fn record_crash(ctx: &JobContext, job_id: &str, log: &EventLog) {
    let Ok(Some(mut record)) = ctx.registry.store.get(job_id.to_owned()).await else {
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
    conclude(ctx, &record, log).await;
}
