//! What a caller asks the agent to do: the body of the `http::Request` that travels down the stack.

use tokio::sync::mpsc;

/// One agent run, as the routes hand it to the stack.
///
/// The prompt is written to the CLI's stdin, never put on its command line, so it may be any size
/// and start with any character.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// The text sent to the agent on stdin.
    pub prompt: String,
    /// The `--agent` name; validated by the routes as a plain name before it gets here.
    pub agent: String,
    /// `--model`, when the caller chose one (chat always does).
    pub model: Option<String>,
    /// `--max-budget-usd`.
    pub max_budget_usd: f64,
    /// Ask the CLI for token-level deltas (`--include-partial-messages`), for streaming chat.
    pub partial_messages: bool,
}

/// A request extension: where the claude service sends each stream-json event as it arrives.
///
/// Unbounded on purpose: the producer is the agent's stdout, already capped in bytes, and a slow
/// consumer must never slow the run.
#[derive(Debug, Clone)]
pub struct ProgressSink(pub mpsc::UnboundedSender<serde_json::Value>);
