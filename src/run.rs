//! One home for a run: the agent stack every run goes down, and the one call that drives it.
//!
//! Chat, streaming chat and jobs all start a run through [`Runs::run`] and get back a
//! `Result<`[`AgentOutcome`]`, `[`RunFailure`]`>`: the stack's errors, typed by the layer that
//! raised them, are sorted here, at its top, and every run's end is recorded in the metrics here
//! too, so no entry point can forget either.
//!
//! ```text
//!  record ─► requeue ─────► concurrency-limit ─► deadline ─► workspace ─► harvest ─► ClaudeService
//!  (metrics,  (refused by   (queued → active,    (run only)  (clone in,   (changes,   (spawn, stream,
//!   errors)    the account:  fair order)                      clean out)   delivery)   kill on drop)
//!              queue again)
//! ```
//!
//! Dropping a run's future at any point (a cancelled job, a client gone, shutdown) frees its
//! queue slot or permit, kills its agent, removes its workspace and counts it as cancelled: each
//! part is released by its own `Drop`.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_layers::admission::Gauge;
use gateway_layers::concurrency::ConcurrencyLimitLayer;
use gateway_layers::deadline::{DeadlineLayer, Elapsed};
use gateway_layers::workspace::{Provision, ProvisionFailed, WorkspaceLayer};
use gateway_layers::BoxError;
use http::Request;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use crate::agent::{
    one_line, AgentError, AgentOutcome, AgentRequest, Below, ClaudeService, RunFuture, RunStep,
    StepLayer,
};
use crate::metrics::{Entry, Metrics, RunEnd};
use crate::quota::{ChargeTo, Quota};
use crate::requeue::RequeueOnLimit;
use crate::workspace::HarvestStep;

/// The agent stack, cloneable and shareable across tasks. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Runs {
    /// Every layer of the stack, boxed once so callers name one type.
    stack: BoxCloneSyncService<Request<AgentRequest>, AgentOutcome, RunFailure>,
}

impl Runs {
    /// Composes the stack every run goes down. `default_deadline` applies to a request without a
    /// [`Deadline`](gateway_layers::deadline::Deadline) extension.
    pub(crate) fn new(
        gauge: Gauge,
        provisioner: Arc<dyn Provision>,
        claude: ClaudeService,
        harvest: HarvestStep,
        default_deadline: Duration,
        metrics: Metrics,
        quota: Quota,
    ) -> Self {
        let stack = ServiceBuilder::new()
            // Above the slot: a chat run refused by the account's rate limit lets go of its slot
            // and takes a new place in the queue, to wait for the pause holding nothing.
            .layer(StepLayer(RequeueOnLimit::new(
                quota.clone(),
                default_deadline,
            )))
            // A run waits here, FIFO, as `queued`, and holds its permit until its future ends
            // however it ends. Nothing below runs before a slot is free.
            .layer(ConcurrencyLimitLayer::new(gauge))
            // Inside the slot, so a run refused by the account's rate limit pauses dispatch
            // before its slot is freed: no queued run slips into it meanwhile.
            .map_response({
                let quota = quota.clone();
                move |outcome: AgentOutcome| {
                    match crate::quota::upstream_limit(&outcome) {
                        Some(reset) => {
                            quota.dispatch().pause(reset);
                        }
                        None if outcome.succeeded() => quota.dispatch().succeeded(),
                        None => {}
                    }
                    outcome
                }
            })
            // Inside the permit, so time in the queue never counts against a run's deadline;
            // around the workspace, so a clone that hangs is bounded by the same deadline.
            .layer(DeadlineLayer::new(default_deadline))
            // Provisioned only once the run may start (a queued run holds no checkout) and
            // removed in the background when the run's future ends or is dropped.
            .layer(WorkspaceLayer::new(provisioner))
            // Inside the workspace, so what the run changed is taken (and delivered) before the
            // checkout is removed, and after the agent is gone.
            .layer(StepLayer(harvest))
            // The workspace is ready and the agent is about to start: marked, so a deadline
            // that passes before this point is told apart from one the agent ran into.
            .map_request(|request: Request<AgentRequest>| {
                if let Some(AgentStarting(flag)) = request.extensions().get() {
                    flag.store(true, Ordering::Relaxed);
                }
                request
            })
            .service(claude);
        Self::with_record(BoxCloneSyncService::new(stack), metrics, quota, true)
    }

