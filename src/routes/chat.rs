//! `POST /v1/chat/completions`: an OpenAI chat completion answered by one agent run.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::{json, Value};

use crate::agent::{AgentOutcome, AgentRequest, CallerFunctions, RunOptions};
use crate::metrics::Entry;
use crate::openai::error::{failure_error, outcome_error, ErrorBody, OpenAiError};
use crate::openai::format::{self, structured_content};
use crate::openai::stream::{done_event, error_event, Chunks};
use crate::openai::tools::{Api, Tools};
use crate::openai::wire::{
    AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice, CompletionUsage, ToolCall,
};
use crate::openai::{completion_id, finish_reason, prompt};
use crate::routes::intake::{Conversation, RunCall, RunRoute, TakenIn};
use crate::routes::openapi::{ChatEvent, OpenAiAuthFailure, OpenAiRunFailure};
use crate::routes::session::{
    attach_session, events_answer, run_keeping, with_handle, SessionRefusal, StreamedRun,
};
use crate::state::AppState;

/// A validated chat request, ready to run.
struct ChatRun {
    /// The run.
    run: Conversation,
    /// Send a usage chunk at the end of a stream.
    include_usage: bool,
    /// The session handle the body presented (`session_id`).
    presented: Option<String>,
    /// Function calling: which calls are answered.
    tools: Tools,
}

/// Handles one chat completion; the run is killed if the client goes away, because dropping
/// this future (or the streaming body, which owns the run) drops the run's.
///
/// The body is read and checked before a queue slot is taken (see [`crate::bounds`]).
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    operation_id = "createChatCompletion",
    summary = "Create a chat completion",
    description = "OpenAI's chat completion, answered by one agent run; `stream: true` answers Server-Sent Events. Fields the gateway does not act on are accepted and ignored.",
    tag = "openai",
    security(("bearer" = [])),
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer: a `chat.completion`, or with `stream: true` Server-Sent Events each holding a `chat.completion.chunk` (or an `{\"error\": …}` for a run that failed once the stream began), then `[DONE]`", content(
            (ChatCompletion = "application/json"),
            (ChatEvent = "text/event-stream")
        ), headers(("x-session-id" = String, description = "The handle that continues this conversation (also `session_id` of a `chat.completion`); present it as `session_id` or in this header with only the new messages"))),
        OpenAiAuthFailure,
        OpenAiRunFailure,
        (status = 404, description = "The session handle presented is unknown, another caller's, or expired (`session_not_found`); nothing ran", body = ErrorBody),
        (status = 409, description = "The session handle presented cannot be resumed (`session_not_resumable`); nothing ran", body = ErrorBody),
        (status = 422, description = "The agent could not produce output that fits `response_format` (`structured_output_failed`)", body = ErrorBody),
    )
)]
pub(crate) async fn chat_completions(State(state): State<AppState>, call: RunCall) -> Response {
    call.answer::<Chat>(state).await
}

/// The chat completion route's own ways: OpenAI's shape, the session handle in the body or the
/// `x-session-id` header, and a `chat.completion` (or its chunks) for an answer.
struct Chat;

impl RunRoute for Chat {
    type Run = (ChatRun, Option<String>);
    type Error = OpenAiError;
    const ENTRY: Entry = Entry::Chat;

    async fn prepare(state: &AppState, call: TakenIn<'_>) -> Result<Self::Run, OpenAiError> {
        let mut chat = prepare(state, call.body)?;
        let presented = chat.presented.take();
        let request = &mut chat.run.request;
        let handle = attach_session(state, &call, presented, request, session_error).await?;
        Ok((chat, handle))
    }

    fn request((chat, _): &mut Self::Run) -> &mut http::Request<AgentRequest> {
        &mut chat.run.request
    }

    async fn answer(
        state: &AppState,
        owner: String,
        (chat, handle): Self::Run,
    ) -> Result<Response, OpenAiError> {
        if chat.run.streaming {
            return Ok(stream(state, chat, owner, handle));
        }
        let (outcome, handle) = run_keeping(state, Entry::Chat, &owner, handle, chat.run.request)
            .await
            .map_err(failure_error)?;
        let answer = completion(&chat.run.model, &outcome, chat.run.structured, &chat.tools).map(
            |mut completion| {
                completion.session_id.clone_from(&handle);
                Json(completion)
            },
        );
        Ok(with_handle(answer.into_response(), handle.as_deref()))
    }
}

