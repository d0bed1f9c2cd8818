//! `POST /execute`, `GET /jobs`, `GET|DELETE /jobs/{job_id}`, `GET /jobs/{job_id}/events` and
//! `GET /jobs/{job_id}/diff`.
//!
//! Bodies and errors keep the replaced service's shapes (`{"detail": ...}`, 202 with
//! `{"job_id", "status": "queued"}`, 404 `Job not found`). A job is visible only to the token
//! that created it: to anyone else it answers as unknown.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gateway_layers::auth::AuthenticatedCaller;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::agent::{check_agent_name, check_budget, OptionError, OptionPolicy, RunOptions};
use crate::bounds::{Refusal, RETRY_AFTER_SECONDS};
use crate::jobs::{
    CancelError, ContinueError, Cursor, EventKind, JobRecord, JobStatus, JobSummary, ListQuery,
    NewJob, StoreError, StoreErrorKind, SubmitError,
};
use crate::metrics::Entry;
use crate::routes::detail::{Detail, DetailError};
use crate::routes::large::{record_cost, record_response};
use crate::routes::openapi::{JobAuthFailure, JobEvent, JobLookupFailure, StoreFailure};
use crate::state::AppState;
use crate::workspace::{check_branch, DeliverRequest, MAX_COMMIT_MESSAGE};

/// `max_budget_usd` when the body gives none (the contract's default).
const DEFAULT_BUDGET_USD: f64 = 5.0;
/// `timeout_seconds` when the body gives none (the contract's default).
const DEFAULT_TIMEOUT_SECONDS: u64 = 2700;
/// Jobs per page when `limit` is not given.
const DEFAULT_PAGE: usize = 50;
/// The largest page.
const MAX_PAGE: usize = 500;

/// The body of `POST /execute`. Unknown fields are ignored, as the replaced service did.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"prompt": "Summarise the README", "agent": "general-purpose", "timeout_seconds": 600}))]
struct ExecuteBody {
    /// The prompt, sent to the agent on stdin; not blank.
    prompt: String,
    /// The agent to run (a plain name: `general-purpose`, or one of the workspace's agents).
    agent: String,
    /// Budget in USD, positive, at most `MAX_BUDGET_USD`; 5 when absent.
    #[serde(default = "default_budget")]
    max_budget_usd: f64,
    /// Deadline of the run in whole seconds, queue time not counted, at most
    /// `MAX_TIMEOUT_SECONDS`; 2700 when absent.
    #[serde(default = "default_timeout", deserialize_with = "whole_seconds")]
    #[schema(minimum = 1)]
    timeout_seconds: u64,
    /// The caller's own data, kept on the record.
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Starts allowed: past 1, a job the gateway stopped while it ran is queued again.
    #[serde(default)]
    max_attempts: Option<u32>,
    /// An earlier job of the caller's whose session this one continues.
    #[serde(default)]
    continue_from: Option<String>,
    /// Once the run's processes are gone, commit what it left uncommitted (author
    /// `DELIVERY_AUTHOR`) and push `branch` to the base's origin with the gateway's credentials.
    /// A push the remote refuses is recorded in `delivery`; the job's status does not change.
    #[serde(default)]
    deliver: Option<DeliverRequest>,
    /// Where to POST when the job starts and when it ends (`WEBHOOK_URL` when absent): an http
    /// or https URL whose host `WEBHOOK_ALLOW` permits (never a link-local or metadata address).
    /// Signed as Standard Webhooks does it, retried, and recorded in `webhooks`.
    #[serde(default)]
    callback_url: Option<String>,
}

/// The whole body of `POST /execute`, as documented: [`ExecuteBody`] and the run's options,
/// which [`RunOptions::from_body`] reads from the same object.
#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used.
struct ExecuteRequest {
    #[serde(flatten)]
    body: ExecuteBody,
    #[serde(flatten)]
    options: RunOptions,
}

