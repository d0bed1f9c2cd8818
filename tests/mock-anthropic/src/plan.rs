//! Deciding the answer to one request from its conversation, its directives and the script.

use std::time::Duration;

use crate::conversation::Conversation;
use crate::directive::{self, Directives, Structured};
use crate::script::{Script, Usage};

/// How many characters of the prompt the default answer echoes.
const ECHO_CHARS: usize = 80;

/// What to answer, and after how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Pause before answering; when streaming, taken after the first content delta.
    pub(crate) delay: Option<Duration>,
    /// The answer itself.
    pub(crate) outcome: Outcome,
}

/// An answer: an assistant message or an HTTP error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A successful assistant message.
    Message(Reply),
    /// An error status with an Anthropic error body.
    Error {
        /// HTTP status, 400..=599.
        status: u16,
        /// `false` sends `x-should-retry: false` so the CLI stops at once.
        retry: bool,
        /// `error.message` of the body.
        message: String,
    },
    /// 429 as a rate-limited account gets it, with the unified rate-limit headers.
    RateLimited {
        /// Unix seconds the limit resets at.
        reset: u64,
    },
}

/// A successful assistant message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Content blocks, in order.
    pub(crate) blocks: Vec<Block>,
    /// `end_turn` for a final answer, `tool_use` when asking for a tool.
    pub(crate) stop_reason: &'static str,
    /// Token counts to report.
    pub(crate) usage: Usage,
}

/// One content block of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    /// A `text` block.
    Text(String),
    /// A `tool_use` block calling the CLI's `Bash` tool.
    Bash {
        /// `id` the tool result will refer to.
        id: String,
        /// The shell command.
        command: String,
    },
    /// A `tool_use` block calling the CLI's `StructuredOutput` tool (offered under
    /// `--json-schema`) with the value to return.
    Structured {
        /// `id` the tool result will refer to.
        id: String,
        /// The tool's input: the structured value itself.
        input: serde_json::Value,
    },
    /// A `tool_use` block calling an offered tool by its full name (`[[mock:tool]]`).
    Tool {
        /// `id` the tool result will refer to.
        id: String,
        /// The offered tool's full name.
        name: String,
        /// The tool's input.
        input: serde_json::Value,
    },
}

impl Reply {
    /// A turn that calls one tool and stops for its result.
    fn tool_call(block: Block, usage: Usage) -> Self {
        Self {
            blocks: vec![block],
            stop_reason: "tool_use",
            usage,
        }
    }
}

/// The tool the CLI offers under `--json-schema` and insists is called.
pub(crate) const STRUCTURED_OUTPUT_TOOL: &str = "StructuredOutput";