/// A refused session handle as an OpenAI error, naming `session_id`.
fn session_error(refusal: SessionRefusal) -> OpenAiError {
    let message = refusal.to_string();
    match refusal {
        SessionRefusal::NotText => OpenAiError::bad_request(message),
        SessionRefusal::NotFound(_) => OpenAiError::not_found(message)
            .param("session_id")
            .code("session_not_found"),
        SessionRefusal::NotResumable(..) => {
            OpenAiError::new(StatusCode::CONFLICT, "invalid_request_error", message)
                .param("session_id")
                .code("session_not_resumable")
        }
        SessionRefusal::Store(_) => OpenAiError::unavailable(message, "store_unavailable"),
    }
}

/// Answers a streaming chat completion: the run's text deltas as chunks as they come.
fn stream(state: &AppState, chat: ChatRun, owner: String, handle: Option<String>) -> Response {
    let (structured, include_usage, tools) = (chat.run.structured, chat.include_usage, chat.tools);
    let chunks = Chunks::new(chat.run.model);
    let header = handle.clone();
    let mut run = StreamedRun::start(state, Entry::Chat, owner, handle, chat.run.request);

    let body = async_stream::stream! {
        yield Ok::<_, Infallible>(chunks.event(json!({"role": "assistant", "content": ""}), None));
        let mut streamed_text = false;
        while let Some(text) = run.text().await {
            // Structured output is one value, sent whole at the end; prose around it is not the answer.
            if !structured {
                streamed_text = true;
                yield Ok(chunks.event(json!({"content": text}), None));
            }
        }
        let result = run.ended().await;
        match result {
            Ok(outcome) => match finish_reason(&outcome) {
                Some(reason @ "tool_calls") => {
                    let calls: Vec<Value> = tools
                        .answered(&outcome.tool_calls)
                        .iter()
                        .enumerate()
                        .map(|(index, call)| {
                            let call = ToolCall::from_call(call);
                            json!({"index": index, "id": call.id, "type": call.kind, "function": call.function})
                        })
                        .collect();
                    yield Ok(chunks.event(json!({"tool_calls": calls}), None));
                    yield Ok(chunks.event(json!({}), Some(reason)));
                    if include_usage {
                        let usage = outcome.usage.as_ref().map(CompletionUsage::from).unwrap_or_default();
                        yield Ok(chunks.usage_event(usage));
                    }
                }
                Some(_) if structured => match structured_content(&outcome) {
                    Ok(content) => {
                        yield Ok(chunks.event(json!({"content": content}), None));
                        yield Ok(chunks.event(json!({}), Some("stop")));
                        if include_usage {
                            let usage = outcome.usage.as_ref().map(CompletionUsage::from).unwrap_or_default();
                            yield Ok(chunks.usage_event(usage));
                        }
                    }
                    Err(error) => yield Ok(error_event(&error)),
                },
                None if structured => yield Ok(error_event(&structured_or_outcome_error(&outcome))),
                Some(reason) => {
                    if !streamed_text {
                        if let Some(text) = outcome.text.as_deref().filter(|t| !t.is_empty()) {
                            yield Ok(chunks.event(json!({"content": text}), None));
                        }
                    }
                    yield Ok(chunks.event(json!({}), Some(reason)));
                    if include_usage {
                        let usage = outcome.usage.as_ref().map(CompletionUsage::from).unwrap_or_default();
                        yield Ok(chunks.usage_event(usage));
                    }
                }
                None => yield Ok(error_event(&outcome_error(&outcome))),
            },
            Err(failure) => yield Ok(error_event(&failure_error(failure))),
        }
        yield Ok(done_event());
    };
    // The handle is announced before the answer; should the session not be kept, presenting it
    // later is a 404 like any expired one.
    events_answer(body, header.as_deref())
}