/// The answer to `POST /execute`: the new job's id and status (`queued`).
#[derive(Debug, Serialize, ToSchema)]
struct Accepted {
    /// The job's id.
    job_id: String,
    /// `queued`.
    status: JobStatus,
}

/// A page of `GET /jobs`.
#[derive(Debug, Serialize, ToSchema)]
struct JobPage {
    /// The caller's jobs, newest first.
    jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
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

/// The caller, by its token's name: jobs and chat sessions belong to it. Empty only where no auth
/// layer ran.
pub(crate) struct Caller(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let name = parts.extensions.get::<AuthenticatedCaller>();
        Ok(Self(name.map(|c| c.name.to_string()).unwrap_or_default()))
    }
}

/// The caller's job `job_id`; 404 `Job not found` when it is unknown or another caller's, 503 when
/// the store cannot be read.
async fn find(state: &AppState, owner: &str, job_id: &str) -> Result<JobRecord, Response> {
    match state.jobs.get(owner, job_id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(not_found()),
        Err(error) => Err(store_failed(error)),
    }
}

/// The most a job may ask for (`MAX_TIMEOUT_SECONDS`, `MAX_BUDGET_USD`, the option policy) and
/// the models it may name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobBounds<'a> {
    /// Largest `timeout_seconds`.
    pub(crate) max_timeout_seconds: u64,
    /// Largest `max_budget_usd`.
    pub(crate) max_budget_usd: f64,
    /// `SUPPORTED_MODELS`, for `model` and `fallback_model`.
    pub(crate) models: &'a [String],
    /// Which options the operator allows, and their caps.
    pub(crate) policy: &'a OptionPolicy,
    /// Largest `max_attempts` (`MAX_JOB_ATTEMPTS`).
    pub(crate) max_attempts: u32,
}

/// A refused or malformed option as this route answers it: 403 when the operator's policy
/// refuses it, 422 when it is malformed; the detail names the field either way.
pub(crate) fn option_error(error: &OptionError) -> DetailError {
    let status = if error.is_refusal() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    DetailError::new(status, error.to_string())
}

/// Checks the body and turns it into a job of `owner`, or says what is wrong with it (422).
fn new_job(owner: String, body: &[u8], bounds: JobBounds<'_>) -> Result<NewJob, DetailError> {
    let options = RunOptions::from_body(body);
    let body: ExecuteBody = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let options = options.map_err(|e| option_error(&e))?;
    if body.prompt.trim().is_empty() {
        return Err(invalid("prompt must not be empty"));
    }
    if let Err(why) = check_agent_name(&body.agent) {
        return Err(invalid(format!(
            "agent {:?} is not usable: {why}",
            body.agent
        )));
    }
    check_budget("max_budget_usd", body.max_budget_usd).map_err(invalid)?;
    if body.max_budget_usd > bounds.max_budget_usd {
        return Err(invalid(format!(
            "max_budget_usd must be at most {} dollars, got {}",
            bounds.max_budget_usd, body.max_budget_usd
        )));
    }
    if body.timeout_seconds == 0 {
        return Err(invalid("timeout_seconds must be at least 1"));
    }
    if body.timeout_seconds > bounds.max_timeout_seconds {
        return Err(invalid(format!(
            "timeout_seconds must be at most {}, got {}",
            bounds.max_timeout_seconds, body.timeout_seconds
        )));
    }
    options
        .check(bounds.models, bounds.policy)
        .map_err(|e| option_error(&e))?;
    let max_attempts = body.max_attempts.unwrap_or(1);
    if !(1..=bounds.max_attempts).contains(&max_attempts) {
        return Err(invalid(format!(
            "max_attempts must be between 1 and {}, got {max_attempts}",
            bounds.max_attempts
        )));
    }
    Ok(NewJob {
        owner,
        prompt: body.prompt,
        agent: body.agent,
        max_budget_usd: body.max_budget_usd,
        timeout_seconds: body.timeout_seconds,
        metadata: body.metadata,
        options,
        max_attempts,
        continue_from: body.continue_from,
        deliver: body.deliver,
        callback_url: body.callback_url,
    })
}

