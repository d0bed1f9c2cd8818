//! What a key may still submit: the budget refusal of each route in its callers' error shape, the
//! rate-limit headers on submissions and answers, and `GET /v1/quota`.
//!
//! # Headers
//!
//! On `/v1/*`, OpenAI's names, so clients that read them work unchanged:
//!
//! | header                           | meaning                                                     |
//! |----------------------------------|-------------------------------------------------------------|
//! | `x-ratelimit-limit-requests`     | the key's `max_queued` (runs it may have waiting)           |
//! | `x-ratelimit-remaining-requests` | `max_queued` less the key's queued runs now                 |
//! | `x-ratelimit-reset-requests`     | `0s`: a queued slot frees as soon as a run starts           |
//! | `x-ratelimit-limit-tokens`       | the key's token budget per window, when it has one          |
//! | `x-ratelimit-remaining-tokens`   | tokens left in the window                                   |
//! | `x-ratelimit-reset-tokens`       | time to the window's end (`1h2m3s`, OpenAI's format)        |
//!
//! The `-requests` ones are sent only when the key has a `max_queued`, the `-tokens` ones only
//! when it has a token budget. On `/execute` the same names are sent (one vocabulary for one
//! gateway), and a budget refusal carries `Retry-After` too.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use gateway_layers::auth::AuthenticatedCaller;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::anthropic::error::AnthropicError;
use crate::openai::error::OpenAiError;
use crate::quota::{Held, OverBudget, Standing};
use crate::routes::detail::DetailError;
use crate::routes::jobs::Caller;
use crate::routes::openapi::OpenAiAuthFailure;
use crate::state::AppState;

/// The refusal of an over-budget submission on the OpenAI routes: 429 `insufficient_quota`, with
/// `x-should-retry: false` (the official SDKs retry a 429 unless told not to: waiting seconds
/// does not bring a spent budget back) and `Retry-After` to the window's end.
pub(crate) fn openai_refusal(over: &OverBudget) -> Response {
    refusal(over, |status, message, seconds| {
        OpenAiError::new(status, "insufficient_quota", message)
            .code("insufficient_quota")
            .retry_after(seconds)
            .into_response()
    })
}

/// The refusal on `/v1/messages`: Anthropic's 429 `rate_limit_error` (its API has no quota
/// type), with `x-should-retry: false` and `Retry-After` to the window's end.
pub(crate) fn anthropic_refusal(over: &OverBudget) -> Response {
    refusal(over, |status, message, seconds| {
        AnthropicError::new(status, "rate_limit_error", message)
            .retry_after(seconds)
            .into_response()
    })
}

/// The refusal on `/execute`: 429 `{"detail": ...}` naming the reset time, `Retry-After` to the
/// window's end.
pub(crate) fn detail_refusal(over: &OverBudget) -> Response {
    refusal(over, |status, message, seconds| {
        DetailError::new(status, message)
            .retry_after(seconds)
            .into_response()
    })
}

/// The refusal of an over-budget submission, worded by `error` (given the status, the message and
/// the seconds to the window's end for `Retry-After`), and marked not to be retried.
fn refusal(over: &OverBudget, error: impl FnOnce(StatusCode, String, u64) -> Response) -> Response {
    let seconds = over.window.seconds_to_reset(Utc::now());
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, over.message(), seconds);
    no_retry(response.headers_mut());
    response
}

fn no_retry(headers: &mut HeaderMap) {
    headers.insert(
        HeaderName::from_static("x-should-retry"),
        HeaderValue::from_static("false"),
    );
}

/// The shape a route answers its errors in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `/execute`: `{"detail": ...}`.
    Detail,
    /// `/v1/chat/completions`, `/v1/responses`.
    OpenAi,
    /// `/v1/messages`.
    Anthropic,
}

/// The routes that start runs, and their error shapes.
fn submission(method: &http::Method, path: &str) -> Option<Shape> {
    if method != http::Method::POST {
        return None;
    }
    match path {
        "/execute" => Some(Shape::Detail),
        "/v1/chat/completions" | "/v1/responses" => Some(Shape::OpenAi),
        "/v1/messages" => Some(Shape::Anthropic),
        _ => None,
    }
}

/// Middleware under the auth layer of the routes that start runs: refuses a submission whose
/// key's budget is spent (before the handler reads the body, which is read here and dropped, so
/// a client still uploading gets the answer rather than a reset), and adds the rate-limit headers
/// to what the handler answers. Other routes pass through.
pub(crate) async fn guard(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(shape) = submission(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let key = request
        .extensions()
        .get::<AuthenticatedCaller>()
        .map(|caller| caller.name.to_string())
        .unwrap_or_default();
    let standing = match state.quota.admit(&key).await {
        Ok(standing) => standing,
        Err(over) => {
            state.metrics.record_budget_refusal(&key);
            let limit = state.config.max_body_bytes;
            let deadline = state.config.body_read_timeout;
            let body = request.into_body();
            let _ = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await;
            return match shape {
                Shape::Detail => detail_refusal(&over),
                Shape::OpenAi => openai_refusal(&over),
                Shape::Anthropic => anthropic_refusal(&over),
            };
        }
    };
    let mut response = next.run(request).await;
    add_headers(&state, &key, &standing, response.headers_mut()).await;
    response
}

/// `key`'s runs: this replica's (jobs and chat, from its gauge) and, with replicas on
/// PostgreSQL, its jobs in the shared queue and on the other replicas (one indexed query). A chat
/// run lives on the replica holding its connection and is counted there only.
async fn held(state: &AppState, key: &str) -> Held {
    let mut held = state.quota.held(key);
    if let Some((queued, running)) = state.jobs.held_elsewhere(key).await {
        held.queued += queued;
        held.running += running;
    }
    held
}

/// Adds the rate-limit headers of `key`'s `standing` (see the [module docs](self)).
pub(crate) async fn add_headers(
    state: &AppState,
    key: &str,
    standing: &Standing,
    headers: &mut HeaderMap,
) {
    let queued = match standing.policy.limits.max_queued {
        Some(_) => held(state, key).await.queued,
        None => 0,
    };
    put_headers(standing, queued, headers);
}

/// The rate-limit headers of a key's `standing`, with `queued` of its runs waiting.
fn put_headers(standing: &Standing, queued: usize, headers: &mut HeaderMap) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    if let Some(max_queued) = standing.policy.limits.max_queued {
        put("x-ratelimit-limit-requests", max_queued.to_string());
        put(
            "x-ratelimit-remaining-requests",
            max_queued.saturating_sub(queued).to_string(),
        );
        put("x-ratelimit-reset-requests", "0s".into());
    }
    if let Some(window) = &standing.window {
        if let (Some(limit), Some(left)) = (window.budget.tokens, window.tokens_left()) {
            put("x-ratelimit-limit-tokens", limit.to_string());
            put("x-ratelimit-remaining-tokens", left.to_string());
            put(
                "x-ratelimit-reset-tokens",
                openai_duration(window.end - Utc::now()),
            );
        }
    }
}

