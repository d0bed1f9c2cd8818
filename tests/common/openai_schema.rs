//! OpenAI's published schemas as a check every OpenAI-shaped answer of the suite passes on its way:
//! [`crate::json`] checks every JSON body from `/v1/…` and [`crate::sse_data`] every streamed
//! event (through [`answer_violations`]), so a field OpenAI marks required that the gateway stops sending fails whichever test saw
//! it, with the path of the field.
//!
//! The schemas are `tests/fixtures/openai-schema/schemas.json`, extracted verbatim from OpenAI's
//! document (see the README beside it). A new OpenAI-shaped answer is a new [`Answer`], its schema
//! a root in the extraction script. Streams of `/v1/responses` are checked event by event, each
//! against the schema of its `type`; an event type the gateway should not send is a violation.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// The vendored schemas.
const SCHEMAS: &str = include_str!("../fixtures/openai-schema/schemas.json");

/// An answer the gateway gives in OpenAI's shape, named by the schema it must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// A non-streamed `chat.completion`.
    ChatCompletion,
    /// One streamed `chat.completion.chunk`.
    ChatCompletionChunk,
    /// `GET /v1/models`.
    ModelList,
    /// `GET /v1/models/{id}`.
    Model,
    /// Any error body, `{"error": {…}}`, answered or streamed.
    Error,
    /// A `response` object of `/v1/responses`.
    Response,
    /// One typed event of a streamed response, named by its schema.
    ResponseEvent(&'static str),
}

/// The stream events of `/v1/responses` the gateway may send: `type` and schema name.
const RESPONSE_EVENTS: [(&str, &str); 14] = [
    ("response.created", "ResponseCreatedEvent"),
    ("response.in_progress", "ResponseInProgressEvent"),
    ("response.output_item.added", "ResponseOutputItemAddedEvent"),
    (
        "response.content_part.added",
        "ResponseContentPartAddedEvent",
    ),
    ("response.output_text.delta", "ResponseTextDeltaEvent"),
    ("response.output_text.done", "ResponseTextDoneEvent"),
    ("response.content_part.done", "ResponseContentPartDoneEvent"),
    ("response.output_item.done", "ResponseOutputItemDoneEvent"),
    (
        "response.function_call_arguments.delta",
        "ResponseFunctionCallArgumentsDeltaEvent",
    ),
    (
        "response.function_call_arguments.done",
        "ResponseFunctionCallArgumentsDoneEvent",
    ),
    ("response.completed", "ResponseCompletedEvent"),
    ("response.incomplete", "ResponseIncompleteEvent"),
    ("response.failed", "ResponseFailedEvent"),
    ("error", "ResponseErrorEvent"),
];

impl Answer {
    /// Every answer, each compiled once.
    fn all() -> Vec<Answer> {
        let mut all = vec![
            Answer::ChatCompletion,
            Answer::ChatCompletionChunk,
            Answer::ModelList,
            Answer::Model,
            Answer::Error,
            Answer::Response,
        ];
        all.extend(
            RESPONSE_EVENTS
                .iter()
                .map(|(_, schema)| Answer::ResponseEvent(schema)),
        );
        all
    }

