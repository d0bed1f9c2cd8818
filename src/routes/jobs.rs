//! `POST /execute`, `GET /jobs`, `GET|DELETE /jobs/{job_id}` and `GET /jobs/{job_id}/events`.
//!
//! Bodies and errors keep the replaced service's shapes (`{"detail": ...}`, 202 with
//! `{"job_id", "status": "queued"}`, 404 `Job not found`). A job is visible only to the token
//! that created it: to anyone else it answers as unknown.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gateway_layers::admission::Ticket;
use gateway_layers::auth::AuthenticatedCaller;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Deserializer};

use crate::agent::check_agent_name;
use crate::jobs::{
    CancelError, Cursor, EventKind, JobRecord, JobStatus, ListQuery, NewJob, StoreError,
    StoreErrorKind, SubmitError,
};
use crate::routes::detail::DetailError;
use crate::state::AppState;

/// `max_budget_usd` when the body gives none (the contract's default).
const DEFAULT_BUDGET_USD: f64 = 5.0;
/// `timeout_seconds` when the body gives none (the contract's default).
const DEFAULT_TIMEOUT_SECONDS: u64 = 2700;
/// Jobs per page when `limit` is not given.
const DEFAULT_PAGE: usize = 50;
/// The largest page.
const MAX_PAGE: usize = 500;

/// The body of `POST /execute`. Unknown fields are ignored, as the replaced service did.
#[derive(Debug, Deserialize)]
struct ExecuteBody {
    prompt: String,
    agent: String,
    #[serde(default = "default_budget")]
    max_budget_usd: f64,
    #[serde(default = "default_timeout", deserialize_with = "whole_seconds")]
    timeout_seconds: u64,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Starts allowed: past 1, a job the gateway stopped while it ran is queued again.
    #[serde(default)]
    max_attempts: Option<u32>,
}

fn default_budget() -> f64 {
    DEFAULT_BUDGET_USD
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}

/// Seconds as an integer, or a float with no fractional part (`60.0`), which the replaced
/// service's validation accepted too.
fn whole_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(d)?;
    if let Some(n) = number.as_u64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= 0.0 && f <= u64::MAX as f64 => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!(
            "timeout_seconds must be a positive whole number of seconds, got {number}"
        ))),
    }
}

fn invalid(detail: impl Into<String>) -> DetailError {
    DetailError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
}

fn unprocessable(detail: impl Into<String>) -> Response {
    invalid(detail).into_response()
}

fn not_found() -> Response {
    DetailError::new(StatusCode::NOT_FOUND, "Job not found").into_response()
}

/// Seconds a caller turned away by a store in trouble is told to wait.
const STORE_RETRY_AFTER_SECONDS: u64 = 5;

fn store_failed(error: StoreError) -> Response {
    tracing::error!(%error, "job store failed");
    let detail = match error.kind() {
        StoreErrorKind::Full => format!(
            "the job store is full (no space left on its disk), so nothing was recorded; try again later ({error})"
        ),
        StoreErrorKind::Unavailable => error.to_string(),
    };
    DetailError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        .retry_after(STORE_RETRY_AFTER_SECONDS)
        .into_response()
}

/// The caller's token name: jobs belong to it.
fn owner(caller: Option<Extension<AuthenticatedCaller>>) -> String {
    caller
        .map(|Extension(c)| c.name.to_string())
        .unwrap_or_default()
}