/// Parses and checks the body and builds the run; says what is wrong with the request if anything.
fn prepare(state: &AppState, body: &Bytes) -> Result<ChatRun, OpenAiError> {
    let chat: ChatCompletionRequest = serde_json::from_slice(body)
        .map_err(|e| OpenAiError::bad_request(format!("invalid request body: {e}")))?;
    let config = &state.config;
    let model = format::model(chat.model.clone(), config)?;
    if chat.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::bad_request("only n=1 is supported").param("n"));
    }
    if chat.functions.as_ref().is_some_and(|f| !f.is_null()) {
        return Err(OpenAiError::bad_request(
            "the legacy functions field is not supported: define functions in tools",
        )
        .param("functions")
        .code("unsupported_parameter"));
    }
    let tools = Tools::read(Api::Chat, &chat.calling)?;
    let options = RunOptions {
        json_schema: format::response_format(chat.response_format.as_ref())?,
        effort: format::reasoning_effort(chat.reasoning_effort.as_ref())?,
        ..RunOptions::default()
    };
    format::check_options(&options, config)?;
    let prompt = prompt::render(&chat.messages, tools.instructions().as_deref())?;
    let streaming = chat.stream.unwrap_or(false);
    let mut run = Conversation::new(config, model, prompt, streaming, options);
    offer_functions(&mut run.request, config, &tools);
    let include_usage = chat
        .stream_options
        .map(|o| o.include_usage)
        .unwrap_or(false);
    Ok(ChatRun {
        run,
        include_usage,
        presented: chat.session_id,
        tools,
    })
}

/// Offers the agent the functions `tools` asks for, served by the gateway's own executable.
pub(crate) fn offer_functions(
    request: &mut http::Request<AgentRequest>,
    config: &crate::config::Config,
    tools: &Tools,
) {
    let functions = tools.offered();
    if !functions.is_empty() {
        request.extensions_mut().insert(CallerFunctions {
            bin: config.functions_bin.clone(),
            functions,
        });
    }
}

/// The error of a run asked for structured output that did not succeed: the CLI giving up on the
/// schema is the caller's to know about (422), anything else is the usual run failure.
fn structured_or_outcome_error(outcome: &AgentOutcome) -> OpenAiError {
    if outcome.subtype.as_deref() == Some("error_max_structured_output_retries") {
        return structured_content(outcome)
            .err()
            .unwrap_or_else(|| outcome_error(outcome));
    }
    outcome_error(outcome)
}

/// The `chat.completion` for a finished run, or the error for a run that failed. With
/// `structured`, the content is the run's structured output as JSON text.
fn completion(
    model: &str,
    outcome: &AgentOutcome,
    structured: bool,
    tools: &Tools,
) -> Result<ChatCompletion, OpenAiError> {
    let reason = match finish_reason(outcome) {
        Some(reason @ "tool_calls") => {
            let calls = tools.answered(&outcome.tool_calls);
            return Ok(chat_completion(
                model,
                outcome,
                AssistantMessage {
                    role: "assistant",
                    content: None,
                    refusal: None,
                    tool_calls: Some(calls.iter().map(ToolCall::from_call).collect()),
                },
                reason,
            ));
        }
        Some(_) if structured => "stop",
        Some(reason) => reason,
        None if structured => return Err(structured_or_outcome_error(outcome)),
        None => return Err(outcome_error(outcome)),
    };
    let content = if structured {
        structured_content(outcome)?
    } else {
        outcome.text.clone().unwrap_or_default()
    };
    Ok(chat_completion(
        model,
        outcome,
        AssistantMessage {
            role: "assistant",
            content: Some(content),
            refusal: None,
            tool_calls: None,
        },
        reason,
    ))
}

/// A `chat.completion` holding `message`.
fn chat_completion(
    model: &str,
    outcome: &AgentOutcome,
    message: AssistantMessage,
    reason: &'static str,
) -> ChatCompletion {
    ChatCompletion {
        id: completion_id(),
        object: "chat.completion",
        created: chrono::Utc::now().timestamp(),
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: reason,
            logprobs: None,
        }],
        usage: outcome
            .usage
            .as_ref()
            .map(CompletionUsage::from)
            .unwrap_or_default(),
        session_id: None,
    }
}
