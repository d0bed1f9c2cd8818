//! Turns an OpenAI conversation into the one prompt the agent reads on stdin.
//!
//! System and developer messages become a preamble. A single-turn request renders exactly as the
//! replaced service did (`Request:` followed by the user text); a multi-turn one keeps every
//! earlier turn, each marked with its role, so the agent sees the conversation so far: the
//! assistant's calls of the caller's functions and their results included, so a conversation
//! that ends on results goes on from them. Chat messages and Responses input items both become
//! [`Turn`]s first.

use serde_json::Value;

use super::error::OpenAiError;
use super::wire::ChatMessage;

const SECTION_BREAK: &str = "\n\n---\n\n";

/// One turn of a conversation, whichever API it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Turn {
    /// System or developer text: the preamble.
    System(String),
    /// What the user said.
    User(String),
    /// What the assistant said.
    Assistant(String),
    /// The assistant called one of the caller's functions.
    Call {
        /// The call's id (`call_…`).
        id: String,
        /// The function.
        name: String,
        /// Its arguments, JSON text.
        arguments: String,
    },
    /// The caller's result of a call.
    Result {
        /// The call's id.
        id: String,
        /// The function, found from the call.
        name: String,
        /// What the function returned.
        output: String,
    },
}

/// Renders `messages` as a prompt, or says which message cannot be served. `functions` is what
/// the agent is told about the caller's functions, when some are offered.
pub(crate) fn render(
    messages: &[ChatMessage],
    functions: Option<&str>,
) -> Result<String, OpenAiError> {
    if messages.is_empty() {
        return Err(
            OpenAiError::bad_request("messages must hold at least one message").param("messages"),
        );
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let text = content_text(index, message.content.as_ref())?;
        match message.role.as_str() {
            "system" | "developer" => turns.push(Turn::System(text)),
            "user" if text.trim().is_empty() => {
                return Err(OpenAiError::bad_request(format!(
                    "messages[{index}].content must hold some text"
                ))
                .param("messages"))
            }
            "user" => turns.push(Turn::User(text)),
            "assistant" => {
                if !text.is_empty() {
                    turns.push(Turn::Assistant(text));
                }
                turns.extend(tool_calls(index, message.tool_calls.as_ref())?);
            }
            "tool" => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| {
                    OpenAiError::bad_request(format!(
                        "messages[{index}].tool_call_id must name the call this result answers"
                    ))
                    .param(format!("messages[{index}].tool_call_id"))
                })?;
                let name = called(&turns, id).ok_or_else(|| {
                    OpenAiError::bad_request(format!(
                        "messages[{index}].tool_call_id {id:?} answers no tool call of an earlier assistant message"
                    ))
                    .param(format!("messages[{index}].tool_call_id"))
                })?;
                turns.push(Turn::Result {
                    id: id.to_owned(),
                    name,
                    output: text,
                });
            }
            "function" => {
                return Err(unsupported(
                    index,
                    "legacy function messages are not supported; use tool messages",
                ))
            }
            other => {
                return Err(OpenAiError::bad_request(format!(
                "messages[{index}].role {other:?} is not one of system, developer, user, assistant, tool"
            ))
                .param("messages"))
            }
        }
    }
    render_turns(&turns, functions).ok_or_else(no_request)
}

/// The function a call id names, among the calls so far.
pub(crate) fn called(turns: &[Turn], id: &str) -> Option<String> {
    turns.iter().rev().find_map(|turn| match turn {
        Turn::Call { id: call, name, .. } if call == id => Some(name.clone()),
        _ => None,
    })
}

/// The calls of an assistant message's `tool_calls`, as turns.
fn tool_calls(index: usize, value: Option<&Value>) -> Result<Vec<Turn>, OpenAiError> {
    let calls = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(OpenAiError::bad_request(format!(
                "messages[{index}].tool_calls must be an array"
            ))
            .param(format!("messages[{index}].tool_calls")))
        }
    };
    calls
        .iter()
        .enumerate()
        .map(|(position, call)| {
            let field = format!("messages[{index}].tool_calls[{position}]");
            let text = |key: &str| call.pointer(key).and_then(Value::as_str).map(str::to_owned);
            match (
                text("/id"),
                text("/function/name"),
                text("/function/arguments"),
            ) {
                (Some(id), Some(name), Some(arguments)) => Ok(Turn::Call {
                    id,
                    name,
                    arguments,
                }),
                _ => Err(OpenAiError::bad_request(format!(
                    "{field} needs a string id, function.name and function.arguments"
                ))
                .param(field)),
            }
        })
        .collect()
}

