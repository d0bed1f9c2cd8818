//! Budgets and the upstream quota: what each key spent, whether it may submit more, and whether
//! the account behind the CLI lets anything run at all.
//!
//! # Budgets
//!
//! Every run's reported `total_cost_usd` and tokens (input + output) are charged to its key's
//! current budget window when the run ends, in the job store (`key_spend`, added to in the store,
//! so replicas sharing PostgreSQL all count and a restart keeps it). The window is the one the
//! run *ended* in ([`Budget::window_at`] of the end time). Keys without a budget are not charged
//! to the store (the metrics still count their spend), so a budget added later starts from zero.
//!
//! A submission whose key has spent its budget in the current window is refused (429,
//! `insufficient_quota`) until the window ends. Runs already queued or running when the budget is
//! crossed are left to finish, and their cost is charged (so a window can end a little over its
//! budget: by at most what was in flight); each run's `--max-budget-usd` is capped at the key's
//! `max_budget_usd_per_job`, which bounds that overrun per run.
//!
//! # Upstream quota
//!
//! When a run reports that the account is rate-limited (see [`upstream_limit`]), dispatch is
//! paused until the reset time the run gave, or for a capped back-off (5 s doubling to 5 min)
//! when it gave none: queued runs stay queued, running ones go on, and dispatch resumes by
//! itself at that time. See [`Dispatch`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gateway_layers::admission::{Gauge, Ticket};

use crate::agent::AgentOutcome;
use crate::policy::{Budget, KeyPolicy, Policies, Spend};

/// A request extension naming the key (token name) a run is charged to. A run without it (a
/// stand-in stack in tests) is charged to nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChargeTo(pub(crate) String);

/// What a ledger method returns.
pub(crate) type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where spend is kept: the job store (see `jobs::StoreLedger`), reached through this trait so
/// the run stack, below the jobs, needs no path up to them.
pub(crate) trait Ledger: Send + Sync + 'static {
    /// Adds `spend` to what `owner` spent in `window`.
    fn charge(
        &self,
        owner: String,
        window: (DateTime<Utc>, DateTime<Utc>),
        spend: Spend,
    ) -> LedgerFuture<'_, ()>;

    /// What `owner` spent in `window`.
    fn spent(
        &self,
        owner: String,
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> LedgerFuture<'_, Spend>;
}

/// Where the upstream pause is shared with the other replicas (the PostgreSQL store), so that a
/// refusal seen by one stops dispatch on all; a single process has none.
pub(crate) trait PauseBoard: Send + Sync + 'static {
    /// Pauses dispatch on every replica until `until`, or later when a pause in force ends later.
    fn publish(&self, until: DateTime<Utc>) -> LedgerFuture<'_, ()>;
}

/// Budgets and the upstream pause, shared by the routes (admission), the run stack (charging,
/// the per-run cap, the pause) and `/health`. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Quota {
    inner: Arc<Inner>,
}

struct Inner {
    /// The policy in force.
    policies: Arc<Policies>,
    /// The job store, once it is open (the run stack is built before it).
    ledger: OnceLock<Arc<dyn Ledger>>,
    /// The upstream pause.
    dispatch: Dispatch,
    /// The shared gauge: each key's queued and running runs.
    gauge: Gauge,
    /// Every key that has had runs here, so the per-key gauges fall back to zero rather than
    /// keep their last value (the keys are the configured names, so few).
    seen: Mutex<std::collections::BTreeSet<String>>,
}

/// A key's runs on this gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// Waiting for a slot.
    pub(crate) queued: usize,
    /// Holding a slot.
    pub(crate) running: usize,
}

/// A key's standing at admission: its policy, and its budget window when it has one.
#[derive(Debug, Clone)]
pub(crate) struct Standing {
    /// The key's policy.
    pub(crate) policy: KeyPolicy,
    /// The budget's current window and what was spent in it.
    pub(crate) window: Option<Window>,
}