/// Checks `deliver`: a base repository to deliver from, a usable branch that is not the base
/// branch (unless `DELIVERY_ALLOW_BASE_BRANCH`), a bounded commit message.
async fn check_deliver(state: &AppState, deliver: &DeliverRequest) -> Result<(), DetailError> {
    let Some(harvester) = &state.harvester else {
        return Err(invalid(
            "deliver: there is no base repository to deliver from (WORKSPACE_DIR)",
        ));
    };
    check_branch(&deliver.branch).map_err(|why| invalid(format!("deliver.branch: {why}")))?;
    if deliver
        .commit_message
        .as_ref()
        .is_some_and(|m| m.len() > MAX_COMMIT_MESSAGE)
    {
        return Err(invalid(format!(
            "deliver.commit_message must be at most {MAX_COMMIT_MESSAGE} bytes"
        )));
    }
    if !harvester.allows_base_branch() {
        match harvester.base_branch().await {
            Some(base) if base == deliver.branch => {
                return Err(invalid(format!(
                    "deliver.branch: {base:?} is the base branch; pushing to it is not allowed (DELIVERY_ALLOW_BASE_BRANCH)"
                )))
            }
            Some(_) => {}
            None => {
                return Err(invalid(
                    "deliver: the base branch cannot be told, so the branch cannot be checked against it",
                ))
            }
        }
    }
    Ok(())
}

/// A refusal of the intake in this route's shape.
fn refused(refusal: &Refusal) -> Response {
    let error = DetailError::new(refusal.status(), refusal.to_string());
    if refusal.is_overload() {
        return error.retry_after(RETRY_AFTER_SECONDS).into_response();
    }
    error.into_response()
}

