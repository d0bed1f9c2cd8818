//! The OpenAI-compatible surface: wire types, prompt rendering, errors, streaming chunks.

pub(crate) mod error;
pub(crate) mod format;
pub(crate) mod prompt;
pub(crate) mod responses;
pub(crate) mod stream;
pub(crate) mod tools;
pub(crate) mod wire;

use crate::agent::AgentOutcome;

/// A fresh `chatcmpl-…` id.
pub(crate) fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// How a finished run maps to OpenAI's `finish_reason`: the reason of a run that produced an
/// answer, or `None` when it is an error.
///
/// | how the run ended                                   | answer                          |
/// |-----------------------------------------------------|---------------------------------|
/// | exit 0, `subtype: success`, not `is_error`          | 200, `stop`                     |
/// | `subtype: error_max_turns` with an answer           | 200, `length`                   |
/// | `subtype: error_max_budget_usd` with an answer      | 200, `length`                   |
/// | ended on calls of the caller's functions            | 200, `tool_calls`               |
/// | any other error, non-zero exit, or no answer        | 503 `agent_failed`              |
pub(crate) fn finish_reason(outcome: &AgentOutcome) -> Option<&'static str> {
    if !outcome.tool_calls.is_empty() {
        return Some("tool_calls");
    }
    if outcome.succeeded() {
        return Some("stop");
    }
    let has_text = outcome
        .text
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty());
    match outcome.subtype.as_deref() {
        Some("error_max_turns" | "error_max_budget_usd") if has_text => Some("length"),
        _ => None,
    }
}
