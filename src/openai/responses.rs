//! OpenAI's Responses API on the wire: the request (`input` as a string or items), the `response`
//! object, and the typed stream events, each numbered by `sequence_number`.

use axum::response::sse::Event;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::agent::{AgentOutcome, FunctionCall};

use super::error::OpenAiError;
use super::prompt::{called, joined_text, PartError, Turn};
use super::tools::{call_id, FunctionFields};

/// Fields of OpenAI's `CreateResponse` that the gateway accepts; any other is refused as OpenAI
/// refuses it (400 `Unknown parameter`). Some are accepted and ignored (see the README).
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "stream",
    "stream_options",
    "previous_response_id",
    "store",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "max_tool_calls",
    "temperature",
    "top_p",
    "top_logprobs",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "text",
    "reasoning",
    "truncation",
    "include",
    "background",
    "conversation",
    "prompt",
];

/// A `POST /v1/responses` body: the fields the gateway acts on. Sampling and length fields
/// (`temperature`, `top_p`, `max_output_tokens`, …) are accepted and ignored: the agent decides
/// its own, bounded by its budget and deadline. A field OpenAI does not define is a 400.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "haiku", "input": "Say hello"}))]
pub(crate) struct CreateResponseRequest {
    /// Model id; `DEFAULT_MODEL` when absent.
    pub(crate) model: Option<String>,
    /// A string (one user message) or a list of items: messages (`input_text` content),
    /// `function_call` and `function_call_output` items.
    #[schema(value_type = Object)]
    pub(crate) input: Value,
    /// System (developer) text put before the conversation.
    pub(crate) instructions: Option<String>,
    /// Answer as typed Server-Sent Events.
    pub(crate) stream: Option<bool>,
    /// Continue the conversation of this earlier response (`resp_…`) of the same caller:
    /// `input` then holds only the new turn.
    pub(crate) previous_response_id: Option<String>,
    /// Keep this response's session so that `previous_response_id` can continue it (default
    /// true); the response object itself is not kept.
    pub(crate) store: Option<bool>,
    /// Function calling: `tools`, `tool_choice`, `parallel_tool_calls`.
    #[serde(flatten)]
    pub(crate) calling: FunctionFields,
    /// `{"effort": …}`: the CLI's `--effort`.
    #[schema(value_type = Option<Object>)]
    pub(crate) reasoning: Option<Value>,
    /// `{"format": {"type": "text"}}`: only text answers.
    #[schema(value_type = Option<Object>)]
    pub(crate) text: Option<Value>,
    /// Accepted and echoed; not acted on.
    #[schema(value_type = Option<Object>)]
    pub(crate) metadata: Option<Value>,
    /// Accepted and echoed; not acted on.
    #[schema(value_type = Option<u64>)]
    pub(crate) max_output_tokens: Option<Value>,
    /// Only `false`: the gateway does not run responses in the background.
    #[schema(value_type = Option<bool>)]
    pub(crate) background: Option<Value>,
    /// Not supported: conversations are continued by `previous_response_id`.
    #[schema(value_type = Option<Object>)]
    pub(crate) conversation: Option<Value>,
    /// Not supported: prompt templates.
    #[schema(value_type = Option<Object>)]
    pub(crate) prompt: Option<Value>,
}

