//! Reading a Messages API request body: which text is the prompt, which tool results came back.
//!
//! Claude Code 2.1.330 sends, besides the user's prompt, `<system-reminder>` text blocks inside user
//! messages and whole messages with role `system` (environment, budget) after them; tool results come
//! back as user messages made only of `tool_result` blocks. The "prompt" is therefore the last user
//! message that carries no tool result, minus its system reminders.

use serde_json::Value;

/// The parts of a conversation the mock's script looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Conversation {
    /// Text of the prompt message, system reminders left out, blocks joined by newlines.
    pub(crate) prompt: String,
    /// Output of each tool result sent since the prompt, in order.
    pub(crate) tool_outputs: Vec<String>,
    /// The request's `model`, which an `[[mock:error ... model=NAME]]` directive matches.
    pub(crate) model: String,
    /// The names of the tools the request offers, in order.
    pub(crate) tools: Vec<String>,
}

impl Conversation {
    /// Reads the `messages` of a request body; `None` when there is no `messages` array.
    pub(crate) fn from_body(body: &Value) -> Option<Self> {
        let messages = body.get("messages")?.as_array()?;
        let is_user = |m: &Value| m.get("role").and_then(Value::as_str) == Some("user");
        let prompt_index = messages
            .iter()
            .rposition(|m| is_user(m) && !has_tool_result(m));
        let prompt = prompt_index
            .map(|i| prompt_text(&messages[i]))
            .unwrap_or_default();
        let after = prompt_index.map_or(0, |i| i + 1);
        let tool_outputs = messages[after..]
            .iter()
            .filter(|m| is_user(m))
            .flat_map(blocks)
            .filter(|b| block_type(b) == Some("tool_result"))
            .map(|b| content_text(b.get("content")))
            .collect();
        Some(Self {
            prompt,
            tool_outputs,
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            tools: body
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Every piece of text in a request (system prompt, all messages, tool results), joined by newlines:
/// what a test searches to prove earlier turns reached the model.
pub(crate) fn all_text(body: &Value) -> String {
    let mut parts = vec![content_text(body.get("system"))];
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        parts.extend(messages.iter().map(|m| content_text(m.get("content"))));
    }
    parts.retain(|p| !p.is_empty());
    parts.join("\n")
}

fn prompt_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        _ => blocks(message)
            .filter(|b| block_type(b) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn has_tool_result(message: &Value) -> bool {
    blocks(message).any(|b| block_type(b) == Some("tool_result"))
}

fn blocks(message: &Value) -> impl Iterator<Item = &Value> {
    message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

/// Text of a `content` field that is either a string or an array of blocks (text, tool results).
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|b| match b.get("text").and_then(Value::as_str) {
                Some(text) => text.to_owned(),
                None => content_text(b.get("content")),
            })
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shape Claude Code 2.1.330 sends on the turn after a Bash tool call.
    fn cli_follow_up() -> Value {
        json!({"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nAttribution...\n</system-reminder>\n"},
                {"type": "text", "text": "run it [[mock:bash echo hi]]\n"}]},
            {"role": "system", "content": "# Environment ..."},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "echo hi"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "hi", "is_error": false}]},
            {"role": "system", "content": [{"type": "text", "text": "USD budget: $0.01/$1"}]}
        ]})
    }

    #[test]
    fn prompt_skips_reminders_and_tool_results_follow_it() {
        let c = Conversation::from_body(&cli_follow_up()).unwrap();
        assert_eq!(c.prompt, "run it [[mock:bash echo hi]]\n");
        assert_eq!(c.tool_outputs, ["hi"]);
    }

    #[test]
    fn string_content_and_block_tool_results_are_read() {
        let body = json!({"messages": [
            {"role": "user", "content": "hello"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
        ]});
        let c = Conversation::from_body(&body).unwrap();
        assert_eq!(c.prompt, "hello");
        assert_eq!(c.tool_outputs, ["a\nb"]);
    }

    #[test]
    fn missing_messages_is_none() {
        assert_eq!(Conversation::from_body(&json!({"model": "x"})), None);
        assert_eq!(Conversation::from_body(&json!({"messages": "x"})), None);
    }

    #[test]
    fn all_text_covers_system_and_every_turn() {
        let text = all_text(&cli_follow_up());
        assert!(text.contains("Attribution"));
        assert!(text.contains("USD budget"));
        assert!(text.contains("hi"));
    }
}
