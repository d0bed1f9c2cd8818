//! `stream: true` on the Messages route: a run's progress as Anthropic's Server-Sent Events,
//! each named by its `event:` line (the SDKs dispatch on it) and carrying the same `type` in its
//! data:
//!
//! ```text
//! message_start → content_block_start → ping → content_block_delta (text_delta)… →
//! content_block_stop → message_delta (stop_reason, usage) → message_stop
//! ```
//!
//! A run that fails once the stream has begun ends it with an `error` event, never a cut
//! connection.

use axum::response::sse::Event;
use serde_json::{json, Value};

use super::error::AnthropicError;
use super::message_id;
use super::wire::Usage;

/// An event named `name` whose data is `value` as JSON.
fn event(name: &'static str, value: &Value) -> Event {
    Event::default().event(name).data(value.to_string())
}

/// Builds the events of one streamed message, which share its id and model.
pub(crate) struct Events {
    /// `msg_…`.
    id: String,
    /// The model as requested.
    model: String,
}

impl Events {
    /// The events of a new message answered by `model`.
    pub(crate) fn new(model: String) -> Self {
        Self {
            id: message_id(),
            model,
        }
    }

    /// `message_start`: the message, still empty. Its usage is zero: the run reports its tokens
    /// when it ends, in `message_delta`.
    pub(crate) fn message_start(&self) -> Event {
        event(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": self.model,
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": Usage::default(),
                },
            }),
        )
    }

    /// `content_block_start` of the one text block.
    pub(crate) fn block_start() -> Event {
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        )
    }

    /// `ping`.
    pub(crate) fn ping() -> Event {
        event("ping", &json!({"type": "ping"}))
    }

    /// A `content_block_delta` carrying `text`.
    pub(crate) fn text(text: &str) -> Event {
        event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        )
    }

    /// `content_block_stop` of the text block.
    pub(crate) fn block_stop() -> Event {
        event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        )
    }

    /// `message_delta`: how the message ended, and the run's whole usage.
    pub(crate) fn message_delta(stop_reason: &str, usage: Usage) -> Event {
        event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": usage,
            }),
        )
    }

    /// `message_stop`, the last event of a message that ended well.
    pub(crate) fn message_stop() -> Event {
        event("message_stop", &json!({"type": "message_stop"}))
    }

    /// An `error` event, for a run that failed once the stream began.
    pub(crate) fn error(error: &AnthropicError) -> Event {
        Event::default()
            .event("error")
            .data(serde_json::to_string(&error.body()).unwrap_or_default())
    }
}