impl CreateResponseRequest {
    /// Parses a body, refusing fields OpenAI does not define (as OpenAI does) and the ones the
    /// gateway cannot honour.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, OpenAiError> {
        let fields: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| OpenAiError::bad_request(format!("invalid request body: {e}")))?;
        if let Some(unknown) = fields.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(
                OpenAiError::bad_request(format!("Unknown parameter: '{unknown}'."))
                    .param(unknown.clone())
                    .code("unknown_parameter"),
            );
        }
        let request: Self = serde_json::from_value(Value::Object(fields))
            .map_err(|e| OpenAiError::bad_request(format!("invalid request body: {e}")))?;
        let unsupported = |field: &'static str, why: &str| {
            Err(OpenAiError::bad_request(format!("{field}: {why}"))
                .param(field)
                .code("unsupported_parameter"))
        };
        if request
            .background
            .as_ref()
            .is_some_and(|b| *b == json!(true))
        {
            return unsupported(
                "background",
                "responses are not run in the background here; stream instead",
            );
        }
        if request.conversation.as_ref().is_some_and(|c| !c.is_null()) {
            return unsupported(
                "conversation",
                "conversation objects are not supported; continue with previous_response_id",
            );
        }
        if request.prompt.as_ref().is_some_and(|p| !p.is_null()) {
            return unsupported("prompt", "prompt templates are not supported");
        }
        if let Some(kind) = request
            .text
            .as_ref()
            .and_then(|t| t.pointer("/format/type"))
        {
            if kind != "text" {
                return unsupported(
                    "text",
                    "only text.format {\"type\": \"text\"} is supported; structured output is on chat completions (response_format)",
                );
            }
        }
        Ok(request)
    }

    /// `input` (and `instructions`) as turns of a conversation, or which item cannot be served.
    pub(crate) fn turns(&self) -> Result<Vec<Turn>, OpenAiError> {
        let mut turns = Vec::new();
        if let Some(instructions) = self.instructions.as_ref().filter(|i| !i.is_empty()) {
            turns.push(Turn::System(instructions.clone()));
        }
        match &self.input {
            Value::String(text) if text.trim().is_empty() => {
                return Err(OpenAiError::bad_request("input must hold some text").param("input"))
            }
            Value::String(text) => turns.push(Turn::User(text.clone())),
            Value::Array(items) if items.is_empty() => {
                return Err(
                    OpenAiError::bad_request("input must hold at least one item").param("input"),
                )
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let turn = item_turn(index, item, &turns)?;
                    turns.push(turn);
                }
            }
            _ => {
                return Err(OpenAiError::bad_request(
                    "input must be a string or an array of input items",
                )
                .param("input"))
            }
        }
        Ok(turns)
    }
}

fn bad_item(index: usize, field: &str, message: String) -> OpenAiError {
    let param = if field.is_empty() {
        format!("input[{index}]")
    } else {
        format!("input[{index}].{field}")
    };
    OpenAiError::bad_request(format!("{param}: {message}"))
        .param(param)
        .code("invalid_input_item")
}

/// One input item as a turn.
fn item_turn(index: usize, item: &Value, earlier: &[Turn]) -> Result<Turn, OpenAiError> {
    let Some(object) = item.as_object() else {
        return Err(bad_item(
            index,
            "",
            "an input item must be an object".into(),
        ));
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    let kind = match object.get("type") {
        None => "message",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(bad_item(index, "type", "must be a string".into())),
    };
    match kind {
        "message" => {
            let role = text("role")
                .ok_or_else(|| bad_item(index, "role", "a message needs a role".into()))?;
            let content = message_text(index, object.get("content"))?;
            match role {
                "user" if content.trim().is_empty() => {
                    Err(bad_item(index, "content", "must hold some text".into()))
                }
                "user" => Ok(Turn::User(content)),
                "assistant" => Ok(Turn::Assistant(content)),
                "system" | "developer" => Ok(Turn::System(content)),
                other => Err(bad_item(
                    index,
                    "role",
                    format!("{other:?} is not one of user, assistant, system, developer"),
                )),
            }
        }
        "function_call" => {
            let need = |key: &str| {
                text(key)
                    .map(str::to_owned)
                    .ok_or_else(|| bad_item(index, key, "must be a string".into()))
            };
            Ok(Turn::Call {
                id: need("call_id")?,
                name: need("name")?,
                arguments: need("arguments")?,
            })
        }
        "function_call_output" => {
            let id = text("call_id")
                .ok_or_else(|| bad_item(index, "call_id", "must be a string".into()))?;
            let name = called(earlier, id).ok_or_else(|| {
                bad_item(
                    index,
                    "call_id",
                    format!("{id:?} answers no function_call item before it (send the call too, as the response output it came in)"),
                )
            })?;
            let output = match object.get("output") {
                Some(Value::String(output)) => output.clone(),
                Some(parts @ Value::Array(_)) => message_text(index, Some(parts))?,
                _ => {
                    return Err(bad_item(
                        index,
                        "output",
                        "must be a string or a list of text parts".into(),
                    ))
                }
            };
            Ok(Turn::Result {
                id: id.to_owned(),
                name,
                output,
            })
        }
        other => Err(bad_item(
            index,
            "type",
            format!("items of type {other:?} are not supported; only message, function_call and function_call_output are"),
        )),
    }
}

/// The text of a message item's `content`: a string, or text parts (`input_text`,
/// `output_text`) joined by newlines.
fn message_text(index: usize, content: Option<&Value>) -> Result<String, OpenAiError> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => joined_text(parts, &["input_text", "output_text", "text"])
            .map_err(|error| {
                let why = match error {
                    PartError::NoText => "a text part needs a string `text`".into(),
                    PartError::Unsupported(other) => format!(
                        "content parts of type {other:?} are not supported; only input_text and output_text are"
                    ),
                };
                bad_item(index, "content", why)
            }),
        _ => Err(bad_item(
            index,
            "content",
            "must be a string or a list of content parts".into(),
        )),
    }
}

