//! Chat sessions across the conversation routes (chat completions, Messages): the handle a request
//! presents is continued, the run keeps its session under it, and the answer carries it back. The
//! routes differ only in the error shape they refuse a handle with, so they pass their own mapper.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use http::HeaderValue;
use tokio::sync::mpsc;

use crate::agent::{AgentOutcome, AgentRequest, KeepSession, ProgressSink, ResumeSession};
use crate::jobs::{new_job_id, ContinueError};
use crate::metrics::Entry;
use crate::openai::stream::text_delta;
use crate::run::RunFailure;
use crate::state::AppState;

use super::intake::TakenIn;

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

/// Continues the session `call` presents (`presented`, from the body, else the `x-session-id`
/// header) as its caller's, and has the run keep its session; answers the conversation's handle
/// (`None` when sessions are not kept). A handle that is unknown, another caller's or expired is
/// refused (through `refuse`, in the route's error shape), never a fresh start.
pub(crate) async fn attach_session<E>(
    state: &AppState,
    call: &TakenIn<'_>,
    presented: Option<String>,
    request: &mut http::Request<AgentRequest>,
    refuse: fn(SessionRefusal) -> E,
) -> Result<Option<String>, E> {
    let owner = call.owner;
    let presented = match (presented, call.headers.get(SESSION_HEADER)) {
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

/// A run whose answer streams: its text deltas as the agent produces them, then how it ended,
/// with the session it left kept. It owns the run: dropping it unfinished (a client that went
/// away drops the body that holds it) drops the run.
pub(crate) struct StreamedRun {
    /// The run, until it ends; then how it ended, its session kept.
    stage: Stage,
    /// The run's stream-json events as they come.
    progress: mpsc::UnboundedReceiver<Box<str>>,
    /// Where the run's session is kept.
    state: AppState,
    /// Whose session it is.
    owner: String,
    /// The handle it is kept under (`None`: not kept).
    handle: Option<String>,
}

/// A streamed run before and after it ends.
enum Stage {
    Running(Pin<Box<dyn Future<Output = Result<AgentOutcome, RunFailure>> + Send>>),
    Ended(Box<Result<AgentOutcome, RunFailure>>),
}

impl StreamedRun {
    /// Starts `request` as `entry`, its progress forwarded; the session it leaves is kept under
    /// `handle` for `owner`.
    pub(crate) fn start(
        state: &AppState,
        entry: Entry,
        owner: String,
        handle: Option<String>,
        mut request: http::Request<AgentRequest>,
    ) -> Self {
        let (sink, progress) = mpsc::unbounded_channel();
        request.extensions_mut().insert(ProgressSink(sink));
        Self {
            stage: Stage::Running(Box::pin(state.runs.run(entry, request))),
            progress,
            state: state.clone(),
            owner,
            handle,
        }
    }

    /// The next piece of the answer's text; `None` once the run has ended and every piece sent
    /// before its end is out.
    pub(crate) async fn text(&mut self) -> Option<String> {
        loop {
            let event = match &mut self.stage {
                Stage::Running(run) => tokio::select! {
                    biased;
                    Some(event) = self.progress.recv() => event,
                    result = run => {
                        let handle = self.handle.take();
                        let result = kept(&self.state, &self.owner, handle, result).await;
                        self.stage = Stage::Ended(Box::new(result));
                        continue;
                    }
                },
                // Events sent just before the run ended are still in the channel.
                Stage::Ended(_) => self.progress.try_recv().ok()?,
            };
            let parsed = serde_json::from_str(&event).ok();
            if let Some(text) = parsed.as_ref().and_then(text_delta) {
                return Some(text.to_owned());
            }
        }
    }

    /// How the run ended, with its session kept; what text is still unread is passed over.
    pub(crate) async fn ended(self) -> Result<AgentOutcome, RunFailure> {
        let StreamedRun {
            stage,
            state,
            owner,
            handle,
            ..
        } = self;
        match stage {
            Stage::Running(run) => kept(&state, &owner, handle, run.await).await,
            Stage::Ended(result) => *result,
        }
    }
}

/// `result`, with the session the run left kept under `handle`.
async fn kept(
    state: &AppState,
    owner: &str,
    handle: Option<String>,
    mut result: Result<AgentOutcome, RunFailure>,
) -> Result<AgentOutcome, RunFailure> {
    if let Ok(outcome) = &mut result {
        keep_session(state, owner, handle, outcome).await;
    }
    result
}

/// A stream of Server-Sent Events as an answer, kept alive, with the session handle header.
pub(crate) fn events_answer<S>(events: S, handle: Option<&str>) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    with_handle(
        Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response(),
        handle,
    )
}

/// Adds the session handle header to an answer.
pub(crate) fn with_handle(mut response: Response, handle: Option<&str>) -> Response {
    if let Some(value) = handle.and_then(|h| HeaderValue::from_str(h).ok()) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}