    /// Puts the top of the stack (metrics and error classification) around `stack`: what
    /// [`new`](Self::new) does with the real layers, and what tests do with stand-ins.
    #[cfg(test)]
    pub(crate) fn around(
        stack: BoxCloneSyncService<Request<AgentRequest>, AgentOutcome, BoxError>,
        metrics: Metrics,
    ) -> Self {
        Self::with_record(
            stack,
            metrics,
            Quota::new(
                Arc::new(crate::policy::Policies::fixed(
                    crate::policy::PolicyBook::default(),
                )),
                Gauge::new(1, 1),
            ),
            false,
        )
    }

    /// [`around`](Self::around), saying whether `stack` marks the start of its agent
    /// ([`AgentStarting`]); when it does not, every timeout counts as the agent's.
    fn with_record(
        stack: BoxCloneSyncService<Request<AgentRequest>, AgentOutcome, BoxError>,
        metrics: Metrics,
        quota: Quota,
        marks_start: bool,
    ) -> Self {
        // Outermost, so a run's duration counts its time in the queue, and every way a run comes
        // back (or is dropped) is recorded once.
        let stack = StepLayer(RecordStep {
            metrics,
            quota,
            marks_start,
        })
        .layer(stack);
        Self {
            stack: BoxCloneSyncService::new(stack),
        }
    }

    /// Drives one run, started from `entry`, to its end. The future owns everything the run
    /// holds: dropping it stops the run.
    pub(crate) fn run(
        &self,
        entry: Entry,
        mut request: Request<AgentRequest>,
    ) -> impl Future<Output = Result<AgentOutcome, RunFailure>> + Send + 'static {
        request.extensions_mut().insert(entry);
        self.stack.clone().oneshot(request)
    }
}

impl fmt::Debug for Runs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runs").finish_non_exhaustive()
    }
}

/// A request extension the top of the stack inserts and the bottom sets, just before the agent
/// is started: whether the run got that far.
#[derive(Clone, Debug, Default)]
struct AgentStarting(Arc<AtomicBool>);

/// Why a run produced no outcome.
#[derive(Debug)]
pub(crate) enum RunFailure {
    /// The run outlived its deadline; its processes were killed.
    TimedOut(String),
    /// The deadline passed before the agent started: preparing the workspace took too long.
    TimedOutBeforeStart(String),
    /// No workspace could be made for it.
    Workspace(String),
    /// The agent could not be run or misbehaved (unknown agent, hang, output flood, garbage).
    Agent(AgentError),
    /// Anything else: a bug, reported as such.
    Internal(String),
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunFailure::TimedOut(why) => write!(f, "agent timed out: {why}"),
            RunFailure::TimedOutBeforeStart(why) => write!(
                f,
                "timed out before the agent started (preparing the workspace took too long): {why}"
            ),
            RunFailure::Workspace(why) => f.write_str(why),
            RunFailure::Agent(error) => write!(f, "{error}"),
            RunFailure::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

impl StdError for RunFailure {}

impl RunFailure {
    /// Sorts an error from the stack by the layer that raised it, wherever it is in the chain.
    /// `agent_started` tells a deadline that passed while the agent ran from one that passed
    /// before.
    fn classify(error: BoxError, agent_started: bool) -> Self {
        if is_caused_by::<Elapsed>(&*error) {
            if !agent_started {
                return RunFailure::TimedOutBeforeStart(error.to_string());
            }
            return RunFailure::TimedOut(error.to_string());
        }
        if is_caused_by::<ProvisionFailed>(&*error) {
            return RunFailure::Workspace(error.to_string());
        }
        match error.downcast::<AgentError>() {
            Ok(agent) => RunFailure::Agent(*agent),
            Err(other) => RunFailure::Internal(other.to_string()),
        }
    }
}

/// How a run that came back from the stack ended, as the metrics label it.
fn run_end(result: Result<&AgentOutcome, &RunFailure>) -> RunEnd {
    match result {
        // A run ended on calls of the caller's functions did what was asked of it.
        Ok(outcome) if outcome.succeeded() || !outcome.tool_calls.is_empty() => RunEnd::Completed,
        Ok(_) => RunEnd::Failed,
        Err(RunFailure::TimedOut(_) | RunFailure::TimedOutBeforeStart(_)) => RunEnd::Timeout,
        Err(_) => RunEnd::Error,
    }
}

/// Whether `error` or anything in its source chain is an `E`.
fn is_caused_by<E: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<E>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// How many characters of why a run failed an API error body holds.
const DETAIL_MAX: usize = 300;

/// One line saying why a run that ended did not succeed, for an API error body: claude's own
/// error text, else stderr, else the exit code.
pub(crate) fn outcome_detail(outcome: &AgentOutcome) -> String {
    let text = outcome
        .is_error
        .then(|| outcome.text.clone())
        .flatten()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| Some(outcome.stderr.clone()).filter(|s| !s.trim().is_empty()));
    let detail = match (outcome.exit_code, text) {
        (None, Some(text)) => format!("the agent was killed by a signal: {text}"),
        (None, None) => "the agent was killed by a signal".to_owned(),
        (Some(_), Some(text)) => text,
        (Some(code), None) => format!("exit {code}"),
    };
    one_line(&detail, DETAIL_MAX)
}