/// OpenAI's `usage` of a response.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub(crate) struct ResponseUsage {
    /// Input tokens, cache reads and writes included.
    pub(crate) input_tokens: u64,
    /// Of which read from and written to the cache.
    pub(crate) input_tokens_details: InputTokensDetails,
    /// Output tokens.
    pub(crate) output_tokens: u64,
    /// Always 0 reasoning tokens: the CLI does not report them apart.
    pub(crate) output_tokens_details: OutputTokensDetails,
    /// The sum.
    pub(crate) total_tokens: u64,
}

/// `input_tokens_details`.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub(crate) struct InputTokensDetails {
    /// Read from the prompt cache.
    pub(crate) cached_tokens: u64,
    /// Written to the prompt cache.
    pub(crate) cache_write_tokens: u64,
}

/// `output_tokens_details`.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub(crate) struct OutputTokensDetails {
    /// Always 0.
    pub(crate) reasoning_tokens: u64,
}

impl From<&crate::agent::Usage> for ResponseUsage {
    fn from(usage: &crate::agent::Usage) -> Self {
        let input = super::wire::prompt_tokens(usage);
        Self {
            input_tokens: input,
            input_tokens_details: InputTokensDetails {
                cached_tokens: usage.cache_read_input_tokens,
                cache_write_tokens: usage.cache_creation_input_tokens,
            },
            output_tokens: usage.output_tokens,
            output_tokens_details: OutputTokensDetails::default(),
            total_tokens: input.saturating_add(usage.output_tokens),
        }
    }
}

/// `error` of a failed response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ResponseError {
    /// Always `server_error`: the run failed.
    pub(crate) code: &'static str,
    /// Why.
    pub(crate) message: String,
}

/// OpenAI's `response` object. Every field OpenAI requires is present; the ones the gateway does
/// not act on carry what OpenAI sends when nothing was asked (`null`, `[]`, `{}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ResponseObject {
    /// `resp_…`: what `previous_response_id` names to continue.
    pub(crate) id: String,
    /// Always `response`.
    pub(crate) object: &'static str,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// `in_progress` while streaming, then `completed`, `incomplete` or `failed`.
    pub(crate) status: &'static str,
    /// Unix seconds, once completed.
    pub(crate) completed_at: Option<i64>,
    /// Why it failed, when it did.
    pub(crate) error: Option<ResponseError>,
    /// `{"reason": "max_output_tokens"}` when the run stopped at its turn or budget limit.
    #[schema(value_type = Option<Object>)]
    pub(crate) incomplete_details: Option<Value>,
    /// The request's `instructions`.
    pub(crate) instructions: Option<String>,
    /// The request's `max_output_tokens`, echoed (not acted on).
    #[schema(value_type = Option<u64>)]
    pub(crate) max_output_tokens: Value,
    /// The model as requested.
    pub(crate) model: String,
    /// A `message` item with the answer's `output_text`, or `function_call` items.
    #[schema(value_type = Vec<Object>)]
    pub(crate) output: Vec<Value>,
    /// The request's `parallel_tool_calls` (default true).
    pub(crate) parallel_tool_calls: bool,
    /// The request's `previous_response_id`.
    pub(crate) previous_response_id: Option<String>,
    /// `{"effort": …, "summary": null}`.
    #[schema(value_type = Object)]
    pub(crate) reasoning: Value,
    /// Whether its session is kept for `previous_response_id`.
    pub(crate) store: bool,
    /// Always `null`: the agent's sampling is its own.
    pub(crate) temperature: Option<f64>,
    /// Always `{"format": {"type": "text"}}`.
    #[schema(value_type = Object)]
    pub(crate) text: Value,
    /// The request's `tool_choice` (default `auto`).
    #[schema(value_type = Object)]
    pub(crate) tool_choice: Value,
    /// The request's functions, normalized as OpenAI echoes them (default `[]`).
    #[schema(value_type = Vec<Object>)]
    pub(crate) tools: Value,
    /// Always `null`.
    pub(crate) top_p: Option<f64>,
    /// Always `disabled`.
    pub(crate) truncation: &'static str,
    /// Tokens, once finished (absent before: OpenAI's schema has no `null` for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<ResponseUsage>,
    /// The request's `metadata` (default `{}`).
    #[schema(value_type = Object)]
    pub(crate) metadata: Value,
}