/// A duration the way OpenAI writes its reset headers: `1h2m3s`, `6m0s`, `12ms`.
fn openai_duration(delta: chrono::TimeDelta) -> String {
    let millis = delta.num_milliseconds().max(0);
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let secs = (millis + 999) / 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// `GET /v1/quota`: the caller's own limits and usage.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QuotaView {
    /// The key (token name) this is about: the caller's.
    pub key: String,
    /// The key's limits, from the policy in force.
    pub limits: Limits,
    /// The current budget window, when the key has a budget.
    pub window: Option<WindowView>,
    /// The key's runs waiting for a slot: on this gateway; with replicas on PostgreSQL, its jobs
    /// on every replica and in the shared queue, and its chat runs on this replica.
    pub queued: usize,
    /// The key's runs holding a slot, counted as `queued` is.
    pub running: usize,
    /// When dispatch is paused because the account behind the CLI is rate-limited: until when
    /// (RFC 3339); `null` otherwise.
    pub dispatch_paused_until: Option<String>,
}

/// A key's limits.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Limits {
    /// Share of the run slots when keys compete.
    pub weight: u32,
    /// Runs at once; `null`: only the global bound.
    pub max_concurrent: Option<usize>,
    /// Runs waiting; `null`: only the global bound.
    pub max_queued: Option<usize>,
    /// USD per window; `null`: not limited.
    pub budget_usd: Option<f64>,
    /// Input plus output tokens per window; `null`: not limited.
    pub budget_tokens: Option<u64>,
    /// The window's length in seconds; `null` without a budget.
    pub budget_window_seconds: Option<u64>,
    /// The `--max-budget-usd` each run gets at most; `null`: only `MAX_BUDGET_USD`.
    pub max_budget_usd_per_job: Option<f64>,
}

/// The current budget window.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WindowView {
    /// When it began (RFC 3339).
    pub start: String,
    /// When it ends and the budget resets (RFC 3339).
    pub resets_at: String,
    /// USD spent in it.
    pub used_usd: f64,
    /// Tokens spent in it.
    pub used_tokens: u64,
    /// Whether the budget is spent: submissions get 429 `insufficient_quota` until `resets_at`.
    pub exhausted: bool,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The caller's own quota.
#[utoipa::path(
    get,
    path = "/v1/quota",
    operation_id = "getQuota",
    summary = "The caller's limits and usage",
    description = "The calling key's limits (from `API_KEY_POLICY_FILE`), what it spent in the current budget window and when that resets, its queued and running runs, and whether dispatch is paused by the upstream rate limit.",
    tag = "openai",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's quota", body = QuotaView),
        OpenAiAuthFailure
    )
)]
pub(crate) async fn get_quota(State(state): State<AppState>, Caller(key): Caller) -> Response {
    let standing = state.quota.standing(&key).await;
    let held = held(&state, &key).await;
    let policy = &standing.policy;
    let budget = policy.budget.as_ref();
    let view = QuotaView {
        key: key.clone(),
        limits: Limits {
            weight: policy.limits.weight,
            max_concurrent: policy.limits.max_concurrent,
            max_queued: policy.limits.max_queued,
            budget_usd: budget.and_then(|b| b.usd),
            budget_tokens: budget.and_then(|b| b.tokens),
            budget_window_seconds: budget.map(|b| b.window.as_secs()),
            max_budget_usd_per_job: policy.max_budget_usd_per_job,
        },
        window: standing.window.as_ref().map(|w| WindowView {
            start: rfc3339(w.start),
            resets_at: rfc3339(w.end),
            used_usd: w.spent.usd,
            used_tokens: w.spent.tokens,
            exhausted: w.is_spent(),
        }),
        queued: held.queued,
        running: held.running,
        dispatch_paused_until: state.quota.dispatch().paused_until().map(rfc3339),
    };
    let mut response = Json(view).into_response();
    // The same count as the body's, so the two agree.
    put_headers(&standing, held.queued, response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_the_way_openai_writes_them() {
        let d = chrono::TimeDelta::milliseconds;
        assert_eq!(openai_duration(d(12)), "12ms");
        assert_eq!(openai_duration(d(2_500)), "3s");
        assert_eq!(openai_duration(d(360_000)), "6m0s");
        assert_eq!(openai_duration(d(3_723_000)), "1h2m3s");
    }
}
