//! Turns an OpenAI conversation into the one prompt the agent reads on stdin.
//!
//! System and developer messages become a preamble. A single-turn request renders exactly as the
//! replaced service did (`Request:` followed by the user text); a multi-turn one keeps every
//! earlier turn, each marked with its role, so the agent sees the conversation so far.

use serde_json::Value;

use super::error::OpenAiError;
use super::wire::ChatMessage;

const SECTION_BREAK: &str = "\n\n---\n\n";

/// Renders `messages` as a prompt, or says which message cannot be served.
pub(crate) fn render(messages: &[ChatMessage]) -> Result<String, OpenAiError> {
    if messages.is_empty() {
        return Err(
            OpenAiError::bad_request("messages must hold at least one message").param("messages"),
        );
    }
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, String)> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if message.tool_calls.is_some() {
            return Err(unsupported(index, "assistant tool_calls are not supported"));
        }
        let text = content_text(index, message.content.as_ref())?;
        match message.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" if text.trim().is_empty() => {
                return Err(OpenAiError::bad_request(format!(
                    "messages[{index}].content must hold some text"
                ))
                .param("messages"))
            }
            "user" => turns.push(("User", text)),
            "assistant" => turns.push(("Assistant", text)),
            "tool" | "function" => {
                return Err(unsupported(
                    index,
                    "tool and function messages are not supported",
                ))
            }
            other => {
                return Err(OpenAiError::bad_request(format!(
                "messages[{index}].role {other:?} is not one of system, developer, user, assistant"
            ))
                .param("messages"))
            }
        }
    }

    // The agent answers the last user message: a conversation with none, or that ends on the
    // assistant, asks it nothing.
    let Some(((last_role, request), history)) = turns.split_last() else {
        return Err(no_request());
    };
    if *last_role != "User" {
        return Err(no_request());
    }
    let mut sections = Vec::new();
    if !system.is_empty() {
        sections.push(format!("System instructions:\n{}", system.join("\n\n")));
    }
    let has_assistant = turns.iter().any(|(role, _)| *role == "Assistant");
    if has_assistant {
        // The request is the conversation's last turn (a user's); everything before it is
        // context.
        let history: Vec<String> = history
            .iter()
            .map(|(role, text)| format!("[{role}]\n{text}"))
            .collect();
        sections.push(format!("Conversation so far:\n\n{}", history.join("\n\n")));
        sections.push(format!("Request:\n{request}"));
    } else if !turns.is_empty() {
        let users: Vec<&str> = turns.iter().map(|(_, text)| text.as_str()).collect();
        sections.push(format!("Request:\n{}", users.join("\n\n")));
    }
    if sections.is_empty() {
        return Err(OpenAiError::bad_request("messages hold no text").param("messages"));
    }
    Ok(sections.join(SECTION_BREAK))
}

fn no_request() -> OpenAiError {
    OpenAiError::bad_request("messages must end with a user message that holds the request")
        .param("messages")
}

fn unsupported(index: usize, what: &str) -> OpenAiError {
    OpenAiError::bad_request(format!("messages[{index}]: {what}"))
        .param("messages")
        .code("unsupported_message")
}

/// The text of a message's `content`: a string, or an array whose text parts are joined.
fn content_text(index: usize, content: Option<&Value>) -> Result<String, OpenAiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                match (kind, part.get("text").and_then(Value::as_str)) {
                    ("text", Some(text)) => texts.push(text),
                    ("text", None) => {
                        return Err(OpenAiError::bad_request(format!(
                            "messages[{index}].content: a text part needs a string `text`"
                        ))
                        .param("messages"))
                    }
                    (other, _) => {
                        return Err(unsupported(
                            index,
                            &format!("content parts of type {other:?} are not supported; only text parts are"),
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(OpenAiError::bad_request(format!(
            "messages[{index}].content must be a string or an array of content parts"
        ))
        .param("messages")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(value: Value) -> Vec<ChatMessage> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn single_turn_matches_the_replaced_service() {
        let prompt = render(&messages(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"}
        ])))
        .unwrap();
        assert_eq!(
            prompt,
            "System instructions:\nbe brief\n\n---\n\nRequest:\nhello"
        );
    }

    #[test]
    fn assistant_turns_are_kept_with_roles() {
        let prompt = render(&messages(json!([
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "Hello Ada"},
            {"role": "user", "content": "what is my name?"}
        ])))
        .unwrap();
        assert!(prompt.contains("[User]\nmy name is Ada"), "{prompt}");
        assert!(prompt.contains("[Assistant]\nHello Ada"), "{prompt}");
        assert!(prompt.ends_with("Request:\nwhat is my name?"), "{prompt}");
    }

    #[test]
    fn developer_is_system_and_parts_are_joined() {
        let prompt = render(&messages(json!([
            {"role": "developer", "content": [{"type": "text", "text": "rule"}]},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ])))
        .unwrap();
        assert_eq!(
            prompt,
            "System instructions:\nrule\n\n---\n\nRequest:\na\nb"
        );
    }

    #[test]
    fn images_tools_and_unknown_roles_are_refused() {
        for bad in [
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            json!([{"role": "tool", "content": "x", "tool_call_id": "1"}]),
            json!([{"role": "wizard", "content": "x"}]),
            json!([{"role": "user", "content": 5}]),
            json!([]),
            json!([{"role": "user", "content": null}]),
            json!([{"role": "user", "content": []}]),
            json!([{"role": "user", "content": "  "}]),
            json!([{"role": "system", "content": "only a preamble"}]),
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
        ] {
            let err = render(&messages(bad)).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }
}