/// Checks the body and turns it into a job of `owner`, or says what is wrong with it (422).
/// `max_attempts` may be at most `attempts_limit` (`MAX_JOB_ATTEMPTS`).
fn new_job(owner: String, body: &[u8], attempts_limit: u32) -> Result<NewJob, DetailError> {
    let body: ExecuteBody = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    if body.prompt.trim().is_empty() {
        return Err(invalid("prompt must not be empty"));
    }
    if let Err(why) = check_agent_name(&body.agent) {
        return Err(invalid(format!(
            "agent {:?} is not usable: {why}",
            body.agent
        )));
    }
    if !(body.max_budget_usd.is_finite() && body.max_budget_usd > 0.0) {
        return Err(invalid(format!(
            "max_budget_usd must be a positive number of dollars, got {}",
            body.max_budget_usd
        )));
    }
    if body.timeout_seconds == 0 {
        return Err(invalid("timeout_seconds must be at least 1"));
    }
    let max_attempts = body.max_attempts.unwrap_or(1);
    if !(1..=attempts_limit).contains(&max_attempts) {
        return Err(invalid(format!(
            "max_attempts must be between 1 and {attempts_limit}, got {max_attempts}"
        )));
    }
    Ok(NewJob {
        owner,
        prompt: body.prompt,
        agent: body.agent,
        max_budget_usd: body.max_budget_usd,
        timeout_seconds: body.timeout_seconds,
        metadata: body.metadata,
        max_attempts,
    })
}

/// `POST /execute`: records a job and starts it; answers 202 at once.
///
/// The admission layer in front already counted the job as queued (or answered 429); its ticket
/// moves into the job, so the slot is the job's for as long as it is queued or running.
pub(crate) async fn execute(
    State(state): State<AppState>,
    caller: Option<Extension<AuthenticatedCaller>>,
    ticket: Option<Extension<Ticket>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return DetailError::new(rejection.status(), rejection.body_text()).into_response()
        }
    };
    let job = match new_job(owner(caller), &body, state.config.max_job_attempts) {
        Ok(job) => job,
        Err(error) => return error.into_response(),
    };
    match state.jobs.submit(job, ticket.map(|Extension(t)| t)).await {
        Ok(record) => {
            let mut response = (StatusCode::ACCEPTED, Json(record.id_and_status())).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/jobs/{}", record.job_id)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(SubmitError::ShuttingDown) => {
            DetailError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
        }
        Err(SubmitError::Store(error)) => store_failed(error),
    }
}

