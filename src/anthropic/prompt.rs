//! Turns a Messages request's `system` and `messages` into the one prompt the agent reads on
//! stdin, laid out as chat's (`crate::openai::prompt`) so an agent reads both alike: the system
//! prompt as a preamble, a single user turn as `Request:`, and in a conversation with assistant
//! turns every earlier turn marked with its role under `Conversation so far:`.

use super::error::AnthropicError;
use super::wire::{InputBlock, InputContent, InputMessage, SystemPrompt};

const SECTION_BREAK: &str = "\n\n---\n\n";

/// Renders a request as a prompt, or says which part cannot be served.
pub(crate) fn render(
    system: Option<&SystemPrompt>,
    messages: &[InputMessage],
) -> Result<String, AnthropicError> {
    if messages.is_empty() {
        return Err(AnthropicError::invalid(
            "messages: at least one message is required",
        ));
    }
    let system = match system {
        None => String::new(),
        Some(SystemPrompt::Text(text)) => text.clone(),
        Some(SystemPrompt::Blocks(blocks)) => blocks_text("system", blocks)?,
    };
    let mut turns: Vec<(&'static str, String)> = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let text = match &message.content {
            InputContent::Text(text) => text.clone(),
            InputContent::Blocks(blocks) => blocks_text(&format!("messages.{index}"), blocks)?,
        };
        let role = match message.role.as_str() {
            "user" => "User",
            "assistant" => "Assistant",
            other => {
                return Err(AnthropicError::invalid(format!(
                    "messages.{index}.role: {other:?} is not one of user, assistant (the system prompt goes in `system`)"
                )))
            }
        };
        if role == "User" && text.trim().is_empty() {
            return Err(AnthropicError::invalid(format!(
                "messages.{index}: a user message must hold some text"
            )));
        }
        turns.push((role, text));
    }
    // The agent answers the last user message; a conversation ending on the assistant would ask
    // it to continue a prefilled answer, which a run cannot do.
    let Some(((last_role, request), history)) = turns.split_last() else {
        return Err(AnthropicError::invalid("messages: no message"));
    };
    if *last_role != "User" {
        return Err(AnthropicError::invalid(
            "messages: the last message must be a user message that holds the request (a prefilled assistant turn cannot be continued)",
        ));
    }
    let mut sections = Vec::new();
    if !system.trim().is_empty() {
        sections.push(format!("System instructions:\n{system}"));
    }
    if turns.iter().any(|(role, _)| *role == "Assistant") {
        let history: Vec<String> = history
            .iter()
            .map(|(role, text)| format!("[{role}]\n{text}"))
            .collect();
        sections.push(format!("Conversation so far:\n\n{}", history.join("\n\n")));
        sections.push(format!("Request:\n{request}"));
    } else {
        let users: Vec<&str> = turns.iter().map(|(_, text)| text.as_str()).collect();
        sections.push(format!("Request:\n{}", users.join("\n\n")));
    }
    Ok(sections.join(SECTION_BREAK))
}

/// The joined text of `blocks`; any block that is not text is refused, naming where it is.
fn blocks_text(at: &str, blocks: &[InputBlock]) -> Result<String, AnthropicError> {
    let mut texts = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.iter().enumerate() {
        match (block.kind.as_str(), block.text.as_deref()) {
            ("text", Some(text)) => texts.push(text),
            ("text", None) => {
                return Err(AnthropicError::invalid(format!(
                    "{at}.content.{index}: a text block needs a string `text`"
                )))
            }
            (other, _) => {
                return Err(AnthropicError::invalid(format!(
                    "{at}.content.{index}: content blocks of type {other:?} are not supported; only text blocks are (the agent uses its own tools)"
                )))
            }
        }
    }
    Ok(texts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn render_json(system: Value, messages: Value) -> Result<String, AnthropicError> {
        let system: Option<SystemPrompt> = serde_json::from_value(system).unwrap();
        let messages: Vec<InputMessage> = serde_json::from_value(messages).unwrap();
        render(system.as_ref(), &messages)
    }

    #[test]
    fn a_single_turn_renders_as_chat_does() {
        let prompt = render_json(
            json!("be brief"),
            json!([{"role": "user", "content": "hello"}]),
        )
        .unwrap();
        assert_eq!(
            prompt,
            "System instructions:\nbe brief\n\n---\n\nRequest:\nhello"
        );
        let prompt = render_json(
            json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
            json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
        )
        .unwrap();
        assert_eq!(prompt, "System instructions:\na\nb\n\n---\n\nRequest:\nhi");
    }

    #[test]
    fn earlier_turns_are_kept_with_roles() {
        let prompt = render_json(
            Value::Null,
            json!([
                {"role": "user", "content": "my name is Ada"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada"}]},
                {"role": "user", "content": "what is my name?"}
            ]),
        )
        .unwrap();
        assert_eq!(
            prompt,
            "Conversation so far:\n\n[User]\nmy name is Ada\n\n[Assistant]\nHello Ada\n\n---\n\nRequest:\nwhat is my name?"
        );
    }

    #[test]
    fn what_cannot_be_served_is_refused() {
        for (system, messages) in [
            (Value::Null, json!([])),
            (Value::Null, json!([{"role": "system", "content": "x"}])),
            (Value::Null, json!([{"role": "user", "content": "  "}])),
            (
                Value::Null,
                json!([{"role": "user", "content": [{"type": "image", "source": {}}]}]),
            ),
            (
                Value::Null,
                json!([{"role": "user", "content": [{"type": "text"}]}]),
            ),
            (
                Value::Null,
                json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "prefill"}]),
            ),
            (
                json!([{"type": "image"}]),
                json!([{"role": "user", "content": "hi"}]),
            ),
        ] {
            let error = render_json(system, messages.clone()).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{messages}");
        }
    }
}
