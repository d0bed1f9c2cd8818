//! `stream: true`: the run's text as `chat.completion.chunk` Server-Sent Events.
//!
//! The SSE body owns the run's future, so a client that goes away drops the body, which drops the
//! run, which kills the agent's process group. Errors after the stream has started arrive as an
//! `{"error": …}` event followed by `[DONE]`, never as a cut connection.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::wire::CompletionUsage;
use super::{completion_id, finish_reason};
use crate::agent::ProgressSink;
use crate::app::AppState;
use crate::metrics::Entry;
use crate::rescue::classify;
use crate::routes::chat::{failure_error, outcome_error, ChatRun};

/// Answers a streaming chat completion.
pub(crate) fn respond(state: AppState, run: ChatRun) -> Response {
    let ChatRun {
        model,
        mut request,
        include_usage,
    } = run;
    let (sink, mut events) = mpsc::unbounded_channel();
    request.extensions_mut().insert(ProgressSink(sink));
    let agents = state.agents.clone();
    let metrics = state.metrics.clone();
    let chunk = ChunkMaker {
        id: completion_id(),
        created: chrono::Utc::now().timestamp(),
        model,
    };

    let body = async_stream::stream! {
        // Lives in the body: a client that goes away drops it unfinished, counted as cancelled.
        let timer = metrics.start_run(Entry::Chat);
        let mut run = std::pin::pin!(agents.oneshot(request));
        yield Ok::<_, Infallible>(chunk.event(json!({"role": "assistant", "content": ""}), None));
        let mut streamed_text = false;
        let result = loop {
            tokio::select! {
                biased;
                Some(event) = events.recv() => {
                    if let Some(text) = text_delta(&event) {
                        streamed_text = true;
                        yield Ok(chunk.event(json!({"content": text}), None));
                    }
                }
                result = &mut run => break result,
            }
        };
        // Events sent just before the run ended are still in the channel.
        while let Ok(event) = events.try_recv() {
            if let Some(text) = text_delta(&event) {
                streamed_text = true;
                yield Ok(chunk.event(json!({"content": text}), None));
            }
        }
        let result = result.map_err(classify);
        timer.finish(result.as_ref());
        match result {
            Ok(outcome) => match finish_reason::of(&outcome) {
                Some(reason) => {
                    if !streamed_text {
                        if let Some(text) = outcome.text.as_deref().filter(|t| !t.is_empty()) {
                            yield Ok(chunk.event(json!({"content": text}), None));
                        }
                    }
                    yield Ok(chunk.event(json!({}), Some(reason)));
                    if include_usage {
                        let usage = outcome.usage.as_ref().map(CompletionUsage::from).unwrap_or_default();
                        yield Ok(chunk.usage_event(usage));
                    }
                }
                None => yield Ok(error_event(outcome_error(&outcome).body())),
            },
            Err(failure) => yield Ok(error_event(failure_error(failure).body())),
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The text of a token-level delta, from the CLI's `--include-partial-messages` events.
fn text_delta(event: &Value) -> Option<&str> {
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

fn error_event(body: Value) -> Event {
    Event::default().data(body.to_string())
}

/// Builds the chunks of one completion, which share id, creation time and model.
struct ChunkMaker {
    id: String,
    created: i64,
    model: String,
}

impl ChunkMaker {
    fn event(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        Event::default().data(chunk.to_string())
    }

    fn usage_event(&self, usage: CompletionUsage) -> Event {
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
