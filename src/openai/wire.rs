//! OpenAI chat-completion wire types: what clients send and what the gateway answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A `POST /v1/chat/completions` body. Fields the gateway does not act on are accepted (and
/// listed in the README) so that stock clients, which send them routinely, are not refused.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model id; `DEFAULT_MODEL` when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation; at least one message.
    pub messages: Vec<ChatMessage>,
    /// Answer as Server-Sent Events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is possible.
    #[serde(default)]
    pub n: Option<u32>,
    /// Tool definitions: not supported yet.
    #[serde(default)]
    pub tools: Option<Value>,
    /// Legacy function definitions: not supported yet.
    #[serde(default)]
    pub functions: Option<Value>,
    /// Tool choice; only meaningful with `tools`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Output format; only `text` is possible.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Accepted and ignored: the agent decides its own length; budget and deadline bound it.
    #[serde(default)]
    pub max_tokens: Option<Value>,
    /// Accepted and ignored, as `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<Value>,
    /// Accepted and ignored: the CLI has no sampling flags.
    #[serde(default)]
    pub temperature: Option<Value>,
    /// Accepted and ignored, as `temperature`.
    #[serde(default)]
    pub top_p: Option<Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub stop: Option<Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub seed: Option<Value>,
    /// Accepted and logged with the request.
    #[serde(default)]
    pub user: Option<Value>,
}

/// `stream_options` of a request.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// One message of the conversation.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, an array of content parts, or null (assistant tool calls).
    #[serde(default)]
    pub content: Option<Value>,
    /// Tool calls of an assistant turn: refused until tools are supported.
    #[serde(default)]
    pub tool_calls: Option<Value>,
}

/// A non-streamed answer: an OpenAI `chat.completion` object.
#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The model as requested.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Tokens as claude reported them.
    pub usage: CompletionUsage,
}

/// The one choice of an answer.
#[derive(Debug, Serialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The assistant's message.
    pub message: AssistantMessage,
    /// How the run ended (see the README's table).
    pub finish_reason: &'static str,
}

/// The assistant message of a choice.
#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The agent's answer text.
    pub content: String,
}

/// OpenAI `usage`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CompletionUsage {
    /// Input tokens, cache reads and writes included.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// The sum.
    pub total_tokens: u64,
}

impl From<&crate::agent::Usage> for CompletionUsage {
    fn from(usage: &crate::agent::Usage) -> Self {
        let prompt_tokens =
            usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens;
        Self {
            prompt_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: prompt_tokens + usage.output_tokens,
        }
    }
}
