//! `POST /v1/responses`: OpenAI's Responses API answered by one agent run, plain or as typed
//! stream events; `previous_response_id` continues the session an earlier response left.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::{json, Value};

use crate::agent::{AgentRequest, KeepSession, ResumeSession, RunOptions};
use crate::jobs::{new_job_id, ContinueError};
use crate::metrics::Entry;
use crate::openai::error::{failure_error, outcome_error, ErrorBody, OpenAiError};
use crate::openai::responses::{
    call_item, item_id, message_item, text_part, CreateResponseRequest, ResponseObject, Sequence,
};
use crate::openai::tools::{Api, Tools};
use crate::openai::{finish_reason, format, prompt};
use crate::routes::chat::offer_functions;
use crate::routes::intake::{Conversation, RunCall, RunRoute, TakenIn};
use crate::routes::openapi::{OpenAiAuthFailure, OpenAiRunFailure, ResponseEvent};
use crate::routes::session::{events_answer, run_keeping, StreamedRun};
use crate::state::AppState;

/// The prefix of a response id; what follows is the handle its session is kept under.
const ID_PREFIX: &str = "resp_";

/// A validated request, ready to run.
struct ResponseRun {
    /// The run.
    run: Conversation,
    /// Function calling: which calls are answered.
    tools: Tools,
    /// The response as it starts: `in_progress`, no output.
    response: ResponseObject,
    /// The handle its session is kept under, when it is.
    handle: Option<String>,
}

/// Handles one response; the run is killed if the client goes away.
#[utoipa::path(
    post,
    path = "/v1/responses",
    operation_id = "createResponse",
    summary = "Create a model response",
    description = "OpenAI's Responses API, answered by one agent run; `stream: true` answers typed Server-Sent Events (`response.created` … `response.completed`). `previous_response_id` continues an earlier response's session. Functions in `tools` may be called: the answer then holds `function_call` items.",
    tag = "openai",
    security(("bearer" = [])),
    request_body = CreateResponseRequest,
    responses(
        (status = 200, description = "The answer: a `response` object, or with `stream: true` its typed events (`response.failed` for a run that failed once the stream began)", content(
            (ResponseObject = "application/json"),
            (ResponseEvent = "text/event-stream")
        )),
        OpenAiAuthFailure,
        OpenAiRunFailure,
        (status = 404, description = "`previous_response_id` is unknown, another caller's, expired, or kept nothing (`previous_response_not_found`); nothing ran", body = ErrorBody),
        (status = 409, description = "The previous response's session cannot be resumed (`session_not_resumable`); nothing ran", body = ErrorBody),
    )
)]
pub(crate) async fn create(State(state): State<AppState>, call: RunCall) -> Response {
    call.answer::<Responses>(state).await
}

/// The Responses route's own ways: OpenAI's shape, the session continued by
/// `previous_response_id`, and a `response` (or its typed events) for an answer.
struct Responses;

impl RunRoute for Responses {
    type Run = ResponseRun;
    type Error = OpenAiError;
    const ENTRY: Entry = Entry::Chat;

    async fn prepare(state: &AppState, call: TakenIn<'_>) -> Result<ResponseRun, OpenAiError> {
        prepare(state, call.owner, call.body).await
    }

    fn request(asked: &mut ResponseRun) -> &mut http::Request<AgentRequest> {
        &mut asked.run.request
    }

    async fn answer(
        state: &AppState,
        owner: String,
        asked: ResponseRun,
    ) -> Result<Response, OpenAiError> {
        if asked.run.streaming {
            return Ok(stream(state, asked, owner));
        }
        let request = asked.run.request;
        let (outcome, _) = run_keeping(state, Entry::Chat, &owner, asked.handle, request)
            .await
            .map_err(failure_error)?;
        let reason = finish_reason(&outcome).ok_or_else(|| outcome_error(&outcome))?;
        let output = if reason == "tool_calls" {
            asked
                .tools
                .answered(&outcome.tool_calls)
                .iter()
                .map(|call| call_item(&item_id("fc"), call, "completed"))
                .collect()
        } else {
            let text = outcome.text.clone().unwrap_or_default();
            vec![message_item(&item_id("msg"), &text, "completed")]
        };
        let mut response = asked.response;
        response.finish(&outcome, reason, output);
        Ok(Json(response).into_response())
    }
}

