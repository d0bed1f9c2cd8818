//! What one agent run produced.

use serde::Serialize;

/// Token counts the CLI reports in its final `result` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
}

/// The result of a run that started and ended (whatever its exit code).
///
/// A run that could not start, hung, or overflowed its caps is an error instead (see
/// [`AgentError`](super::AgentError)); a run whose CLI exited non-zero or reported `is_error`
/// is still an outcome, so the caller sees its exit code and stderr.
#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    /// The CLI's exit code; `None` when it was ended by a signal.
    pub exit_code: Option<i32>,
    /// The final `{"type":"result",...}` event, as the CLI printed it.
    pub result: Option<serde_json::Value>,
    /// The final `result` event as one line of JSON: the seed's `output` list held exactly this.
    pub result_line: Option<String>,
    /// The answer text: the `result` field of the final event.
    pub text: Option<String>,
    /// Tokens, when the CLI reported them.
    pub usage: Option<Usage>,
    /// `total_cost_usd` of the final event.
    pub cost_usd: Option<f64>,
    /// The CLI's session id.
    pub session_id: Option<String>,
    /// Whether the CLI itself said the run failed (`is_error` of the final event).
    pub is_error: bool,
    /// `subtype` of the final event (`success`, `error_max_turns`, `error_max_budget_usd`, ...).
    pub subtype: Option<String>,
    /// Everything the CLI wrote to stderr, up to the cap.
    pub stderr: String,
    /// Whether stderr was cut at the cap.
    pub stderr_truncated: bool,
    /// Wall time of the run in milliseconds.
    pub duration_ms: u64,
}

impl AgentOutcome {
    /// A run succeeded when the CLI exited 0 and did not report an error.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.is_error
    }
}
