//! `POST /v1/messages`: an Anthropic Messages API call answered by one agent run, plain or
//! streamed as Anthropic's events. The run path is chat's (`routes::chat`): the body is read and
//! checked before a queue slot is taken, the run is `Runs::run`, and a client that goes away
//! drops it; sessions are continued through the same `x-session-id` header.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::Value;

use crate::agent::{AgentOutcome, AgentRequest, Effort, RunOptions};
use crate::anthropic::error::{
    failure_error, option_error, outcome_error, AnthropicError, AnthropicErrorBody,
};
use crate::anthropic::stream::Events;
use crate::anthropic::wire::{Message, MessagesRequest, OutputConfig, TextBlock, Usage};
use crate::anthropic::{message_id, prompt, stop_reason};
use crate::metrics::Entry;
use crate::routes::intake::{Conversation, RunCall, RunRoute, TakenIn};
use crate::routes::openapi::{AnthropicAuthFailure, MessagesEvent};
use crate::routes::session::{
    attach_session, events_answer, run_keeping, with_handle, SessionRefusal, StreamedRun,
};
use crate::state::AppState;

/// Handles one Messages call; the run is killed if the client goes away.
#[utoipa::path(
    post,
    path = "/v1/messages",
    operation_id = "createMessage",
    summary = "Create a message (Anthropic Messages API)",
    description = "Anthropic's Messages API, answered by one agent run; `stream: true` answers Anthropic's Server-Sent Events. The token goes in `x-api-key` (as the Anthropic SDKs send it) or `Authorization: Bearer`; `anthropic-version` is accepted whatever its value. Sampling fields are accepted and ignored. `x-session-id` continues an earlier answer's session.",
    tag = "anthropic",
    security(("api_key" = []), ("bearer" = [])),
    request_body = MessagesRequest,
    params(
        ("x-session-id" = Option<String>, Header, description = "The handle of an earlier answer's session to continue; `messages` then holds only the new turn"),
        ("anthropic-version" = Option<String>, Header, description = "Accepted, whatever its value, and not required")
    ),
    responses(
        (status = 200, description = "The answer: a `message`, or with `stream: true` Anthropic's Server-Sent Events (`message_start`, `content_block_start`, `ping`, `content_block_delta`…, `content_block_stop`, `message_delta`, `message_stop`; or an `error` event for a run that failed once the stream began)", content(
            (Message = "application/json"),
            (MessagesEvent = "text/event-stream")
        ), headers(("x-session-id" = String, description = "The handle that continues this conversation; present it in this header with only the new messages"))),
        AnthropicAuthFailure,
        (status = 403, description = "The operator's policy refuses an option (`permission_error`)", body = AnthropicErrorBody),
        (status = 404, description = "An unknown model, or a session handle that is unknown, another caller's or expired (`not_found_error`); nothing ran", body = AnthropicErrorBody),
        (status = 408, description = "The body did not arrive in time", body = AnthropicErrorBody),
        (status = 409, description = "The session handle presented cannot be resumed; nothing ran", body = AnthropicErrorBody),
        (status = 413, description = "The body is over `MAX_BODY_BYTES` (`request_too_large`)", body = AnthropicErrorBody),
        (status = 422, description = "The agent could not produce output that fits `output_config.format`", body = AnthropicErrorBody),
        (status = 429, description = "The queue is full (`rate_limit_error`)", body = AnthropicErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "The run failed (`api_error`), or the gateway hit a bug", body = AnthropicErrorBody),
        (status = 503, description = "The gateway is shutting down, or the session store is unavailable", body = AnthropicErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when retrying may help"))),
        (status = 504, description = "The run outlived its deadline (`timeout_error`)", body = AnthropicErrorBody)
    )
)]
pub(crate) async fn create_message(State(state): State<AppState>, call: RunCall) -> Response {
    call.answer::<Messages>(state).await
}

/// The Messages route's own ways: Anthropic's shape, the session handle in the `x-session-id`
/// header, and a `message` (or Anthropic's events) for an answer.
struct Messages;

impl RunRoute for Messages {
    type Run = (Conversation, Option<String>);
    type Error = AnthropicError;
    const ENTRY: Entry = Entry::Messages;

    async fn prepare(state: &AppState, call: TakenIn<'_>) -> Result<Self::Run, AnthropicError> {
        let mut run = prepare(state, call.body)?;
        // The Messages API has no body field for it: only the header presents a handle.
        let handle = attach_session(state, &call, None, &mut run.request, session_error).await?;
        Ok((run, handle))
    }

    fn request((run, _): &mut Self::Run) -> &mut http::Request<AgentRequest> {
        &mut run.request
    }

    async fn answer(
        state: &AppState,
        owner: String,
        (run, handle): Self::Run,
    ) -> Result<Response, AnthropicError> {
        if run.streaming {
            return Ok(stream(state, run, owner, handle));
        }
        let (outcome, handle) = run_keeping(state, Entry::Messages, &owner, handle, run.request)
            .await
            .map_err(|failure| failure_error(&failure))?;
        let answer = message(&run.model, &outcome, run.structured).map(Json);
        Ok(with_handle(answer.into_response(), handle.as_deref()))
    }
}

/// A refused session handle as an Anthropic error.
fn session_error(refusal: SessionRefusal) -> AnthropicError {
    let message = refusal.to_string();
    match refusal {
        SessionRefusal::NotText => AnthropicError::invalid(message),
        SessionRefusal::NotFound(_) => AnthropicError::not_found(message),
        SessionRefusal::NotResumable(..) => {
            AnthropicError::new(StatusCode::CONFLICT, "invalid_request_error", message)
        }
        SessionRefusal::Store(_) => {
            AnthropicError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message)
        }
    }
}

