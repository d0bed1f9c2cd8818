//! `stream: true` on the wire: a run's progress as `chat.completion.chunk` Server-Sent Events.
//!
//! Errors after the stream has started arrive as an `{"error": …}` event followed by `[DONE]`,
//! never as a cut connection.

use axum::response::sse::Event;
use serde_json::{json, Value};

use super::completion_id;
use super::wire::CompletionUsage;

/// The text of a token-level delta, from the CLI's `--include-partial-messages` events.
pub(crate) fn text_delta(event: &Value) -> Option<&str> {
    if event.get("type")?.as_str()? != "stream_event" {
        return None;
    }
    let inner = event.get("event")?;
    if inner.get("type")?.as_str()? != "content_block_delta" {
        return None;
    }
    let delta = inner.get("delta")?;
    if delta.get("type")?.as_str()? != "text_delta" {
        return None;
    }
    delta.get("text")?.as_str()
}

/// An `{"error": …}` event, for a run that failed after the stream began.
pub(crate) fn error_event(body: Value) -> Event {
    Event::default().data(body.to_string())
}

/// The `[DONE]` event that ends every stream.
pub(crate) fn done_event() -> Event {
    Event::default().data("[DONE]")
}

/// Builds the chunks of one completion, which share id, creation time and model.
pub(crate) struct Chunks {
    /// `chatcmpl-…`, the same in every chunk.
    id: String,
    /// Unix seconds when the stream began.
    created: i64,
    /// The model as requested.
    model: String,
}

impl Chunks {
    /// The chunks of a new completion answered by `model`.
    pub(crate) fn new(model: String) -> Self {
        Self {
            id: completion_id(),
            created: chrono::Utc::now().timestamp(),
            model,
        }
    }

    /// A chunk with one choice carrying `delta`, and its `finish_reason` once there is one.
    pub(crate) fn event(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        Event::default().data(chunk.to_string())
    }

    /// The last chunk when usage was asked for: no choices, the run's usage.
    pub(crate) fn usage_event(&self, usage: CompletionUsage) -> Event {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        });
        Event::default().data(chunk.to_string())
    }
}