/// Parses and checks the body, finds the session to continue, and builds the run.
async fn prepare(state: &AppState, owner: &str, body: &[u8]) -> Result<ResponseRun, OpenAiError> {
    let asked = CreateResponseRequest::parse(body)?;
    let config = &state.config;
    let model = format::model(asked.model.clone(), config)?;
    let tools = Tools::read(Api::Responses, &asked.calling)?;
    let effort = asked.reasoning.as_ref().and_then(|r| r.get("effort"));
    let options = RunOptions {
        effort: format::reasoning_effort(effort).map_err(|e| e.param("reasoning.effort"))?,
        ..RunOptions::default()
    };
    format::check_options(&options, config)?;
    let turns = asked.turns()?;
    let prompt =
        prompt::render_turns(&turns, tools.instructions().as_deref()).ok_or_else(|| {
            OpenAiError::bad_request(
                "input must end with a user message or with function_call_output items",
            )
            .param("input")
        })?;
    let streaming = asked.stream.unwrap_or(false);
    let mut run = Conversation::new(config, model, prompt, streaming, options);
    let request = &mut run.request;
    offer_functions(request, config, &tools);
    if let Some(previous) = &asked.previous_response_id {
        let saved = previous_session(state, owner, previous).await?;
        request.extensions_mut().insert(ResumeSession(saved));
    }
    let handle = new_job_id();
    let store = asked.store.unwrap_or(true) && state.jobs.session_cap() > 0;
    if store {
        request.extensions_mut().insert(KeepSession {
            max_bytes: state.jobs.session_cap(),
        });
    }
    let response = ResponseObject {
        id: format!("{ID_PREFIX}{handle}"),
        object: "response",
        created_at: chrono::Utc::now().timestamp(),
        status: "in_progress",
        completed_at: None,
        error: None,
        incomplete_details: None,
        instructions: asked.instructions.clone(),
        max_output_tokens: asked.max_output_tokens.clone().unwrap_or(Value::Null),
        model: run.model.clone(),
        output: Vec::new(),
        parallel_tool_calls: tools.parallel,
        previous_response_id: asked.previous_response_id.clone(),
        reasoning: json!({"effort": effort.cloned().unwrap_or(Value::Null), "summary": null}),
        store,
        temperature: None,
        text: json!({"format": {"type": "text"}}),
        tool_choice: tools.choice_echo.clone(),
        tools: tools.echo.clone(),
        top_p: None,
        truncation: "disabled",
        usage: None,
        metadata: asked
            .metadata
            .clone()
            .filter(|m| !m.is_null())
            .unwrap_or_else(|| json!({})),
    };
    Ok(ResponseRun {
        run,
        tools,
        response,
        handle: store.then_some(handle),
    })
}

/// The session `previous` (`resp_…`) left for `owner`; 404 when there is none to continue.
async fn previous_session(
    state: &AppState,
    owner: &str,
    previous: &str,
) -> Result<crate::agent::SavedSession, OpenAiError> {
    let not_found = || {
        OpenAiError::not_found(format!(
            "Previous response with id '{previous}' not found: unknown, another caller's, expired (sessions are kept JOB_TTL_SECONDS), stored with store=false, or it ended in function calls (those keep no session: send the conversation as input items)"
        ))
        .param("previous_response_id")
        .code("previous_response_not_found")
    };
    let handle = previous.strip_prefix(ID_PREFIX).ok_or_else(not_found)?;
    match state.jobs.chat_session(owner, handle).await {
        Ok(saved) => Ok(saved),
        Err(ContinueError::NotFound) => Err(not_found()),
        Err(ContinueError::NotResumable(reason)) => Err(OpenAiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            format!("response {previous:?} cannot be continued: {reason}"),
        )
        .param("previous_response_id")
        .code("session_not_resumable")),
        Err(ContinueError::Store(error)) => Err(OpenAiError::unavailable(
            error.to_string(),
            "store_unavailable",
        )),
    }
}

/// The open `message` output item of a streamed response: its id and the text so far.
struct OpenMessage {
    id: String,
    text: String,
}