impl ResponseObject {
    /// Finishes the response of a run that ended with `outcome` for `reason` (see
    /// [`super::finish_reason`]), holding `output` (the message, or the function calls).
    pub(crate) fn finish(&mut self, outcome: &AgentOutcome, reason: &str, output: Vec<Value>) {
        self.status = if reason == "length" {
            "incomplete"
        } else {
            "completed"
        };
        if reason == "length" {
            self.incomplete_details = Some(json!({"reason": "max_output_tokens"}));
        } else {
            self.completed_at = Some(chrono::Utc::now().timestamp());
        }
        self.output = output;
        self.usage = Some(
            outcome
                .usage
                .as_ref()
                .map(ResponseUsage::from)
                .unwrap_or_default(),
        );
    }

    /// Marks it failed with `error`.
    pub(crate) fn fail(&mut self, error: &OpenAiError) {
        self.status = "failed";
        self.error = Some(ResponseError {
            code: "server_error",
            message: error.message().to_owned(),
        });
    }
}

/// A fresh id with `prefix` (`msg`, `fc`).
pub(crate) fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A `message` output item holding `text`.
pub(crate) fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([text_part(text)])
    };
    json!({"id": id, "type": "message", "role": "assistant", "status": status, "content": content})
}

/// An `output_text` content part.
pub(crate) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `function_call` output item for `call`.
pub(crate) fn call_item(id: &str, call: &FunctionCall, status: &str) -> Value {
    let arguments = if status == "in_progress" {
        ""
    } else {
        call.arguments.as_str()
    };
    json!({
        "id": id,
        "type": "function_call",
        "call_id": call_id(call),
        "name": call.name,
        "arguments": arguments,
        "status": status,
    })
}

/// Numbers the events of one streamed response.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    next: u64,
}

impl Sequence {
    /// An event of `kind` with `fields`, numbered next. The SSE event name is the type, as
    /// OpenAI sends it.
    pub(crate) fn event(&mut self, kind: &str, fields: Value) -> Event {
        let mut data = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        data.insert("type".into(), json!(kind));
        data.insert("sequence_number".into(), json!(self.next));
        self.next += 1;
        Event::default()
            .event(kind)
            .data(Value::Object(data).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<CreateResponseRequest, OpenAiError> {
        CreateResponseRequest::parse(body.to_string().as_bytes())
    }

    #[test]
    fn a_string_input_is_one_user_turn_after_the_instructions() {
        let turns = request(json!({"input": "hi", "instructions": "be brief"}))
            .unwrap()
            .turns()
            .unwrap();
        assert_eq!(
            turns,
            [Turn::System("be brief".into()), Turn::User("hi".into())]
        );
    }

    #[test]
    fn items_become_turns_with_calls_and_results() {
        let turns = request(json!({"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
        ]}))
        .unwrap()
        .turns()
        .unwrap();
        assert_eq!(
            turns[2],
            Turn::Result {
                id: "call_1".into(),
                name: "get_weather".into(),
                output: "sunny".into()
            }
        );
    }

    #[test]
    fn bad_items_and_unknown_fields_name_their_field() {
        for (body, param) in [
            (json!({"input": "hi", "bogus": 1}), "bogus"),
            (json!({"input": 5}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": [{"type": "reasoning"}]}), "input[0].type"),
            (
                json!({"input": [{"role": "wizard", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
                "input[0].content",
            ),
            (
                json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}),
                "input[0].call_id",
            ),
            (
                json!({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}),
                "input[0].arguments",
            ),
            (json!({"input": "hi", "background": true}), "background"),
            (
                json!({"input": "hi", "text": {"format": {"type": "json_object"}}}),
                "text",
            ),
        ] {
            let error = request(body.clone())
                .and_then(|r| r.turns().map(|_| ()))
                .unwrap_err();
            assert_eq!(
                error.param_str(),
                Some(param),
                "{body}: {}",
                error.message()
            );
        }
    }

    #[test]
    fn sequence_numbers_count_up_from_zero() {
        let mut sequence = Sequence::default();
        let _ = sequence.event("response.created", json!({}));
        let _ = sequence.event("response.in_progress", json!({}));
        assert_eq!(sequence.next, 2);
    }
}