/// `POST /execute`: reads and checks the body, takes a queue slot, records a job and starts it;
/// answers 202 at once.
///
/// The slot is taken only once the body is in and valid (see [`crate::bounds`]); its ticket
/// moves into the job, so the slot is the job's for as long as it is queued or running.
#[utoipa::path(
    post,
    path = "/execute",
    operation_id = "createJob",
    summary = "Queue an agent run as a job",
    description = "Checks the body and the run options, takes a queue slot and answers 202 at once; the job runs in its own workspace, bounded by `timeout_seconds` and `max_budget_usd`.",
    tag = "jobs",
    security(("bearer" = [])),
    request_body = ExecuteRequest,
    responses(
        (status = 202, description = "The job is queued", body = Accepted,
            headers(("Location" = String, description = "`/jobs/{job_id}`")),
            links(
                ("getJob" = (operation_id = "getJob", parameters(("job_id" = "$response.body#/job_id")))),
                ("cancelJob" = (operation_id = "cancelJob", parameters(("job_id" = "$response.body#/job_id")))),
                ("streamJobEvents" = (operation_id = "streamJobEvents", parameters(("job_id" = "$response.body#/job_id"))))
            )),
        JobAuthFailure,
        (status = 403, description = "The operator's policy refuses an option; `detail` names it", body = Detail),
        (status = 408, description = "The body did not arrive in time", body = Detail),
        (status = 404, description = "`continue_from` names a job that is unknown, another caller's, or forgotten", body = Detail),
        (status = 409, description = "`continue_from` names a job that cannot be resumed; `detail` says why (not finished, no session kept, sessions off)", body = Detail),
        (status = 413, description = "The body is over `MAX_BODY_BYTES`", body = Detail),
        (status = 422, description = "The body is invalid; `detail` says which field and why", body = Detail),
        (status = 429, description = "The queue is full", body = Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        StoreFailure
    )
)]
pub(crate) async fn execute(
    State(state): State<AppState>,
    Caller(owner): Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match state.intake.read(Entry::Job, &headers, body).await {
        Ok(body) => body,
        Err(refusal) => return refused(&refusal),
    };
    let bounds = JobBounds {
        max_timeout_seconds: state.config.max_timeout_seconds,
        max_budget_usd: state.config.max_budget_usd,
        models: &state.config.supported_models,
        policy: &state.config.option_policy,
        max_attempts: state.config.max_job_attempts,
    };
    let job = match new_job(owner, &body, bounds) {
        Ok(job) => job,
        Err(error) => return error.into_response(),
    };
    let mut job = job;
    if let Some(deliver) = &job.deliver {
        if let Err(error) = check_deliver(&state, deliver).await {
            return error.into_response();
        }
    }
    match &job.callback_url {
        Some(url) => {
            if let Err(why) = state.jobs.check_callback(url).await {
                return unprocessable(format!("callback_url is refused: {why}"));
            }
        }
        None => {
            job.callback_url = state.jobs.default_callback();
        }
    }
    if let Some(from) = &job.continue_from {
        match state.jobs.continuable(&job.owner, from).await {
            Ok(()) => {}
            Err(ContinueError::NotFound) => {
                return DetailError::new(
                    StatusCode::NOT_FOUND,
                    format!("continue_from: job {from:?} not found (unknown, another caller's, or forgotten after JOB_TTL_SECONDS)"),
                )
                .into_response()
            }
            Err(ContinueError::NotResumable(reason)) => {
                return DetailError::new(StatusCode::CONFLICT, format!("continue_from: {reason}"))
                    .into_response()
            }
            Err(ContinueError::Store(error)) => return store_failed(error),
        }
    }
    let key = job.owner.clone();
    let admitted = match state.intake.admit(Entry::Job, body.len(), &job.owner) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&refusal),
    };
    drop(body);
    match state.jobs.submit(job, Some(admitted.ticket)).await {
        Ok(record) => {
            let accepted = Accepted {
                job_id: record.job_id.clone(),
                status: record.status,
            };
            let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/jobs/{}", record.job_id)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(SubmitError::ShuttingDown) => {
            DetailError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
        }
        Err(SubmitError::QueueFull) => refused(&Refusal::QueueFull),
        Err(SubmitError::KeyQueueFull { max_queued }) => {
            refused(&Refusal::KeyQueueFull { key, max_queued })
        }
        Err(SubmitError::Store(error)) => store_failed(error),
    }
}

/// The job a route names, in its path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct JobPath {
    /// The id `POST /execute` answered
    job_id: String,
}

/// Query of `GET /jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Page size, 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /jobs`: the caller's jobs, newest first, as summaries (no prompt, metadata, output,
/// stderr or result): `{"jobs": [...], "next_cursor": "..." | null}`.
#[utoipa::path(
    get,
    path = "/jobs",
    operation_id = "listJobs",
    summary = "List the caller's jobs",
    description = "Newest first, as summaries (no `prompt`, `metadata`, `output`, `stderr` or `result`), a page at a time.",
    tag = "jobs",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of the caller's jobs, newest first", body = JobPage),
        JobAuthFailure,
        (status = 422, description = "A query parameter is invalid; `detail` says which", body = Detail),
        StoreFailure
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(owner): Caller,
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
        owner,
        status,
        limit,
        cursor,
    };
    match state.jobs.list(query).await {
        Ok(page) => Json(JobPage {
            jobs: page.jobs,
            next_cursor: page.next_cursor.map(|c| c.encode()),
        })
        .into_response(),
        Err(error) => store_failed(error),
    }
}