/// Parses and checks the body and builds the run; says what is wrong with the request if anything.
fn prepare(state: &AppState, body: &Bytes) -> Result<Conversation, AnthropicError> {
    let request: MessagesRequest = serde_json::from_slice(body)
        .map_err(|e| AnthropicError::invalid(format!("invalid request body: {e}")))?;
    let config = &state.config;
    let model = request.model;
    if !config.supported_models.contains(&model) {
        return Err(AnthropicError::not_found(format!(
            "model: {model:?} is not supported; supported models: {}",
            config.supported_models.join(", ")
        )));
    }
    if request.max_tokens == 0 {
        return Err(AnthropicError::invalid(
            "max_tokens: must be at least 1 (it is otherwise ignored)",
        ));
    }
    if request
        .tools
        .as_ref()
        .is_some_and(|tools| !tools.is_null() && tools.as_array().is_none_or(|t| !t.is_empty()))
    {
        return Err(AnthropicError::invalid(
            "tools: not supported; the agent uses its own tools",
        ));
    }
    let mut options = RunOptions::default();
    output_config(request.output_config.as_ref(), &mut options)?;
    options
        .check(&config.supported_models, &config.option_policy)
        .map_err(|e| option_error(&e))?;
    let prompt = prompt::render(request.system.as_ref(), &request.messages)?;
    let streaming = request.stream.unwrap_or(false);
    Ok(Conversation::new(config, model, prompt, streaming, options))
}

/// Reads `output_config` into run options: `effort` is `--effort`, `format` (`json_schema`) is
/// `--json-schema`.
fn output_config(
    config: Option<&OutputConfig>,
    options: &mut RunOptions,
) -> Result<(), AnthropicError> {
    let Some(config) = config else {
        return Ok(());
    };
    if let Some(effort) = config.effort.as_ref().filter(|e| !e.is_null()) {
        let level = match effort.as_str() {
            Some(name) => name.parse::<Effort>(),
            None => Err("must be a string".to_owned()),
        };
        options.effort = Some(
            level.map_err(|why| AnthropicError::invalid(format!("output_config.effort: {why}")))?,
        );
    }
    if let Some(format) = config.format.as_ref().filter(|f| !f.is_null()) {
        if format.get("type").and_then(Value::as_str) != Some("json_schema") {
            return Err(AnthropicError::invalid(
                "output_config.format.type: only json_schema is supported",
            ));
        }
        let Some(schema) = format.get("schema").and_then(Value::as_object) else {
            return Err(AnthropicError::invalid(
                "output_config.format.schema: must be a JSON Schema object",
            ));
        };
        options.json_schema = Some(schema.clone());
    }
    Ok(())
}

/// The text of the answer: the run's text, or with `structured` its structured value as JSON
/// text; the error for a run that failed or produced no value that fits.
fn answer_text(
    outcome: &AgentOutcome,
    structured: bool,
) -> Result<(&'static str, String), AnthropicError> {
    if structured {
        let unfit = || {
            AnthropicError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "the agent could not produce output that fits output_config.format",
            )
        };
        return match (stop_reason(outcome), &outcome.structured_output) {
            (Some(_), Some(value)) => Ok(("end_turn", value.to_string())),
            (Some(_), None) => Err(unfit()),
            (None, _)
                if outcome.subtype.as_deref() == Some("error_max_structured_output_retries") =>
            {
                Err(unfit())
            }
            (None, _) => Err(outcome_error(outcome)),
        };
    }
    match stop_reason(outcome) {
        Some(reason) => Ok((reason, outcome.text.clone().unwrap_or_default())),
        None => Err(outcome_error(outcome)),
    }
}

/// The `message` for a finished run, or the error for a run that failed.
fn message(
    model: &str,
    outcome: &AgentOutcome,
    structured: bool,
) -> Result<Message, AnthropicError> {
    let (stop_reason, text) = answer_text(outcome, structured)?;
    Ok(Message {
        id: message_id(),
        kind: "message",
        role: "assistant",
        content: vec![TextBlock::new(text)],
        model: model.to_owned(),
        stop_reason,
        stop_sequence: None,
        usage: outcome.usage.as_ref().map(Usage::from).unwrap_or_default(),
    })
}

/// Answers a streaming call: the run's text deltas as `content_block_delta` events as they come.
fn stream(
    state: &AppState,
    asked: Conversation,
    owner: String,
    handle: Option<String>,
) -> Response {
    let (events, structured) = (Events::new(asked.model), asked.structured);
    let header = handle.clone();
    let mut run = StreamedRun::start(state, Entry::Messages, owner, handle, asked.request);

    let body = async_stream::stream! {
        yield Ok::<_, Infallible>(events.message_start());
        yield Ok(Events::block_start());
        yield Ok(Events::ping());
        let mut streamed_text = false;
        while let Some(text) = run.text().await {
            // Structured output is one value, sent whole at the end.
            if !structured {
                streamed_text = true;
                yield Ok(Events::text(&text));
            }
        }
        let result = run.ended().await;
        let ended = match &result {
            Ok(outcome) => answer_text(outcome, structured)
                .map(|(reason, text)| (reason, text, outcome.usage.as_ref().map(Usage::from).unwrap_or_default())),
            Err(failure) => Err(failure_error(failure)),
        };
        match ended {
            Ok((reason, text, usage)) => {
                // Structured output, or a run whose text came without deltas: the whole text now.
                if (structured || !streamed_text) && !text.is_empty() {
                    yield Ok(Events::text(&text));
                }
                yield Ok(Events::block_stop());
                yield Ok(Events::message_delta(reason, usage));
                yield Ok(Events::message_stop());
            }
            Err(error) => yield Ok(Events::error(&error)),
        }
    };
    events_answer(body, header.as_deref())
}
