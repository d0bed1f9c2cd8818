//! OpenAI chat-completion wire types: what clients send and what the gateway answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::tools::FunctionFields;

/// A `POST /v1/chat/completions` body: the fields the gateway acts on. Any other field is
/// accepted and ignored (`tool_choice`, `max_tokens`, `temperature`, `top_p`, `stop`, `seed`,
/// `user`, … as listed in the README), so that stock clients, which send them routinely, are not
/// refused: the agent decides its own length and sampling, bounded by its budget and deadline.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "haiku", "messages": [{"role": "user", "content": "Say hello"}]}))]
pub(crate) struct ChatCompletionRequest {
    /// Model id; `DEFAULT_MODEL` when absent.
    pub(crate) model: Option<String>,
    /// The conversation; at least one message.
    pub(crate) messages: Vec<ChatMessage>,
    /// Answer as Server-Sent Events.
    pub(crate) stream: Option<bool>,
    /// Streaming options (`include_usage`).
    pub(crate) stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is possible.
    pub(crate) n: Option<u32>,
    /// Function calling: `tools`, `tool_choice`, `parallel_tool_calls`.
    #[serde(flatten)]
    pub(crate) calling: FunctionFields,
    /// Legacy function definitions: not supported (use `tools`).
    pub(crate) functions: Option<Value>,
    /// Output format: `text`, `json_object` or `json_schema` (see [`super::format`]).
    pub(crate) response_format: Option<Value>,
    /// How hard the model thinks: the CLI's `--effort`.
    pub(crate) reasoning_effort: Option<Value>,
    /// The handle of an earlier answer's session to continue (the gateway's extension; also the
    /// `x-session-id` header): `messages` then holds only the new turn.
    pub(crate) session_id: Option<String>,
}

/// `stream_options` of a request.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default)]
    pub(crate) include_usage: bool,
}

/// One message of the conversation.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub(crate) role: String,
    /// A string, an array of content parts, or null (assistant tool calls).
    pub(crate) content: Option<Value>,
    /// The calls of an assistant turn, as an earlier answer carried them.
    #[schema(value_type = Option<Vec<Object>>)]
    pub(crate) tool_calls: Option<Value>,
    /// Of a `tool` message: the call it answers.
    pub(crate) tool_call_id: Option<String>,
}

/// A non-streamed answer: an OpenAI `chat.completion` object.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChatCompletion {
    /// `chatcmpl-…`.
    pub(crate) id: String,
    /// Always `chat.completion`.
    pub(crate) object: &'static str,
    /// Unix seconds.
    pub(crate) created: i64,
    /// The model as requested.
    pub(crate) model: String,
    /// One choice.
    pub(crate) choices: Vec<Choice>,
    /// Tokens as claude reported them.
    pub(crate) usage: CompletionUsage,
    /// The handle that continues this conversation (also the `x-session-id` header); absent
    /// when sessions are not kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_id: Option<String>,
}

/// The one choice of an answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Choice {
    /// Always 0.
    pub(crate) index: u32,
    /// The assistant's message.
    pub(crate) message: AssistantMessage,
    /// How the run ended (see the README's table).
    pub(crate) finish_reason: &'static str,
    /// Always `null`: the CLI reports no log probabilities. OpenAI requires the field and sends
    /// `null` when none were asked for.
    #[schema(value_type = Option<Object>)]
    pub(crate) logprobs: Option<Value>,
}

/// The assistant message of a choice.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AssistantMessage {
    /// Always `assistant`.
    pub(crate) role: &'static str,
    /// The agent's answer text; `null` when the answer is calls of the caller's functions.
    pub(crate) content: Option<String>,
    /// Always `null`: the agent does not refuse through this field. OpenAI requires it and sends
    /// `null` when the model did not refuse.
    pub(crate) refusal: Option<String>,
    /// The agent's calls of the caller's functions (with `finish_reason: "tool_calls"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<Vec<ToolCall>>,
}

/// A call of one of the caller's functions, as an answer carries it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ToolCall {
    /// `call_…`: what the `tool` message with the result names as `tool_call_id`.
    pub(crate) id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The function and its arguments.
    pub(crate) function: FunctionCallBody,
}

/// The function of a [`ToolCall`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct FunctionCallBody {
    /// The function's name.
    pub(crate) name: String,
    /// Its arguments, as JSON text.
    pub(crate) arguments: String,
}

impl ToolCall {
    /// The answer's form of a call the agent made.
    pub(crate) fn from_call(call: &crate::agent::FunctionCall) -> Self {
        Self {
            id: super::tools::call_id(call),
            kind: "function",
            function: FunctionCallBody {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            },
        }
    }
}

/// One streamed `chat.completion.chunk`: a Server-Sent Event's data.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChatCompletionChunk {
    /// `chatcmpl-…`, the same in every chunk of a stream.
    pub(crate) id: String,
    /// Always `chat.completion.chunk`.
    pub(crate) object: &'static str,
    /// Unix seconds when the stream began.
    pub(crate) created: i64,
    /// The model as requested.
    pub(crate) model: String,
    /// One choice; none in the last chunk when usage was asked for.
    pub(crate) choices: Vec<ChunkChoice>,
    /// Only in the last chunk, when `stream_options.include_usage` asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<CompletionUsage>,
}

/// The one choice of a chunk.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChunkChoice {
    /// Always 0.
    pub(crate) index: u32,
    /// `{"role": "assistant", "content": ""}` first, then `{"content": "…"}`, then `{}`.
    #[schema(value_type = Object)]
    pub(crate) delta: Value,
    /// How the run ended, in the last chunk with a choice; `null` before.
    pub(crate) finish_reason: Option<&'static str>,
}

/// A model as `GET /v1/models` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Model {
    /// The model id, as `model` in a request names it.
    pub(crate) id: String,
    /// Always `model`.
    pub(crate) object: &'static str,
    /// Unix seconds: when this gateway started.
    pub(crate) created: i64,
    /// Always `anthropic`.
    pub(crate) owned_by: &'static str,
}

/// `GET /v1/models`: every supported model.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    pub(crate) object: &'static str,
    /// The supported models.
    pub(crate) data: Vec<Model>,
}

/// OpenAI `usage`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, ToSchema)]
pub(crate) struct CompletionUsage {
    /// Input tokens, cache reads and writes included.
    pub(crate) prompt_tokens: u64,
    /// Output tokens.
    pub(crate) completion_tokens: u64,
    /// The sum.
    pub(crate) total_tokens: u64,
}

/// Input tokens as OpenAI counts them: uncached, read from the cache and written to it
/// (saturating: the counts come from the agent's output).
pub(crate) fn prompt_tokens(usage: &crate::agent::Usage) -> u64 {
    usage
        .input_tokens
        .saturating_add(usage.cache_read_input_tokens)
        .saturating_add(usage.cache_creation_input_tokens)
}

impl From<&crate::agent::Usage> for CompletionUsage {
    fn from(usage: &crate::agent::Usage) -> Self {
        let prompt_tokens = prompt_tokens(usage);
        Self {
            prompt_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: prompt_tokens.saturating_add(usage.output_tokens),
        }
    }
}