/// Plans the answer. `tool_id` makes a fresh tool-use id.
pub(crate) fn plan(
    conversation: &Conversation,
    script: &Script,
    tool_id: impl FnOnce() -> String,
) -> Plan {
    let directives = match Directives::parse(&conversation.prompt) {
        Ok(directives) => directives,
        Err(e) => {
            return Plan {
                delay: None,
                outcome: Outcome::Error {
                    status: 400,
                    retry: false,
                    message: e.to_string(),
                },
            }
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let outcome = match &directives.error {
        _ if directives.ratelimit.is_some_and(|until| now < until) => Outcome::RateLimited {
            reset: directives.ratelimit.unwrap_or_default(),
        },
        Some(error) if error.applies_to(&conversation.model) => Outcome::Error {
            status: error.status,
            retry: error.retry,
            message: format!(
                "mock-anthropic: status {} requested by [[mock:error]]",
                error.status
            ),
        },
        _ => Outcome::Message(reply(conversation, &directives, script, tool_id)),
    };
    Plan {
        delay: directives.delay,
        outcome,
    }
}

fn reply(
    conversation: &Conversation,
    directives: &Directives,
    script: &Script,
    tool_id: impl FnOnce() -> String,
) -> Reply {
    let mut usage = script.usage_counts();
    if let Some((input, output)) = directives.usage {
        usage.input_tokens = input;
        usage.output_tokens = output;
    }
    // One tool call per turn: the number of results already back says which command is next.
    if let Some(command) = directives.bash.get(conversation.tool_outputs.len()) {
        return Reply::tool_call(
            Block::Bash {
                id: tool_id(),
                command: command.clone(),
            },
            usage,
        );
    }
    if let Some(Structured::Call(input)) = &directives.structured {
        if conversation.tool_outputs.len() == directives.bash.len() {
            return Reply::tool_call(
                Block::Structured {
                    id: tool_id(),
                    input: input.clone(),
                },
                usage,
            );
        }
    }
    if let Some(tool) = &directives.tool {
        let result = conversation
            .tool_outputs
            .last()
            .map(String::as_str)
            .or_else(|| directive::rendered_result(&conversation.prompt, &tool.name));
        let text = match (
            result,
            conversation.tools.iter().find(|t| t.ends_with(&tool.name)),
        ) {
            (Some(result), _) => format!("The result of {}: {}", tool.name, result.trim_end()),
            (None, Some(name)) => {
                return Reply::tool_call(
                    Block::Tool {
                        id: tool_id(),
                        name: name.clone(),
                        input: tool.input.clone(),
                    },
                    usage,
                )
            }
            (None, None) => format!("mock: no offered tool ends with {}", tool.name),
        };
        return Reply {
            blocks: vec![Block::Text(text)],
            stop_reason: "end_turn",
            usage,
        };
    }
    let text = if let Some(text) = &directives.text {
        text.clone()
    } else if !conversation.tool_outputs.is_empty() {
        conversation
            .tool_outputs
            .iter()
            .map(|output| format!("tool said: {}", output.trim_end()))
            .collect::<Vec<_>>()
            .join("\n")
    } else if let Some(reply) = script.reply_override() {
        reply.to_owned()
    } else {
        let prompt: String = directive::strip(&conversation.prompt)
            .chars()
            .take(ECHO_CHARS)
            .collect();
        format!("mock answer: {}", prompt.trim_end())
    };
    Reply {
        blocks: vec![Block::Text(text)],
        stop_reason: "end_turn",
        usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(prompt: &str, tool_outputs: &[&str]) -> Conversation {
        Conversation {
            prompt: prompt.to_owned(),
            tool_outputs: tool_outputs.iter().map(|s| (*s).to_owned()).collect(),
            model: "claude-sonnet-4-5".to_owned(),
            tools: vec!["Bash".into(), "mcp__caller__get_weather".into()],
        }
    }

    #[test]
    fn tool_directive_calls_the_offered_tool_then_answers_its_result() {
        let prompt = r#"weather? [[mock:tool get_weather {"city": "Paris"}]]"#;
        let call = plan(&conversation(prompt, &[]), &Script::new(), || "t1".into());
        match &call.outcome {
            Outcome::Message(Reply {
                blocks,
                stop_reason: "tool_use",
                ..
            }) => assert_eq!(
                blocks.as_slice(),
                [Block::Tool {
                    id: "t1".into(),
                    name: "mcp__caller__get_weather".into(),
                    input: serde_json::json!({"city": "Paris"})
                }]
            ),
            other => panic!("{other:?}"),
        }
        let answered = plan(
            &conversation(prompt, &["sunny"]),
            &Script::new(),
            String::new,
        );
        assert_eq!(text_of(&answered), "The result of get_weather: sunny");
        let rendered = format!("{prompt}\n\n[Function result get_weather call_1]\nrainy");
        let answered = plan(&conversation(&rendered, &[]), &Script::new(), String::new);
        assert_eq!(text_of(&answered), "The result of get_weather: rainy");
        let missing = plan(
            &conversation("[[mock:tool get_time {}]]", &[]),
            &Script::new(),
            String::new,
        );
        assert_eq!(
            text_of(&missing),
            "mock: no offered tool ends with get_time"
        );
    }

    fn text_of(plan: &Plan) -> &str {
        match &plan.outcome {
            Outcome::Message(Reply { blocks, .. }) => match blocks.as_slice() {
                [Block::Text(text)] => text,
                other => panic!("expected one text block, got {other:?}"),
            },
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn default_answer_echoes_the_prompt_without_directives() {
        let long = "x".repeat(200);
        let p = plan(
            &conversation(&format!("[[mock:delay 1]] {long}"), &[]),
            &Script::new(),
            String::new,
        );
        assert_eq!(text_of(&p), format!("mock answer: {}", "x".repeat(80)));
        assert_eq!(p.delay, Some(Duration::from_millis(1)));
    }

    #[test]
    fn bash_directives_run_in_order_then_report_outputs() {
        let prompt = "[[mock:bash echo a]] [[mock:bash echo b]]";
        let first = plan(&conversation(prompt, &[]), &Script::new(), || "t1".into());
        let second = plan(&conversation(prompt, &["a\n"]), &Script::new(), || {
            "t2".into()
        });
        let last = plan(
            &conversation(prompt, &["a\n", "b\n"]),
            &Script::new(),
            String::new,
        );
        let command = |p: &Plan| match &p.outcome {
            Outcome::Message(Reply {
                blocks,
                stop_reason: "tool_use",
                ..
            }) => match blocks.as_slice() {
                [Block::Bash { command, .. }] => command.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(command(&first), "echo a");
        assert_eq!(command(&second), "echo b");
        assert_eq!(text_of(&last), "tool said: a\ntool said: b");
    }

    #[test]
    fn structured_output_is_called_after_bash_then_text_follows() {
        let prompt = r#"[[mock:bash echo a]] [[mock:structured {"n": 1}]] [[mock:text ok]]"#;
        let second = plan(&conversation(prompt, &["a\n"]), &Script::new(), || {
            "t2".into()
        });
        match &second.outcome {
            Outcome::Message(Reply {
                blocks,
                stop_reason: "tool_use",
                ..
            }) => assert_eq!(
                blocks.as_slice(),
                [Block::Structured {
                    id: "t2".into(),
                    input: serde_json::json!({"n": 1})
                }]
            ),
            other => panic!("{other:?}"),
        }
        let last = plan(
            &conversation(prompt, &["a\n", ""]),
            &Script::new(),
            String::new,
        );
        assert_eq!(text_of(&last), "ok");
        let refused = plan(
            &conversation("[[mock:structured refuse]] [[mock:text prose]]", &[]),
            &Script::new(),
            String::new,
        );
        assert_eq!(text_of(&refused), "prose");
    }

    #[test]
    fn text_directive_beats_script_default() {
        let script = Script::new().default_reply("scripted");
        assert_eq!(
            text_of(&plan(&conversation("hi", &[]), &script, String::new)),
            "scripted"
        );
        let p = plan(
            &conversation("[[mock:text exact]]", &[]),
            &script,
            String::new,
        );
        assert_eq!(text_of(&p), "exact");
    }

    #[test]
    fn bad_directive_is_a_400_naming_it() {
        let p = plan(
            &conversation("[[mock:nope]]", &[]),
            &Script::new(),
            String::new,
        );
        match p.outcome {
            Outcome::Error {
                status: 400,
                message,
                ..
            } => assert!(message.contains("nope")),
            other => panic!("{other:?}"),
        }
    }
}