/// A budget's current window.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// The budget.
    pub(crate) budget: Budget,
    /// When the window began.
    pub(crate) start: DateTime<Utc>,
    /// When it ends: the reset time.
    pub(crate) end: DateTime<Utc>,
    /// Spent in it so far.
    pub(crate) spent: Spend,
}

impl Window {
    /// Whether the budget is spent.
    pub(crate) fn is_spent(&self) -> bool {
        self.budget.is_spent(&self.spent)
    }

    /// Whole seconds from `now` to the window's end, at least 1 (for `Retry-After`).
    pub(crate) fn seconds_to_reset(&self, now: DateTime<Utc>) -> u64 {
        let micros = (self.end - now).num_microseconds().unwrap_or(i64::MAX);
        u64::try_from(micros.max(0))
            .unwrap_or(0)
            .div_ceil(1_000_000)
            .max(1)
    }

    /// Tokens left in the window, when tokens are limited.
    pub(crate) fn tokens_left(&self) -> Option<u64> {
        self.budget
            .tokens
            .map(|limit| limit.saturating_sub(self.spent.tokens))
    }
}

/// A submission refused because its key's budget is spent.
#[derive(Debug, Clone)]
pub(crate) struct OverBudget {
    /// The key's window, spent.
    pub(crate) window: Window,
}