/// `GET /jobs/{job_id}`: the record; 404 `Job not found` when unknown or another caller's.
///
/// The record is streamed a field at a time within the large-response budget; when other
/// responses hold all of it, 503 with `Retry-After`. While it waits for its share it holds no
/// copy of the record: the copy that told its size is dropped, and the record read again.
#[utoipa::path(
    get,
    path = "/jobs/{job_id}",
    operation_id = "getJob",
    summary = "Read a job's record",
    description = "Only the token that created the job sees it; to any other it is unknown (404).",
    tag = "jobs",
    security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The job's record", body = JobRecord),
        JobAuthFailure,
        JobLookupFailure
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(owner): Caller,
    Path(JobPath { job_id }): Path<JobPath>,
) -> Result<Response, Response> {
    let cost = record_cost(&find(&state, &owner, &job_id).await?);
    let share = state
        .responses
        .reserve(cost)
        .await
        .map_err(|_| budget_spent())?;
    let mut record = find(&state, &owner, &job_id).await?;
    record.patch = None;
    record.webhooks = state
        .jobs
        .webhooks_of(&job_id)
        .await
        .map_err(store_failed)?;
    explain_queued(&state, &mut record);
    Ok(record_response(record, share))
}

/// `GET /jobs/{job_id}/diff`: the patch of what the run changed, as `git apply` takes it on the
/// record's `changes.base_commit`.
#[utoipa::path(
    get,
    path = "/jobs/{job_id}/diff",
    operation_id = "getJobDiff",
    summary = "The patch of what a job's run changed",
    description = "A binary git patch (`text/x-diff`) from `changes.base_commit` to the run's final tree (its commits and what it left uncommitted, untracked files included, ignored ones not); `git apply` takes it on the base commit. Bounded by `MAX_DIFF_BYTES` (cut at a file boundary; `changes.truncated` says so). git-crypt files are left out. 404 also while the job has no changes (not ended, no base repository).",
    tag = "jobs",
    security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The patch; empty when the run changed nothing", content_type = "text/x-diff", body = String,
            headers(("X-Diff-Truncated" = bool, description = "Whether the patch was cut at `MAX_DIFF_BYTES`"))),
        JobAuthFailure,
        JobLookupFailure
    )
)]
pub(crate) async fn diff(
    State(state): State<AppState>,
    Caller(owner): Caller,
    Path(JobPath { job_id }): Path<JobPath>,
) -> Result<Response, Response> {
    use base64::Engine as _;
    let record = find(&state, &owner, &job_id).await?;
    let (Some(changes), Some(patch)) = (&record.changes, &record.patch) else {
        return Err(DetailError::new(
            StatusCode::NOT_FOUND,
            "the job has no changes (it has not ended, ran without a base repository, or its changes could not be read)",
        )
        .into_response());
    };
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|_| {
            let unreadable = "the stored patch is unreadable";
            DetailError::new(StatusCode::INTERNAL_SERVER_ERROR, unreadable).into_response()
        })?;
    let truncated = if changes.truncated { "true" } else { "false" };
    let headers = [
        ("content-type", "text/x-diff"),
        ("x-diff-truncated", truncated),
    ];
    Ok((StatusCode::OK, headers, patch).into_response())
}

/// A whole record as the answer, streamed within the large-response budget; when other
/// responses hold all of it, 503 with `Retry-After`.
async fn answer_record(state: &AppState, mut record: JobRecord) -> Response {
    explain_queued(state, &mut record);
    match state.responses.reserve(record_cost(&record)).await {
        Ok(share) => record_response(record, share),
        Err(_) => budget_spent(),
    }
}

