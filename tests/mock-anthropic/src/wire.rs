//! The Messages API wire format: a reply as one JSON message, as a list of SSE events, and errors.

use serde_json::{json, Value};

use crate::plan::{Block, Reply, STRUCTURED_OUTPUT_TOOL};

/// `description` of every Bash call, as the CLI shows it in its progress.
const BASH_DESCRIPTION: &str = "mock-anthropic: run the command from the prompt";

/// A reply as the non-streaming `POST /v1/messages` answer.
pub(crate) fn message(id: &str, model: &str, reply: &Reply) -> Value {
    let u = reply.usage;
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.blocks.iter().map(block).collect::<Vec<_>>(),
        "stop_reason": reply.stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "cache_creation_input_tokens": u.cache_creation_input_tokens,
        },
    })
}

/// A reply as the SSE events of a streamed answer, in order. Text is split into one delta per word
/// and tool input into several `input_json_delta`s, so token-level streaming is observable.
pub(crate) fn events(id: &str, model: &str, reply: &Reply) -> Vec<Value> {
    let u = reply.usage;
    let mut events = vec![
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {
                "input_tokens": u.input_tokens,
                "output_tokens": 1,
                "cache_read_input_tokens": u.cache_read_input_tokens,
                "cache_creation_input_tokens": u.cache_creation_input_tokens,
            },
        }}),
        json!({"type": "ping"}),
    ];
    for (index, b) in reply.blocks.iter().enumerate() {
        let (start, deltas) = match b {
            Block::Text(text) => (
                json!({"type": "text", "text": ""}),
                words(text)
                    .map(|w| json!({"type": "text_delta", "text": w}))
                    .collect::<Vec<_>>(),
            ),
            Block::Bash { id, .. } | Block::Structured { id, .. } | Block::Tool { id, .. } => (
                json!({"type": "tool_use", "id": id, "name": tool_name(b), "input": {}}),
                thirds(&tool_input(b).to_string())
                    .map(|part| json!({"type": "input_json_delta", "partial_json": part}))
                    .collect(),
            ),
        };
        events.push(json!({"type": "content_block_start", "index": index, "content_block": start}));
        events.extend(
            deltas.into_iter().map(
                |delta| json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ),
        );
        events.push(json!({"type": "content_block_stop", "index": index}));
    }
    // Claude Code takes input and cache counts from message_start and the output count from here;
    // repeating the input counts here is avoided so no client can count them twice.
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": u.output_tokens}}));
    events.push(json!({"type": "message_stop"}));
    events
}

/// One event in SSE framing: `event: <type>` then `data: <json>`.
pub(crate) fn sse_frame(event: &Value) -> String {
    let name = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    format!("event: {name}\ndata: {event}\n\n")
}

/// An Anthropic error body for `status`.
pub(crate) fn error(status: u16, message: &str, request_id: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
        "request_id": request_id,
    })
}

/// The `error.type` the real API uses for each status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        405 => "invalid_request_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn block(b: &Block) -> Value {
    match b {
        Block::Text(text) => json!({"type": "text", "text": text}),
        Block::Bash { id, .. } | Block::Structured { id, .. } | Block::Tool { id, .. } => {
            json!({"type": "tool_use", "id": id, "name": tool_name(b), "input": tool_input(b)})
        }
    }
}

fn tool_name(b: &Block) -> &str {
    match b {
        Block::Structured { .. } => STRUCTURED_OUTPUT_TOOL,
        Block::Tool { name, .. } => name,
        Block::Bash { .. } | Block::Text(_) => "Bash",
    }
}

fn tool_input(b: &Block) -> Value {
    match b {
        Block::Bash { command, .. } => json!({"command": command, "description": BASH_DESCRIPTION}),
        Block::Structured { input, .. } | Block::Tool { input, .. } => input.clone(),
        Block::Text(_) => json!({}),
    }
}

/// Words with their trailing whitespace, so the deltas concatenate back to the text exactly.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(char::is_whitespace)
}

/// `s` cut into three pieces at character boundaries (fewer when it is very short).
fn thirds(s: &str) -> impl Iterator<Item = &str> {
    let cut = |n: usize| {
        let mut at = s.len() * n / 3;
        while !s.is_char_boundary(at) {
            at += 1;
        }
        at
    };
    let (a, b) = (cut(1), cut(2));
    [&s[..a], &s[a..b], &s[b..]]
        .into_iter()
        .filter(|piece| !piece.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Usage;

    fn reply(blocks: Vec<Block>) -> Reply {
        Reply {
            blocks,
            stop_reason: "end_turn",
            usage: Usage::DEFAULT,
        }
    }

    #[test]
    fn text_deltas_concatenate_to_the_text() {
        let events = events(
            "m",
            "claude-x",
            &reply(vec![Block::Text("one two  three".into())]),
        );
        let deltas: Vec<&str> = events
            .iter()
            .filter_map(|e| e.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        assert_eq!(deltas, ["one ", "two ", " ", "three"]);
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(kinds.first(), Some(&"message_start"));
        assert_eq!(kinds.last(), Some(&"message_stop"));
    }

    #[test]
    fn tool_input_deltas_concatenate_to_valid_json() {
        let b = Block::Bash {
            id: "toolu_1".into(),
            command: "echo é > f".into(),
        };
        let events = events("m", "x", &reply(vec![b]));
        let json: String = events
            .iter()
            .filter_map(|e| e.pointer("/delta/partial_json").and_then(Value::as_str))
            .collect();
        let input: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(input["command"], "echo é > f");
    }

    #[test]
    fn sse_frames_name_the_event() {
        assert_eq!(
            sse_frame(&json!({"type": "ping"})),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
    }

    #[test]
    fn error_types_follow_the_api() {
        assert_eq!(error(529, "m", "r")["error"]["type"], "overloaded_error");
        assert_eq!(error(500, "m", "r")["error"]["type"], "api_error");
    }
}