/// Query of `GET /jobs`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    /// Only jobs in this status.
    status: Option<String>,
    /// Page size, 1 to 500; 50 when absent.
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /jobs`: the caller's jobs, newest first, as summaries (no prompt, output, stderr or
/// result): `{"jobs": [...], "next_cursor": "..." | null}`.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Option<Extension<AuthenticatedCaller>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return unprocessable(rejection.body_text()),
    };
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => match text.parse::<JobStatus>() {
            Ok(status) => Some(status),
            Err(error) => return unprocessable(error.to_string()),
        },
        None => None,
    };
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return unprocessable(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}"
        ));
    }
    let cursor = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => match Cursor::decode(text) {
            Ok(cursor) => Some(cursor),
            Err(error) => return unprocessable(error.to_string()),
        },
        None => None,
    };
    let query = ListQuery {
        owner: owner(caller),
        status,
        limit,
        cursor,
    };
    match state.jobs.list(query).await {
        Ok(page) => Json(serde_json::json!({
            "jobs": page.jobs,
            "next_cursor": page.next_cursor.map(|c| c.encode()),
        }))
        .into_response(),
        Err(error) => store_failed(error),
    }
}

/// `GET /jobs/{job_id}`: the record; 404 `Job not found` when unknown or another caller's.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Option<Extension<AuthenticatedCaller>>,
    Path(job_id): Path<String>,
) -> Response {
    match state.jobs.get(&owner(caller), &job_id).await {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => not_found(),
        Err(error) => store_failed(error),
    }
}

/// `DELETE /jobs/{job_id}`: cancels a queued or running job and answers its final record (status
/// `error`, saying it was cancelled) once its run is gone; 409 when it had already finished.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Option<Extension<AuthenticatedCaller>>,
    Path(job_id): Path<String>,
) -> Response {
    match state.jobs.cancel(&owner(caller), &job_id).await {
        Ok(record) => Json(record).into_response(),
        Err(CancelError::NotFound) => not_found(),
        Err(CancelError::Finished) => {
            DetailError::new(StatusCode::CONFLICT, "Job already finished").into_response()
        }
        Err(CancelError::Store(error)) => store_failed(error),
    }
}

/// `GET /jobs/{job_id}/events`: Server-Sent Events of the job, replayed from the start (or from
/// after `Last-Event-ID`) and followed live: `status` on each status change, `agent` for each
/// stream-json event of the agent, `truncated` if the agent's events went past the output cap,
/// and last `end` with the final record, after which the stream closes.
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Option<Extension<AuthenticatedCaller>>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let owner = owner(caller);
    // A reconnecting client resumes after the last event it had.
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |last| last.saturating_add(1));
    let mut subscription = match state.jobs.events(&owner, &job_id, from).await {
        Ok(Some(subscription)) => subscription,
        Ok(None) => return not_found(),
        Err(error) => return store_failed(error),
    };
    let jobs = state.jobs.clone();
    let stream = async_stream::stream! {
        // Ends at the end marker, or without one when the gateway stops (the client resumes
        // with `Last-Event-ID`), or when the store cannot be read.
        while let Ok(Some(batch)) = subscription.next_batch().await {
            for event in batch {
                let mut sse = Event::default().event(event.kind.name()).id(event.seq.to_string());
                if event.kind == EventKind::End {
                    // The final record is read at the end rather than kept in the log twice.
                    let data = match jobs.get(&owner, &job_id).await {
                        Ok(Some(record)) => record_json(&record),
                        _ => event.data.to_string(),
                    };
                    yield Ok::<_, Infallible>(sse.data(data));
                    return;
                }
                sse = sse.data(&*event.data);
                yield Ok(sse);
            }
        }
    };
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies that buffer responses would hold the events back until the end.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn record_json(record: &JobRecord) -> String {
    serde_json::to_string(record).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<NewJob, (StatusCode, String)> {
        new_job("o".into(), body.as_bytes(), 3)
            .map_err(|e| (e.into_response().status(), String::new()))
    }

    #[test]
    fn defaults_are_the_contracts() {
        let job = parse(r#"{"prompt":"p","agent":"a"}"#).unwrap();
        assert_eq!(job.max_budget_usd, 5.0);
        assert_eq!(job.timeout_seconds, 2700);
        assert_eq!(job.metadata, None);
        assert_eq!(job.max_attempts, 1);
        let job = parse(
            r#"{"prompt":"p","agent":"a","timeout_seconds":60.0,"metadata":{"k":1},"extra":true}"#,
        )
        .unwrap();
        assert_eq!(job.timeout_seconds, 60);
        assert!(job.metadata.is_some());
    }

    #[test]
    fn bad_bodies_are_422() {
        for body in [
            "",
            "not json",
            r#"{"agent":"a"}"#,
            r#"{"prompt":"p"}"#,
            r#"{"prompt":1,"agent":"a"}"#,
            r#"{"prompt":" ","agent":"a"}"#,
            r#"{"prompt":"p","agent":"--model"}"#,
            r#"{"prompt":"p","agent":"a","timeout_seconds":0}"#,
            r#"{"prompt":"p","agent":"a","timeout_seconds":-5}"#,
            r#"{"prompt":"p","agent":"a","timeout_seconds":1.5}"#,
            r#"{"prompt":"p","agent":"a","max_budget_usd":0}"#,
            r#"{"prompt":"p","agent":"a","max_budget_usd":"5"}"#,
            r#"{"prompt":"p","agent":"a","metadata":[1]}"#,
            r#"{"prompt":"p","agent":"a","max_attempts":0}"#,
            r#"{"prompt":"p","agent":"a","max_attempts":4}"#,
            r#"{"prompt":"p","agent":"a","max_attempts":-1}"#,
        ] {
            assert_eq!(
                parse(body).map(|_| ()).map_err(|e| e.0),
                Err(StatusCode::UNPROCESSABLE_ENTITY),
                "{body}"
            );
        }
    }
}