/// Says why a queued job is held back, when something holds dispatch (`queued_reason`).
fn explain_queued(state: &AppState, record: &mut JobRecord) {
    if record.status != JobStatus::Queued {
        return;
    }
    if let Some(until) = state.quota.dispatch().paused_until() {
        record.queued_reason = Some(format!(
            "upstream rate limit: dispatch paused until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
    }
}

/// The answer when other large responses hold the whole budget.
fn budget_spent() -> Response {
    DetailError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy sending other large responses; try again",
    )
    .retry_after(RETRY_AFTER_SECONDS)
    .into_response()
}

/// `DELETE /jobs/{job_id}`: cancels a queued or running job and answers its final record (status
/// `error`, saying it was cancelled) once its run is gone; 409 when it had already finished.
#[utoipa::path(
    delete,
    path = "/jobs/{job_id}",
    operation_id = "cancelJob",
    summary = "Cancel a queued or running job",
    description = "Kills the run's process group and answers the final record (status `error`, saying it was cancelled); 409 when the job had already finished.",
    tag = "jobs",
    security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The job was cancelled: its final record", body = JobRecord),
        JobAuthFailure,
        (status = 409, description = "The job had already finished", body = Detail),
        JobLookupFailure
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Caller(owner): Caller,
    Path(JobPath { job_id }): Path<JobPath>,
) -> Response {
    match state.jobs.cancel(&owner, &job_id).await {
        Ok(mut record) => {
            record.patch = None;
            answer_record(&state, record).await
        }
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
#[utoipa::path(
    get,
    path = "/jobs/{job_id}/events",
    operation_id = "streamJobEvents",
    summary = "Follow a job's events",
    description = "Server-Sent Events replayed from the start (or after `Last-Event-ID`) and followed live: `status`, `agent` (the agent's stream-json events), `truncated`, and last `end` with the final status; then the stream closes.",
    tag = "jobs",
    security(("bearer" = [])),
    params(
        JobPath,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event")
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `status`, `agent`, `truncated`, and last `end` with the final record", content_type = "text/event-stream", body = JobEvent),
        JobAuthFailure,
        JobLookupFailure
    )
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Caller(owner): Caller,
    Path(JobPath { job_id }): Path<JobPath>,
    headers: HeaderMap,
) -> Response {
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
    let mut record = record.clone();
    record.patch = None;
    serde_json::to_string(&record).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: OptionPolicy = OptionPolicy {
        allow_mcp_servers: false,
        allow_system_prompt: false,
        allow_inline_agents: false,
        allow_tools: false,
        max_turns: 10,
        max_effort: crate::agent::Effort::High,
    };

    fn parse(body: &str) -> Result<NewJob, (StatusCode, String)> {
        let models = ["sonnet".to_owned()];
        let bounds = JobBounds {
            max_timeout_seconds: 86_400,
            max_budget_usd: 100.0,
            models: &models,
            policy: &POLICY,
            max_attempts: 3,
        };
        new_job("o".into(), body.as_bytes(), bounds)
            .map_err(|e| (e.into_response().status(), String::new()))
    }

    #[test]
    fn options_are_kept_refused_options_are_403_and_bad_ones_422() {
        let job = parse(r#"{"prompt":"p","agent":"a","model":"sonnet","max_turns":3,"json_schema":{"type":"object"}}"#)
            .unwrap();
        assert_eq!(job.options.model.as_deref(), Some("sonnet"));
        assert_eq!(job.options.max_turns, Some(3));
        for body in [
            r#"{"prompt":"p","agent":"a","system_prompt":"x"}"#,
            r#"{"prompt":"p","agent":"a","max_turns":11}"#,
        ] {
            assert_eq!(parse(body).unwrap_err().0, StatusCode::FORBIDDEN, "{body}");
        }
        for body in [
            r#"{"prompt":"p","agent":"a","model":"-x"}"#,
            r#"{"prompt":"p","agent":"a","max_turns":"3"}"#,
            // A malformed option is 422 even when the policy would refuse it.
            r#"{"prompt":"p","agent":"a","tools":["--x"]}"#,
        ] {
            assert_eq!(
                parse(body).unwrap_err().0,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{body}"
            );
        }
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
            r#"{"prompt":"p","agent":"a","max_budget_usd":100.01}"#,
            r#"{"prompt":"p","agent":"a","timeout_seconds":86401}"#,
            r#"{"prompt":"p","agent":"a","timeout_seconds":1e300}"#,
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
