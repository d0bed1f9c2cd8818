//! How runs end: `claude_gateway_runs_total{entry, outcome}`, their duration, and the tokens and
//! dollars their agents reported.
//!
//! The top of the agent stack (the `run` module) starts a [`RunTimer`] when a run is handed to it
//! and calls [`RunTimer::finish`] once with what came back. A timer dropped unfinished (a chat client that
//! went away, a job cancelled or stopped at shutdown) records the run as `cancelled`, so no way
//! of ending is left uncounted.

use std::time::{Duration, Instant};

use ::metrics::{counter, histogram};

use super::names::{AGENT_TOKENS, RUNS, RUN_DURATION};
use super::Metrics;
use crate::agent::AgentOutcome;

/// Which route started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /execute`.
    Job,
    /// `POST /v1/messages`.
    Messages,
}

impl Entry {
    /// The `entry` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Entry::Chat => "chat",
            Entry::Job => "job",
            Entry::Messages => "messages",
        }
    }
}

/// How a run ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// The CLI exited 0 and reported no error.
    Completed,
    /// The agent ran and failed: a non-zero exit or `is_error` (a chat answer cut short by the
    /// turn or budget limit included, though it is answered 200 with `finish_reason: length`).
    Failed,
    /// Its deadline passed and it was killed.
    Timeout,
    /// It could not run: no workspace, an agent that hung or flooded its output, a bug.
    Error,
    /// Stopped before it ended: `DELETE /jobs/{id}`, a client that went away, shutdown.
    Cancelled,
    /// Turned away before it started: queue full or the gateway draining.
    Rejected,
}

impl RunEnd {
    /// The `outcome` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RunEnd::Completed => "completed",
            RunEnd::Failed => "failed",
            RunEnd::Timeout => "timeout",
            RunEnd::Error => "error",
            RunEnd::Cancelled => "cancelled",
            RunEnd::Rejected => "rejected",
        }
    }
}

/// One run in flight, from the moment it is handed to the agent stack. Records its end once:
/// through [`finish`](Self::finish), or as `cancelled` when dropped unfinished.
#[must_use = "a timer dropped at once records a cancelled run"]
#[derive(Debug)]
pub(crate) struct RunTimer {
    /// Where the end is recorded.
    metrics: Metrics,
    /// The `entry` label.
    entry: Entry,
    /// When the run was handed to the agent stack: its duration counts from here.
    started: Instant,
    /// Set by `finish`, so dropping afterwards records nothing more.
    recorded: bool,
}

impl Metrics {
    /// Starts timing a run that is about to go down the agent stack.
    pub(crate) fn start_run(&self, entry: Entry) -> RunTimer {
        RunTimer {
            metrics: self.clone(),
            entry,
            started: Instant::now(),
            recorded: false,
        }
    }

    /// Counts a run turned away before it started (admission said no). It has no duration.
    pub(crate) fn record_rejected(&self, entry: Entry) {
        record_run(self, entry, RunEnd::Rejected, None, None);
    }
}

impl RunTimer {
    /// Records how the run ended, and the tokens and cost its agent reported when it ran.
    pub(crate) fn finish(mut self, end: RunEnd, outcome: Option<&AgentOutcome>) {
        self.recorded = true;
        let elapsed = (end != RunEnd::Rejected).then(|| self.started.elapsed());
        record_run(&self.metrics, self.entry, end, elapsed, outcome);
    }
}

impl Drop for RunTimer {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        // Unwinding means the task running it panicked: that is a bug, not a cancel.
        let end = if std::thread::panicking() {
            RunEnd::Error
        } else {
            RunEnd::Cancelled
        };
        record_run(
            &self.metrics,
            self.entry,
            end,
            Some(self.started.elapsed()),
            None,
        );
    }
}

/// The one place a run's end is recorded: its count, its duration when it had one, and what its
/// agent reported spending.
fn record_run(
    metrics: &Metrics,
    entry: Entry,
    end: RunEnd,
    elapsed: Option<Duration>,
    outcome: Option<&AgentOutcome>,
) {
    metrics.record(|| {
        counter!(RUNS, "entry" => entry.label(), "outcome" => end.label()).increment(1);
        if let Some(elapsed) = elapsed {
            histogram!(RUN_DURATION, "entry" => entry.label()).record(elapsed.as_secs_f64());
        }
        if let Some(usage) = outcome.and_then(|o| o.usage.as_ref()) {
            let kinds = [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cache_read", usage.cache_read_input_tokens),
                ("cache_creation", usage.cache_creation_input_tokens),
            ];
            for (kind, tokens) in kinds {
                counter!(AGENT_TOKENS, "kind" => kind).increment(tokens);
            }
        }
    });
    if let Some(cost) = outcome.and_then(|o| o.cost_usd) {
        metrics.inner.cost_usd.add(cost);
    }
}
