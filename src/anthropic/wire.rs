//! Anthropic Messages API wire types: what clients send to `POST /v1/messages` and what the
//! gateway answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A `POST /v1/messages` body. `model`, `max_tokens` and `messages` are required, as Anthropic
/// requires them. The sampling fields (`max_tokens`, `temperature`, `top_p`, `top_k`,
/// `stop_sequences`), `metadata`, `thinking` and `service_tier` are checked for their type and
/// otherwise ignored: the CLI has no such flags, and a run is bounded by its budget and deadline
/// instead. Unknown fields are tolerated.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "haiku", "max_tokens": 1024, "messages": [{"role": "user", "content": "Say hello"}]}))]
pub(crate) struct MessagesRequest {
    /// One of `SUPPORTED_MODELS`; any other is a 404 `not_found_error`.
    pub(crate) model: String,
    /// Required, at least 1, and ignored: the agent's answer is bounded by its budget and
    /// deadline, not a token count.
    #[schema(minimum = 1)]
    pub(crate) max_tokens: u64,
    /// The conversation: user and assistant turns, ending on a user turn that holds text.
    pub(crate) messages: Vec<InputMessage>,
    /// System prompt: a string or text blocks. Joined into the prompt's preamble, as chat's
    /// system messages are.
    pub(crate) system: Option<SystemPrompt>,
    /// Answer as Server-Sent Events.
    pub(crate) stream: Option<bool>,
    /// `format` (a JSON Schema the answer must fit: `--json-schema`) and `effort` (`--effort`).
    pub(crate) output_config: Option<OutputConfig>,
    /// Tool definitions: refused (400); the agent uses its own tools.
    #[schema(value_type = Option<Vec<Object>>)]
    pub(crate) tools: Option<Value>,
    /// Tool choice: ignored, as no `tools` are served.
    #[allow(dead_code)] // Accepted, not acted on.
    #[schema(value_type = Option<Object>)]
    pub(crate) tool_choice: Option<Value>,
    /// `user_id`: accepted and ignored.
    #[allow(dead_code)] // Read for its type only: documented and accepted, not acted on.
    pub(crate) metadata: Option<Metadata>,
    /// Accepted and ignored: the agent decides when its answer ends.
    #[allow(dead_code)] // Read for its type only: documented and accepted, not acted on.
    pub(crate) stop_sequences: Option<Vec<String>>,
    /// Accepted and ignored.
    #[allow(dead_code)] // Read for its type only: documented and accepted, not acted on.
    pub(crate) temperature: Option<f64>,
    /// Accepted and ignored.
    #[allow(dead_code)] // Read for its type only: documented and accepted, not acted on.
    pub(crate) top_p: Option<f64>,
    /// Accepted and ignored.
    #[allow(dead_code)] // Read for its type only: documented and accepted, not acted on.
    pub(crate) top_k: Option<u64>,
    /// Extended thinking: accepted and ignored (use `output_config.effort`).
    #[allow(dead_code)] // Accepted, not acted on.
    #[schema(value_type = Option<Object>)]
    pub(crate) thinking: Option<Value>,
}

/// `metadata` of a request.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct Metadata {
    /// An opaque id of the end user: accepted and ignored.
    #[allow(dead_code)] // Read for its type only.
    pub(crate) user_id: Option<String>,
}

/// `output_config` of a request.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct OutputConfig {
    /// `low`, `medium`, `high`, `xhigh` or `max`: the CLI's `--effort` (403 above
    /// `MAX_EFFORT`).
    #[schema(value_type = Option<String>)]
    pub(crate) effort: Option<Value>,
    /// `{"type": "json_schema", "schema": {…}}`: the answer's text is a JSON value that fits
    /// `schema` (`--json-schema`).
    #[schema(value_type = Option<Object>)]
    pub(crate) format: Option<Value>,
}

/// The system prompt: a string, or text blocks whose texts are joined.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or an array of text blocks")]
pub(crate) enum SystemPrompt {
    /// One string.
    Text(String),
    /// Text blocks (`{"type": "text", "text": …}`).
    Blocks(Vec<InputBlock>),
}

/// One message of the conversation.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct InputMessage {
    /// `user` or `assistant`.
    pub(crate) role: String,
    /// A string, or content blocks of which only `text` ones are served.
    pub(crate) content: InputContent,
}

/// The content of a message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or an array of content blocks")]
pub(crate) enum InputContent {
    /// One string.
    Text(String),
    /// Content blocks.
    Blocks(Vec<InputBlock>),
}

/// A content block of a request. Only `text` blocks are served; `image`, `document`,
/// `tool_use`, `tool_result` and the rest are refused with 400.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct InputBlock {
    /// The block's type: `text`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The text of a `text` block.
    pub(crate) text: Option<String>,
}

/// A non-streamed answer: Anthropic's `message` object.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Message {
    /// `msg_…`.
    pub(crate) id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "message")]
    pub(crate) kind: &'static str,
    /// Always `assistant`.
    #[schema(value_type = String, example = "assistant")]
    pub(crate) role: &'static str,
    /// One text block: the agent's answer.
    pub(crate) content: Vec<TextBlock>,
    /// The model as requested.
    pub(crate) model: String,
    /// `end_turn`, or `max_tokens` for a run cut short by its turn or budget limit.
    #[schema(value_type = String)]
    pub(crate) stop_reason: &'static str,
    /// Always `null`: `stop_sequences` are not acted on.
    pub(crate) stop_sequence: Option<String>,
    /// Tokens as claude reported them.
    pub(crate) usage: Usage,
}

/// A text content block of an answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TextBlock {
    /// Always `text`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "text")]
    pub(crate) kind: &'static str,
    /// The text.
    pub(crate) text: String,
}

impl TextBlock {
    /// A text block holding `text`.
    pub(crate) fn new(text: String) -> Self {
        Self { kind: "text", text }
    }
}

/// Anthropic's `usage`, summed over the run's API calls as claude reports it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, ToSchema)]
pub(crate) struct Usage {
    /// Input tokens not read from or written to the prompt cache.
    pub(crate) input_tokens: u64,
    /// Output tokens.
    pub(crate) output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub(crate) cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub(crate) cache_read_input_tokens: u64,
}

impl From<&crate::agent::Usage> for Usage {
    fn from(usage: &crate::agent::Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
        }
    }
}