/// Renders turns as a prompt; `None` when they ask the agent nothing (no user turn, or the
/// conversation ends on the assistant).
pub(crate) fn render_turns(turns: &[Turn], functions: Option<&str>) -> Option<String> {
    let mut system: Vec<&str> = turns
        .iter()
        .filter_map(|turn| match turn {
            Turn::System(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if let Some(functions) = functions {
        system.push(functions);
    }
    let talk: Vec<&Turn> = turns
        .iter()
        .filter(|turn| !matches!(turn, Turn::System(_)))
        .collect();
    let (last, history) = talk.split_last()?;
    if !talk.iter().any(|turn| matches!(turn, Turn::User(_))) {
        return None;
    }
    let mut sections = Vec::new();
    if !system.is_empty() {
        sections.push(format!("System instructions:\n{}", system.join("\n\n")));
    }
    let only_users = talk.iter().all(|turn| matches!(turn, Turn::User(_)));
    match last {
        Turn::User(_) if only_users => {
            let users: Vec<&str> = talk
                .iter()
                .filter_map(|turn| match turn {
                    Turn::User(text) => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            sections.push(format!("Request:\n{}", users.join("\n\n")));
        }
        // The request is the conversation's last turn (a user's); everything before it is
        // context.
        Turn::User(request) => {
            sections.push(history_section(history));
            sections.push(format!("Request:\n{request}"));
        }
        // The conversation ends on the results of the functions the agent called: it goes on.
        Turn::Result { .. } => {
            sections.push(history_section(&talk));
            sections.push(
                "Request:\nGo on: the results of the functions you called are above. Answer the user's last request.".to_owned(),
            );
        }
        _ => return None,
    }
    Some(sections.join(SECTION_BREAK))
}

fn history_section(turns: &[&Turn]) -> String {
    let history: Vec<String> = turns.iter().map(|turn| render_turn(turn)).collect();
    format!("Conversation so far:\n\n{}", history.join("\n\n"))
}

/// One turn of the history. Function results take the form the mock's `tool` directive reads
/// (`[Function result NAME ID]`), which is also plain enough for a model.
fn render_turn(turn: &Turn) -> String {
    match turn {
        Turn::System(text) => format!("[System]\n{text}"),
        Turn::User(text) => format!("[User]\n{text}"),
        Turn::Assistant(text) => format!("[Assistant]\n{text}"),
        Turn::Call {
            id,
            name,
            arguments,
        } => format!("[Function call {name} {id}]\n{arguments}"),
        Turn::Result { id, name, output } => format!("[Function result {name} {id}]\n{output}"),
    }
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

/// Why the parts of a content array cannot be joined into text.
pub(crate) enum PartError<'a> {
    /// A text part without a string `text`.
    NoText,
    /// A part of a type that is not text: the type.
    Unsupported(&'a str),
}

/// The parts of a content array, all of a type in `kinds` (the API's names for text), joined by
/// newlines.
pub(crate) fn joined_text<'a>(parts: &'a [Value], kinds: &[&str]) -> Result<String, PartError<'a>> {
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        if !kinds.contains(&kind) {
            return Err(PartError::Unsupported(kind));
        }
        texts.push(
            part.get("text")
                .and_then(Value::as_str)
                .ok_or(PartError::NoText)?,
        );
    }
    Ok(texts.join("\n"))
}

/// The text of a message's `content`: a string, or an array whose text parts are joined.
fn content_text(index: usize, content: Option<&Value>) -> Result<String, OpenAiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => joined_text(parts, &["text"]).map_err(|error| match error {
            PartError::NoText => OpenAiError::bad_request(format!(
                "messages[{index}].content: a text part needs a string `text`"
            ))
            .param("messages"),
            PartError::Unsupported(other) => unsupported(
                index,
                &format!("content parts of type {other:?} are not supported; only text parts are"),
            ),
        }),
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

    /// The prompt of the conversation `value`, offering no functions.
    fn rendered(value: Value) -> String {
        render(&messages(value), None).unwrap()
    }

    #[test]
    fn single_turn_matches_the_replaced_service() {
        let prompt = rendered(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"}
        ]));
        assert_eq!(
            prompt,
            "System instructions:\nbe brief\n\n---\n\nRequest:\nhello"
        );
    }

    #[test]
    fn assistant_turns_are_kept_with_roles() {
        let prompt = rendered(json!([
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "Hello Ada"},
            {"role": "user", "content": "what is my name?"}
        ]));
        assert!(prompt.contains("[User]\nmy name is Ada"), "{prompt}");
        assert!(prompt.contains("[Assistant]\nHello Ada"), "{prompt}");
        assert!(prompt.ends_with("Request:\nwhat is my name?"), "{prompt}");
    }

    #[test]
    fn developer_is_system_and_parts_are_joined() {
        let prompt = rendered(json!([
            {"role": "developer", "content": [{"type": "text", "text": "rule"}]},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ]));
        assert_eq!(
            prompt,
            "System instructions:\nrule\n\n---\n\nRequest:\na\nb"
        );
    }

    #[test]
    fn tool_calls_and_results_are_rendered_and_the_run_goes_on() {
        let prompt = render(
            &messages(json!([
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
            ])),
            Some("functions here"),
        )
        .unwrap();
        assert!(
            prompt.starts_with("System instructions:\nfunctions here"),
            "{prompt}"
        );
        assert!(prompt.contains("[User]\nweather in Paris?"), "{prompt}");
        assert!(
            prompt.contains("[Function call get_weather call_1]\n{\"city\":\"Paris\"}"),
            "{prompt}"
        );
        assert!(
            prompt.contains("[Function result get_weather call_1]\nsunny"),
            "{prompt}"
        );
        assert!(prompt.contains("Request:\nGo on"), "{prompt}");
        let orphan = render(
            &messages(json!([
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_9", "content": "x"}
            ])),
            None,
        )
        .unwrap_err();
        assert_eq!(orphan.param_str(), Some("messages[1].tool_call_id"));
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
            let err = render(&messages(bad), None).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }
}