/// Answers a streaming response: typed events, the text deltas as the agent produces them.
fn stream(state: &AppState, asked: ResponseRun, owner: String) -> Response {
    let ResponseRun {
        run,
        tools,
        mut response,
        handle,
    } = asked;
    let mut run = StreamedRun::start(state, Entry::Chat, owner, handle, run.request);

    let body = async_stream::stream! {
        let mut sequence = Sequence::default();
        yield Ok::<_, Infallible>(sequence.event("response.created", json!({"response": response})));
        yield Ok(sequence.event("response.in_progress", json!({"response": response})));
        let mut message: Option<OpenMessage> = None;
        while let Some(text) = run.text().await {
            for event in delta(&mut sequence, &mut message, &text) {
                yield Ok(event);
            }
        }
        let result = run.ended().await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(failure) => {
                response.fail(&failure_error(failure));
                yield Ok(sequence.event("response.failed", json!({"response": response})));
                return;
            }
        };
        let Some(reason) = finish_reason(&outcome) else {
            response.fail(&outcome_error(&outcome));
            yield Ok(sequence.event("response.failed", json!({"response": response})));
            return;
        };
        let mut output = Vec::new();
        let calls = if reason == "tool_calls" { tools.answered(&outcome.tool_calls) } else { &[] };
        if calls.is_empty() && message.is_none() {
            // Nothing was streamed: the whole answer is one delta.
            let text = outcome.text.clone().unwrap_or_default();
            for event in delta(&mut sequence, &mut message, &text) {
                yield Ok(event);
            }
        }
        if let Some(open) = message.take() {
            for event in close_message(&mut sequence, &open) {
                yield Ok(event);
            }
            output.push(message_item(&open.id, &open.text, "completed"));
        }
        for call in calls {
            let index = output.len();
            let id = item_id("fc");
            yield Ok(sequence.event("response.output_item.added", json!({
                "output_index": index, "item": call_item(&id, call, "in_progress"),
            })));
            yield Ok(sequence.event("response.function_call_arguments.delta", json!({
                "item_id": id, "output_index": index, "delta": call.arguments,
            })));
            yield Ok(sequence.event("response.function_call_arguments.done", json!({
                "item_id": id, "output_index": index, "name": call.name, "arguments": call.arguments,
            })));
            let item = call_item(&id, call, "completed");
            yield Ok(sequence.event("response.output_item.done", json!({
                "output_index": index, "item": item,
            })));
            output.push(item);
        }
        response.finish(&outcome, reason, output);
        let kind = if response.status == "incomplete" { "response.incomplete" } else { "response.completed" };
        yield Ok(sequence.event(kind, json!({"response": response})));
    };
    events_answer(body, None)
}

/// The events of one text delta: the message item and its text part opened first when this is
/// the first text.
fn delta(
    sequence: &mut Sequence,
    message: &mut Option<OpenMessage>,
    text: &str,
) -> Vec<axum::response::sse::Event> {
    let mut events = Vec::with_capacity(3);
    let open = match message {
        Some(open) => open,
        None => {
            let id = item_id("msg");
            events.push(sequence.event(
                "response.output_item.added",
                json!({"output_index": 0, "item": message_item(&id, "", "in_progress")}),
            ));
            events.push(sequence.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": 0, "content_index": 0, "part": text_part("")}),
            ));
            message.insert(OpenMessage {
                id,
                text: String::new(),
            })
        }
    };
    open.text.push_str(text);
    events.push(sequence.event(
        "response.output_text.delta",
        json!({"item_id": open.id, "output_index": 0, "content_index": 0, "delta": text, "logprobs": []}),
    ));
    events
}

/// The events that close the message item: its text, its part, the item.
fn close_message(sequence: &mut Sequence, open: &OpenMessage) -> Vec<axum::response::sse::Event> {
    vec![
        sequence.event(
            "response.output_text.done",
            json!({"item_id": open.id, "output_index": 0, "content_index": 0, "text": open.text, "logprobs": []}),
        ),
        sequence.event(
            "response.content_part.done",
            json!({"item_id": open.id, "output_index": 0, "content_index": 0, "part": text_part(&open.text)}),
        ),
        sequence.event(
            "response.output_item.done",
            json!({"output_index": 0, "item": message_item(&open.id, &open.text, "completed")}),
        ),
    ]
}
