//! `stream: true` on the wire: a run's progress as `chat.completion.chunk` Server-Sent Events.
//!
//! Errors after the stream has started arrive as an `{"error": …}` event followed by `[DONE]`,
//! never as a cut connection.

use axum::response::sse::Event;
use serde_json::Value;

use super::completion_id;
use super::error::OpenAiError;
use super::wire::{ChatCompletionChunk, ChunkChoice, CompletionUsage};

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
pub(crate) fn error_event(error: &OpenAiError) -> Event {
    json_event(&error.body())
}

/// An event whose data is `value` as JSON.
fn json_event(value: &impl serde::Serialize) -> Event {
    // The wire types always serialize: strings, numbers and JSON values.
    Event::default().data(serde_json::to_string(value).unwrap_or_default())
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
    pub(crate) fn event(&self, delta: Value, finish_reason: Option<&'static str>) -> Event {
        json_event(&self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            None,
        ))
    }

    /// The last chunk when usage was asked for: no choices, the run's usage.
    pub(crate) fn usage_event(&self, usage: CompletionUsage) -> Event {
        json_event(&self.chunk(Vec::new(), Some(usage)))
    }

    /// A chunk of this completion.
    fn chunk(
        &self,
        choices: Vec<ChunkChoice>,
        usage: Option<CompletionUsage>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }
}
