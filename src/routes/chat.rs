//! `POST /v1/chat/completions`: an OpenAI chat completion answered by one agent run.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gateway_layers::admission::Ticket;
use gateway_layers::deadline::Deadline;
use tower::ServiceExt;

use crate::agent::{AgentOutcome, AgentRequest};
use crate::app::AppState;
use crate::metrics::Entry;
use crate::openai::error::OpenAiError;
use crate::openai::wire::{
    AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice, CompletionUsage,
};
use crate::openai::{completion_id, finish_reason, prompt, stream};
use crate::rescue::{classify, RunFailure};

/// A validated chat request, ready to run.
pub(crate) struct ChatRun {
    /// The model as requested (or the default).
    pub(crate) model: String,
    /// What goes down the agent stack.
    pub(crate) request: http::Request<AgentRequest>,
    /// Send a usage chunk at the end of a stream.
    pub(crate) include_usage: bool,
}

/// Handles one chat completion; the run is killed if the client goes away, because dropping
/// this future drops the run's.
pub async fn chat_completions(
    State(state): State<AppState>,
    ticket: Option<Extension<Ticket>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (run, streaming) = match prepare(&state, ticket.map(|Extension(t)| t), body) {
        Ok(prepared) => prepared,
        Err(error) => return error.into_response(),
    };
    if streaming {
        return stream::respond(state, run);
    }
    let ChatRun { model, request, .. } = run;
    // Dropped unfinished if the client goes away: counted as cancelled.
    let timer = state.metrics.start_run(Entry::Chat);
    let result = state
        .agents
        .clone()
        .oneshot(request)
        .await
        .map_err(classify);
    timer.finish(result.as_ref());
    match result {
        Ok(outcome) => match completion(&model, &outcome) {
            Ok(completion) => Json(completion).into_response(),
            Err(error) => error.into_response(),
        },
        Err(failure) => failure_error(failure).into_response(),
    }
}

/// Parses and checks the body and builds the run; says what is wrong with the request if anything.
fn prepare(
    state: &AppState,
    ticket: Option<Ticket>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(ChatRun, bool), OpenAiError> {
    let body = body.map_err(|rejection| {
        OpenAiError::new(
            rejection.status(),
            "invalid_request_error",
            rejection.body_text(),
        )
    })?;
    let chat: ChatCompletionRequest = serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::bad_request(format!("invalid request body: {e}")))?;
    let config = &state.config;
    let model = chat
        .model
        .clone()
        .unwrap_or_else(|| config.default_model.clone());
    if !config.supported_models.contains(&model) {
        return Err(OpenAiError::bad_request(format!(
            "unsupported model {model:?}; supported models: {}",
            config.supported_models.join(", ")
        ))
        .param("model")
        .code("model_not_found")
        .with_field("supported", serde_json::json!(&*config.supported_models)));
    }
    if chat.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::bad_request("only n=1 is supported").param("n"));
    }
    if chat.tools.as_ref().is_some_and(|t| !t.is_null())
        || chat.functions.as_ref().is_some_and(|f| !f.is_null())
    {
        return Err(OpenAiError::bad_request(
            "tools and functions are not supported: the agent uses its own tools",
        )
        .param("tools")
        .code("unsupported_parameter"));
    }
    if let Some(format) = chat.response_format.as_ref().filter(|f| !f.is_null()) {
        if format.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(OpenAiError::bad_request(
                "response_format other than {\"type\": \"text\"} is not supported",
            )
            .param("response_format")
            .code("unsupported_parameter"));
        }
    }
    let prompt = prompt::render(&chat.messages)?;
    let streaming = chat.stream.unwrap_or(false);
    let mut request = http::Request::new(AgentRequest {
        prompt,
        agent: config.chat_agent.clone(),
        model: Some(model.clone()),
        max_budget_usd: config.chat_budget_usd,
        partial_messages: streaming,
    });
    if let Some(ticket) = ticket {
        request.extensions_mut().insert(ticket);
    }
    request
        .extensions_mut()
        .insert(Deadline(config.chat_timeout));
    let include_usage = chat
        .stream_options
        .map(|o| o.include_usage)
        .unwrap_or(false);
    Ok((
        ChatRun {
            model,
            request,
            include_usage,
        },
        streaming,
    ))
}

/// The `chat.completion` for a finished run, or the error for a run that failed.
fn completion(model: &str, outcome: &AgentOutcome) -> Result<ChatCompletion, OpenAiError> {
    let reason = finish_reason::of(outcome).ok_or_else(|| outcome_error(outcome))?;
    Ok(ChatCompletion {
        id: completion_id(),
        object: "chat.completion",
        created: chrono::Utc::now().timestamp(),
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: outcome.text.clone().unwrap_or_default(),
            },
            finish_reason: reason,
        }],
        usage: outcome
            .usage
            .as_ref()
            .map(CompletionUsage::from)
            .unwrap_or_default(),
    })
}

/// The error for a run that ended but did not succeed: 503, as the replaced service answered.
pub(crate) fn outcome_error(outcome: &AgentOutcome) -> OpenAiError {
    let detail = outcome_detail(outcome);
    OpenAiError::unavailable(format!("execution failed: {detail}"), "agent_failed")
        .with_field("detail", serde_json::Value::String(detail))
}

/// One line saying why a run failed: claude's own error text, else stderr, else the exit code.
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
    one_line(&detail, 300)
}

/// The error for a run that produced no outcome.
pub(crate) fn failure_error(failure: RunFailure) -> OpenAiError {
    let detail = one_line(&failure.to_string(), 300);
    let error = match &failure {
        RunFailure::TimedOut(_) => OpenAiError::unavailable(detail.clone(), "timeout"),
        RunFailure::Overloaded => {
            OpenAiError::unavailable(detail.clone(), "queue_full").retry_after(5)
        }
        RunFailure::Workspace(_) => OpenAiError::unavailable(detail.clone(), "workspace_failed"),
        RunFailure::Agent(_) => OpenAiError::unavailable(detail.clone(), "agent_failed"),
        RunFailure::Internal(_) => OpenAiError::internal(detail.clone()),
    };
    error.with_field("detail", serde_json::Value::String(detail))
}

/// Collapses whitespace and cuts at `limit` characters, for one-line error messages.
pub(crate) fn one_line(text: &str, limit: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(limit).collect()
}
