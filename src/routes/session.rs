//! Chat sessions across the conversation routes (chat completions, Messages): the handle a request
//! presents is continued, the run keeps its session under it, and the answer carries it back. The
//! routes differ only in the error shape they refuse a handle with, so they pass their own mapper.

use std::fmt;

use axum::response::Response;
use http::{HeaderMap, HeaderValue};

use crate::agent::{AgentOutcome, AgentRequest, KeepSession, ResumeSession};
use crate::jobs::{new_job_id, ContinueError};
use crate::metrics::Entry;
use crate::run::RunFailure;
use crate::state::AppState;

/// The header that carries a chat conversation's session handle, in a request and its answer.
pub(crate) const SESSION_HEADER: &str = "x-session-id";

/// Why a presented session handle is refused; each route words it in its own error shape.
pub(crate) enum SessionRefusal {
    /// The `x-session-id` header is not text.
    NotText,
    /// The handle is unknown, another caller's, or expired.
    NotFound(String),
    /// The handle's session cannot be resumed: the handle, and why.
    NotResumable(String, String),
    /// The session store did not answer.
    Store(String),
}

impl fmt::Display for SessionRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotText => write!(f, "{SESSION_HEADER} is not text"),
            Self::NotFound(handle) => write!(
                f,
                "session {handle:?} not found: unknown, another caller's, or expired (sessions are kept JOB_TTL_SECONDS after their last turn); start a new conversation with the whole history"
            ),
            Self::NotResumable(handle, reason) => {
                write!(f, "session {handle:?} cannot be resumed: {reason}")
            }
            Self::Store(error) => f.write_str(error),
        }
    }
}

/// Continues the session the request presents (`presented`, from the body, else the
/// `x-session-id` header), and has the run keep its session; answers the conversation's handle
/// (`None` when sessions are not kept). A handle that is unknown, another caller's or expired is
/// refused (through `refuse`, in the route's error shape), never a fresh start.
pub(crate) async fn attach_session<E>(
    state: &AppState,
    owner: &str,
    presented: Option<String>,
    headers: &HeaderMap,
    request: &mut http::Request<AgentRequest>,
    refuse: fn(SessionRefusal) -> E,
) -> Result<Option<String>, E> {
    let presented = match (presented, headers.get(SESSION_HEADER)) {
        (Some(handle), _) => Some(handle),
        (None, Some(value)) => Some(
            value
                .to_str()
                .map_err(|_| refuse(SessionRefusal::NotText))?
                .to_owned(),
        ),
        (None, None) => None,
    };
    let extensions = request.extensions_mut();
    let handle = match presented {
        Some(handle) => {
            let saved = state
                .jobs
                .chat_session(owner, &handle)
                .await
                .map_err(|error| {
                    refuse(match error {
                        ContinueError::NotFound => SessionRefusal::NotFound(handle.clone()),
                        ContinueError::NotResumable(reason) => {
                            SessionRefusal::NotResumable(handle.clone(), reason)
                        }
                        ContinueError::Store(error) => SessionRefusal::Store(error.to_string()),
                    })
                })?;
            extensions.insert(ResumeSession(saved));
            handle
        }
        None if state.jobs.session_cap() == 0 => return Ok(None),
        None => new_job_id(),
    };
    extensions.insert(KeepSession {
        max_bytes: state.jobs.session_cap(),
    });
    Ok(Some(handle))
}

/// Keeps the session the run left under `handle`; answers the handle when it was kept.
pub(crate) async fn keep_session(
    state: &AppState,
    owner: &str,
    handle: Option<String>,
    outcome: &mut AgentOutcome,
) -> Option<String> {
    let handle = handle?;
    let session = outcome.session.take()?;
    state.jobs.keep_chat_session(owner, &handle, session).await;
    Some(handle)
}

/// Runs `request`, and keeps the session the run left under `handle`; answers the outcome, and
/// the handle when the session was kept.
pub(crate) async fn run_keeping(
    state: &AppState,
    entry: Entry,
    owner: &str,
    handle: Option<String>,
    request: http::Request<AgentRequest>,
) -> Result<(AgentOutcome, Option<String>), RunFailure> {
    let mut outcome = state.runs.run(entry, request).await?;
    let handle = keep_session(state, owner, handle, &mut outcome).await;
    Ok((outcome, handle))
}

/// Adds the session handle header to an answer.
pub(crate) fn with_handle(mut response: Response, handle: Option<&str>) -> Response {
    if let Some(value) = handle.and_then(|h| HeaderValue::from_str(h).ok()) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}
