//! The Anthropic Messages API surface: wire types, prompt rendering, errors, stream events.
//!
//! The same run as a chat completion, in Anthropic's shapes: the route is `routes::messages`.

pub(crate) mod error;
pub(crate) mod prompt;
pub(crate) mod stream;
pub(crate) mod wire;

use crate::agent::AgentOutcome;
use crate::openai::finish_reason;

/// A fresh `msg_…` id.
pub(crate) fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// How a finished run maps to Anthropic's `stop_reason`: the same outcomes that answer a chat
/// completion (`stop` is `end_turn`, `length`, a run cut short by its turn or budget limit with an
/// answer, is `max_tokens`), or `None` when the run failed.
pub(crate) fn stop_reason(outcome: &AgentOutcome) -> Option<&'static str> {
    match finish_reason(outcome)? {
        "length" => Some("max_tokens"),
        _ => Some("end_turn"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_stop_reasons() {
        let done = AgentOutcome {
            exit_code: Some(0),
            subtype: Some("success".into()),
            text: Some("hi".into()),
            ..AgentOutcome::default()
        };
        assert_eq!(stop_reason(&done), Some("end_turn"));
        let cut = AgentOutcome {
            exit_code: Some(1),
            is_error: true,
            subtype: Some("error_max_turns".into()),
            text: Some("partial".into()),
            ..AgentOutcome::default()
        };
        assert_eq!(stop_reason(&cut), Some("max_tokens"));
        assert_eq!(stop_reason(&AgentOutcome::default()), None);
    }
}