impl OverBudget {
    /// The refusal's message, naming the reset time.
    pub(crate) fn message(&self) -> String {
        let w = &self.window;
        let mut limits = Vec::new();
        if let Some(usd) = w.budget.usd {
            limits.push(format!("{:.4} of {usd} USD", w.spent.usd));
        }
        if let Some(tokens) = w.budget.tokens {
            limits.push(format!("{} of {tokens} tokens", w.spent.tokens));
        }
        format!(
            "this key's budget for the current window is spent ({}); it resets at {}",
            limits.join(", "),
            w.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

impl Quota {
    /// Budgets under `policies`, pausing dispatch of `gauge`; no ledger until
    /// [`attach`](Self::attach).
    pub(crate) fn new(policies: Arc<Policies>, gauge: Gauge) -> Self {
        Self {
            inner: Arc::new(Inner {
                policies,
                ledger: OnceLock::new(),
                dispatch: Dispatch::new(gauge.clone()),
                gauge,
                seen: Mutex::new(std::collections::BTreeSet::new()),
            }),
        }
    }

    /// Where spend is kept, once the store is open. Later calls change nothing.
    pub(crate) fn attach(&self, ledger: Arc<dyn Ledger>) {
        let _ = self.inner.ledger.set(ledger);
    }

    /// Shares the upstream pause with the other replicas through `board`, once the store is
    /// open. Later calls change nothing.
    pub(crate) fn share_pause(&self, board: Arc<dyn PauseBoard>) {
        let _ = self.inner.dispatch.board.set(board);
    }

    /// The upstream pause.
    pub(crate) fn dispatch(&self) -> &Dispatch {
        &self.inner.dispatch
    }

    /// The policy of `key` in force now.
    pub(crate) fn policy(&self, key: &str) -> KeyPolicy {
        self.inner.policies.current().for_key(key).clone()
    }

    /// `key`'s policy and, with a budget, its current window and spend. A store that cannot be
    /// read counts as nothing spent (logged): an outage of the store must not shut every caller
    /// out.
    pub(crate) async fn standing(&self, key: &str) -> Standing {
        let policy = self.policy(key);
        let window = match &policy.budget {
            Some(budget) => {
                let (start, end) = budget.window_at(Utc::now());
                let spent = match self.inner.ledger.get() {
                    Some(ledger) => match ledger.spent(key.to_owned(), (start, end)).await {
                        Ok(spent) => spent,
                        Err(error) => {
                            tracing::warn!(key, %error, "could not read a key's spend; admitting");
                            Spend::default()
                        }
                    },
                    None => Spend::default(),
                };
                Some(Window {
                    budget: budget.clone(),
                    start,
                    end,
                    spent,
                })
            }
            None => None,
        };
        Standing { policy, window }
    }

    /// Admission: `key`'s standing, or why its submission is refused.
    pub(crate) async fn admit(&self, key: &str) -> Result<Standing, OverBudget> {
        let standing = self.standing(key).await;
        match &standing.window {
            Some(window) if window.is_spent() => Err(OverBudget {
                window: window.clone(),
            }),
            _ => Ok(standing),
        }
    }

    /// Charges a run of `key` that ended now and reported `outcome`'s cost and tokens.
    pub(crate) async fn charge(&self, key: &str, outcome: &AgentOutcome) {
        let spend = spend_of(outcome);
        if spend == Spend::default() {
            return;
        }
        let Some(budget) = self.policy(key).budget else {
            return;
        };
        let Some(ledger) = self.inner.ledger.get() else {
            return;
        };
        let window = budget.window_at(Utc::now());
        if let Err(error) = ledger.charge(key.to_owned(), window, spend).await {
            tracing::error!(key, %error, usd = spend.usd, tokens = spend.tokens, "could not charge a run's spend to its key");
        }
    }

    /// The `--max-budget-usd` a run of `key` gets: `asked`, capped at the key's
    /// `max_budget_usd_per_job`.
    pub(crate) fn cap_run_budget(&self, key: &str, asked: f64) -> f64 {
        match self.policy(key).max_budget_usd_per_job {
            Some(cap) => asked.min(cap),
            None => asked,
        }
    }

    /// A new place in the queue for a run of `key` accepted earlier (one going back to the queue),
    /// beyond the depth, under the key's weight and `max_concurrent` in force now.
    pub(crate) fn readmit(&self, key: &str) -> Ticket {
        let limits = self.inner.policies.current().for_key(key).limits;
        self.inner.gauge.admit_unchecked_for(Arc::from(key), limits)
    }

    /// `key`'s runs on this gateway, from the gauge.
    pub(crate) fn held(&self, key: &str) -> Held {
        let snapshot = self.inner.gauge.key_snapshot(key);
        if snapshot.queued + snapshot.running > 0 {
            self.lock_seen().insert(key.to_owned());
        }
        Held {
            queued: snapshot.queued,
            running: snapshot.running,
        }
    }

    /// Every key that has had runs on this gateway, with its runs now.
    pub(crate) fn held_by_key(&self) -> Vec<(String, Held)> {
        let keys: Vec<String> = self.lock_seen().iter().cloned().collect();
        keys.into_iter()
            .map(|key| {
                let held = self.held(&key);
                (key, held)
            })
            .collect()
    }

    /// Notes that `key` has runs, for [`held_by_key`](Self::held_by_key).
    pub(crate) fn saw(&self, key: &str) {
        self.lock_seen().insert(key.to_owned());
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("paused_until", &self.inner.dispatch.paused_until())
            .finish_non_exhaustive()
    }
}

/// What a run reported spending: its `total_cost_usd`, and its input plus output tokens.
pub(crate) fn spend_of(outcome: &AgentOutcome) -> Spend {
    let usd = outcome
        .cost_usd
        .filter(|usd| usd.is_finite() && *usd > 0.0)
        .unwrap_or(0.0);
    let tokens = outcome.usage.as_ref().map_or(0, |usage| {
        usage.input_tokens.saturating_add(usage.output_tokens)
    });
    Spend { usd, tokens }
}

// The upstream pause.

/// The first back-off when a rate-limited run gave no reset time.
pub(crate) const BACKOFF_START: Duration = Duration::from_secs(5);
/// The longest back-off.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Whether dispatch is paused because the account is rate-limited, and until when.
///
/// The pause is the gauge's ([`Gauge::pause_until`]): queued runs stay queued, running ones go on,
/// and the gauge resumes dispatch by itself at the end. This keeps the wall-clock end beside it,
/// for `/health`, `/v1/quota` and the jobs' `queued_reason`. A pause only ever moves later: a run
/// that reports an earlier reset than one in force does not shorten it.
///
/// With replicas, a pause is published to the others ([`PauseBoard`]), and one they published
/// is taken up here ([`adopt`](Self::adopt)), so every replica pauses together.
pub(crate) struct Dispatch {
    /// Whose dispatch is paused.
    gauge: Gauge,
    /// Where pauses are shared with the other replicas, when there are any.
    board: OnceLock<Arc<dyn PauseBoard>>,
    /// The end of the last pause (`None`: never paused).
    until: Mutex<Option<DateTime<Utc>>>,
    /// The back-off the next pause without a reset time gets.
    backoff: Mutex<Duration>,
}

impl Dispatch {
    fn new(gauge: Gauge) -> Self {
        Self {
            gauge,
            board: OnceLock::new(),
            until: Mutex::new(None),
            backoff: Mutex::new(BACKOFF_START),
        }
    }

    /// The end of the pause in force, if dispatch is paused now.
    pub(crate) fn paused_until(&self) -> Option<DateTime<Utc>> {
        self.gauge.paused_until()?;
        let until = (*self.until.lock().unwrap_or_else(PoisonError::into_inner))?;
        (until > Utc::now()).then_some(until)
    }

    /// Pauses dispatch until `reset`, or for the next back-off when the run gave none; returns
    /// the end of the pause in force.
    pub(crate) fn pause(&self, reset: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let now = Utc::now();
        let end = match reset.filter(|reset| *reset > now) {
            Some(reset) => reset,
            None => {
                let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
                let wait = *backoff;
                *backoff = (wait * 2).min(BACKOFF_CAP);
                now + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::MAX)
            }
        };
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match *until {
            Some(current) if current > end && self.gauge.paused_until().is_some() => current,
            _ => end,
        };
        *until = Some(result);
        let left = (result - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        self.gauge.pause_until(tokio::time::Instant::now() + left);
        drop(until);
        tracing::warn!(paused_until = %result.to_rfc3339(), "the account is rate-limited: dispatch paused");
        if let Some(board) = self.board.get().cloned() {
            // In the background: the run's slot is freed only once this returns.
            tokio::spawn(async move {
                if let Err(error) = board.publish(result).await {
                    tracing::warn!(%error, "could not share the upstream pause with the other replicas");
                }
            });
        }
        result
    }

    /// Pauses dispatch here until `until`, a pause another replica published (see
    /// [`PauseBoard`]): only ever later than a pause in force, and without a back-off step.
    pub(crate) fn adopt(&self, until: DateTime<Utc>) {
        let now = Utc::now();
        if until <= now {
            return;
        }
        let mut current = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*current, Some(end) if end >= until) && self.gauge.paused_until().is_some() {
            return;
        }
        *current = Some(until);
        let left = (until - now).to_std().unwrap_or(Duration::ZERO);
        self.gauge.pause_until(tokio::time::Instant::now() + left);
        drop(current);
        tracing::warn!(paused_until = %until.to_rfc3339(), "another replica found the account rate-limited: dispatch paused");
    }

    /// A run succeeded: the back-off starts over.
    pub(crate) fn succeeded(&self) {
        *self.backoff.lock().unwrap_or_else(PoisonError::into_inner) = BACKOFF_START;
    }
}

/// Whether `outcome` says the account behind the CLI is rate-limited, and when the limit resets
/// if it said: a `rate_limit_event` with `status: rejected` in its stream (which carries
/// `resetsAt`), or a result that failed on the API's rate-limit error (`api_error_status: 429`,
/// `api_error_type: rate_limit_error`), which carries no reset time, so that case backs off. The
/// pinned CLI sends the event only when it reads the API's unified rate-limit headers: for a
/// claude.ai (OAuth) login, or a token issued for the `claude-gateway` audience in front of a base
/// URL that is not Anthropic's; with an API key it reports the failed result alone.
pub(crate) fn upstream_limit(outcome: &AgentOutcome) -> Option<Option<DateTime<Utc>>> {
    let reset = outcome
        .rate_limit
        .as_ref()
        .and_then(|limit| limit.resets_at);
    if outcome
        .rate_limit
        .as_ref()
        .is_some_and(|limit| limit.rejected)
    {
        return Some(reset);
    }
    if !outcome.is_error {
        return None;
    }
    let result: serde_json::Value = serde_json::from_str(outcome.result_line.as_deref()?).ok()?;
    let failed_on_limit = result
        .get("api_error_type")
        .and_then(serde_json::Value::as_str)
        == Some("rate_limit_error")
        || result
            .get("api_error_status")
            .and_then(serde_json::Value::as_u64)
            == Some(429);
    failed_on_limit.then_some(reset)
}

/// Whether a run failed only because the account is rate-limited: it did not succeed, and it
/// reported the limit ([`upstream_limit`]). Such a run goes back to the queue once (a job in its
/// task, a chat run in the `requeue` module).
pub(crate) fn refused_upstream(outcome: &AgentOutcome) -> bool {
    !outcome.succeeded() && upstream_limit(outcome).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::RateLimit;

    fn outcome(result: &str) -> AgentOutcome {
        let value: serde_json::Value = serde_json::from_str(result).unwrap();
        AgentOutcome {
            is_error: value["is_error"].as_bool().unwrap_or(false),
            result_line: Some(result.to_owned()),
            ..AgentOutcome::default()
        }
    }

    #[test]
    fn a_result_refused_with_429_is_an_upstream_limit_without_a_reset() {
        let refused = outcome(
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error_type":"rate_limit_error","result":"API Error: Request rejected (429)"}"#,
        );
        assert_eq!(upstream_limit(&refused), Some(None));
        let overloaded = outcome(
            r#"{"type":"result","is_error":true,"api_error_status":529,"api_error_type":"overloaded_error"}"#,
        );
        assert_eq!(upstream_limit(&overloaded), None);
        let fine = outcome(r#"{"type":"result","is_error":false,"result":"429 apples"}"#);
        assert_eq!(upstream_limit(&fine), None);
    }

    #[test]
    fn a_rejected_rate_limit_event_gives_its_reset() {
        let event = serde_json::json!({"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": 1_900_000_000, "rateLimitType": "five_hour"}});
        let limit = RateLimit::from_event(&event).unwrap();
        let outcome = AgentOutcome {
            rate_limit: Some(limit),
            ..AgentOutcome::default()
        };
        let reset = DateTime::from_timestamp(1_900_000_000, 0);
        assert_eq!(upstream_limit(&outcome), Some(reset));
        let allowed = serde_json::json!({"type": "rate_limit_event", "rate_limit_info": {"status": "allowed_warning"}});
        let outcome = AgentOutcome {
            rate_limit: RateLimit::from_event(&allowed),
            ..AgentOutcome::default()
        };
        assert_eq!(upstream_limit(&outcome), None);
    }

    #[tokio::test]
    async fn pauses_back_off_from_5_s_to_5_min_and_only_move_later() {
        let gauge = Gauge::new(1, 10);
        let dispatch = Dispatch::new(gauge.clone());
        assert_eq!(dispatch.paused_until(), None);
        let first = dispatch.pause(None);
        let left = (first - Utc::now()).num_milliseconds();
        assert!((4_000..=5_000).contains(&left), "{left}");
        let second = dispatch.pause(None);
        assert!(
            second - Utc::now() > chrono::TimeDelta::seconds(9),
            "doubled"
        );
        // An earlier reset does not shorten the pause in force.
        let earlier = Utc::now() + chrono::TimeDelta::seconds(1);
        assert_eq!(dispatch.pause(Some(earlier)), second);
        for _ in 0..10 {
            dispatch.pause(None);
        }
        assert_eq!(*dispatch.backoff.lock().unwrap(), BACKOFF_CAP);
        dispatch.succeeded();
        assert_eq!(*dispatch.backoff.lock().unwrap(), BACKOFF_START);
    }
}