    /// The name of its schema in OpenAI's `components/schemas`.
    pub fn schema(self) -> &'static str {
        match self {
            Answer::ChatCompletion => "CreateChatCompletionResponse",
            Answer::ChatCompletionChunk => "CreateChatCompletionStreamResponse",
            Answer::ModelList => "ListModelsResponse",
            Answer::Model => "Model",
            Answer::Error => "ErrorResponse",
            Answer::Response => "Response",
            Answer::ResponseEvent(schema) => schema,
        }
    }

    /// What a JSON body answered to `path` with this `success` must be; `None` for a route
    /// that does not answer in OpenAI's name.
    pub fn of_response(path: &str, success: bool) -> Option<Answer> {
        let route = path.strip_prefix("/v1/")?;
        // The Messages API answers in Anthropic's shapes, which `tests/messages.rs` checks.
        if route == "messages" || route.starts_with("messages/") {
            return None;
        }
        // The gateway's own route, which OpenAI's API has no counterpart of (its errors are
        // OpenAI's, its answer is the gateway's document's: `tests/budgets.rs` checks it).
        if route == "quota" && success {
            return None;
        }
        if !success {
            return Some(Answer::Error);
        }
        Some(match route {
            "chat/completions" => Answer::ChatCompletion,
            "responses" => Answer::Response,
            "models" => Answer::ModelList,
            model if model.starts_with("models/") => Answer::Model,
            _ => Answer::Error,
        })
    }

    /// What one streamed event of a response must be, by its `type`; `None` for a type the
    /// gateway does not send.
    pub fn of_response_event(event: &Value) -> Option<Answer> {
        let kind = event.get("type")?.as_str()?;
        RESPONSE_EVENTS
            .iter()
            .find(|(name, _)| *name == kind)
            .map(|(_, schema)| Answer::ResponseEvent(schema))
    }

    /// What one streamed chat event must be: a chunk, or an error that ended the stream.
    pub fn of_chat_event(event: &Value) -> Answer {
        if event.get("error").is_some() {
            Answer::Error
        } else {
            Answer::ChatCompletionChunk
        }
    }
}

/// One validator per answer, compiled once per test binary.
fn validators() -> &'static HashMap<Answer, jsonschema::Validator> {
    static VALIDATORS: OnceLock<HashMap<Answer, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let document: Value = serde_json::from_str(SCHEMAS).expect("the vendored schemas parse");
        let components = or_null(document["components"].clone());
        Answer::all()
            .into_iter()
            .map(|answer| {
                let root = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$ref": format!("#/components/schemas/{}", answer.schema()),
                    "components": components,
                });
                let validator = jsonschema::draft202012::new(&root)
                    .unwrap_or_else(|e| panic!("schema {} compiles: {e}", answer.schema()));
                (answer, validator)
            })
            .collect()
    })
}

/// OpenAI's schemas keep 3.0's `nullable: true` in places; in 2020-12 it is "or null".
fn or_null(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut map: Map<String, Value> =
                map.into_iter().map(|(k, v)| (k, or_null(v))).collect();
            if map.remove("nullable") == Some(Value::Bool(true)) {
                json!({"anyOf": [{"type": "null"}, map]})
            } else {
                Value::Object(map)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(or_null).collect()),
        other => other,
    }
}

/// The schema errors of `body` as `answer`, one line each with the path of the field; empty
/// when it conforms.
pub fn violations(answer: Answer, body: &Value) -> Vec<String> {
    validators()[&answer]
        .iter_errors(body)
        .map(|error| {
            format!(
                "at {:?}: {} (schema {})",
                error.instance_path().as_str(),
                error.masked(),
                error.schema_path().as_str()
            )
        })
        .collect()
}

/// The `data:` payloads of a Server-Sent Events body.
pub fn sse_payloads(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            line.strip_prefix("data: ")
                .or_else(|| line.strip_prefix("data:"))
        })
        .map(|data| data.trim().to_owned())
        .collect()
}

/// The schema errors of a whole answer to `path` (a JSON body, or with `streamed` an event
/// stream whose every event but `[DONE]` is checked); empty when it conforms or the route does
/// not answer in OpenAI's name.
pub fn answer_violations(path: &str, success: bool, streamed: bool, text: &str) -> Vec<String> {
    let Some(answer) = Answer::of_response(path, success) else {
        return Vec::new();
    };
    let parse = |text: &str| {
        serde_json::from_str::<Value>(text).map_err(|e| vec![format!("not JSON ({e}): {text}")])
    };
    if !streamed {
        return parse(text).map_or_else(|e| e, |body| violations(answer, &body));
    }
    sse_payloads(text)
        .iter()
        .filter(|data| *data != "[DONE]")
        .flat_map(|data| match parse(data) {
            Ok(event) if answer == Answer::Response => match Answer::of_response_event(&event) {
                Some(kind) => violations(kind, &event),
                None => vec![format!("an event type OpenAI does not send here: {event}")],
            },
            Ok(event) => violations(Answer::of_chat_event(&event), &event),
            Err(errors) => errors,
        })
        .collect()
}