/// One line saying why a run produced no outcome, for an API error body.
pub(crate) fn failure_detail(failure: &RunFailure) -> String {
    one_line(&failure.to_string(), DETAIL_MAX)
}

/// The top of the stack: times each run from the moment it is handed over, sorts its error, and
/// records how it ended (a run dropped unfinished is recorded as cancelled by the timer's drop).
#[derive(Clone)]
struct RecordStep {
    metrics: Metrics,
    /// Budgets (charged at each run's end, the per-run cap) and the upstream pause.
    quota: Quota,
    /// Whether the stack below marks the start of its agent.
    marks_start: bool,
}

impl RunStep for RecordStep {
    type Error = RunFailure;

    fn not_ready(error: BoxError) -> RunFailure {
        RunFailure::classify(error, true)
    }

    fn run(&self, mut below: Below, mut request: Request<AgentRequest>) -> RunFuture<RunFailure> {
        let entry = request
            .extensions()
            .get::<Entry>()
            .copied()
            .unwrap_or(Entry::Job);
        let starting = AgentStarting::default();
        request.extensions_mut().insert(starting.clone());
        let key = request.extensions().get::<ChargeTo>().cloned();
        if let Some(ChargeTo(key)) = &key {
            let asked = request.body().max_budget_usd;
            request.body_mut().max_budget_usd = self.quota.cap_run_budget(key, asked);
            self.quota.saw(key);
        }
        let marks_start = self.marks_start;
        let timer = self.metrics.start_run(entry);
        let quota = self.quota.clone();
        let metrics = self.metrics.clone();
        let run = below.call(request);
        Box::pin(async move {
            let result = run.await.map_err(|error| {
                let started = !marks_start || starting.0.load(Ordering::Relaxed);
                RunFailure::classify(error, started)
            });
            if let Err(failure @ (RunFailure::Workspace(_) | RunFailure::TimedOutBeforeStart(_))) =
                &result
            {
                // The operator's problem (the base, git, the disk), not the caller's.
                tracing::warn!(error = %failure, "a run could not get its workspace");
            }
            if let Ok(outcome) = &result {
                // Charged before the caller hears back, so its next submission sees the spend.
                if let Some(ChargeTo(key)) = &key {
                    metrics.record_key_spend(key, crate::quota::spend_of(outcome));
                    quota.charge(key, outcome).await;
                }
            }
            timer.finish(run_end(result.as_ref()), result.as_ref().ok());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_a_run_comes_back_has_its_outcome() {
        let ok = AgentOutcome {
            exit_code: Some(0),
            ..AgentOutcome::default()
        };
        let reported_error = AgentOutcome {
            is_error: true,
            ..ok.clone()
        };
        let killed = AgentOutcome::default();
        assert_eq!(run_end(Ok(&ok)), RunEnd::Completed);
        assert_eq!(run_end(Ok(&reported_error)), RunEnd::Failed);
        assert_eq!(run_end(Ok(&killed)), RunEnd::Failed);
        let cases = [
            (RunFailure::TimedOut("7s".into()), RunEnd::Timeout),
            (RunFailure::Workspace("clone failed".into()), RunEnd::Error),
            (
                RunFailure::Agent(AgentError::OutputTooLarge { limit: 1 }),
                RunEnd::Error,
            ),
            (RunFailure::Internal("bug".into()), RunEnd::Error),
        ];
        for (failure, end) in cases {
            assert_eq!(run_end(Err(&failure)), end, "{failure}");
        }
    }

    #[test]
    fn errors_are_sorted_by_the_layer_that_raised_them() {
        let agent: BoxError = AgentError::Hung {
            after: Duration::from_secs(1),
        }
        .into();
        assert!(matches!(
            RunFailure::classify(agent, true),
            RunFailure::Agent(AgentError::Hung { .. })
        ));
        let other: BoxError = "boom".into();
        assert!(matches!(
            RunFailure::classify(other, true),
            RunFailure::Internal(_)
        ));
    }

    #[test]
    fn a_deadline_before_the_agent_started_says_so() {
        let elapsed: BoxError = Box::new(Elapsed::new(Duration::from_secs(1)));
        assert!(matches!(
            RunFailure::classify(elapsed, false),
            RunFailure::TimedOutBeforeStart(_)
        ));
    }
}
