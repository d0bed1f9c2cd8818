//! What one agent run produced: an outcome when the CLI started and ended, an error otherwise.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use utoipa::ToSchema;

/// Token counts the CLI reports in its final `result` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
}

/// The result of a run that started and ended (whatever its exit code).
///
/// A run that could not start, hung, or overflowed its caps is an error instead (see
/// [`AgentError`](super::AgentError)); a run whose CLI exited non-zero or reported `is_error`
/// is still an outcome, so the caller sees its exit code and stderr.
#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    /// The CLI's exit code; `None` when it was ended by a signal.
    pub exit_code: Option<i32>,
    /// The final `result` event as one line of JSON: the job record's `output` list holds exactly this, as the replaced service's did.
    pub result_line: Option<String>,
    /// The answer text: the `result` field of the final event.
    pub text: Option<String>,
    /// The value that fits the run's `--json-schema`: the `structured_output` field of the final
    /// event, present only when a schema was given and the model produced a valid value.
    pub structured_output: Option<serde_json::Value>,
    /// Tokens, when the CLI reported them.
    pub usage: Option<Usage>,
    /// `total_cost_usd` of the final event.
    pub cost_usd: Option<f64>,
    /// The CLI's session id.
    pub session_id: Option<String>,
    /// Whether the CLI itself said the run failed (`is_error` of the final event).
    pub is_error: bool,
    /// `subtype` of the final event (`success`, `error_max_turns`, `error_max_budget_usd`, ...).
    pub subtype: Option<String>,
    /// Everything the CLI wrote to stderr, up to the cap.
    pub stderr: String,
    /// Whether stderr was cut at the cap.
    pub stderr_truncated: bool,
    /// Wall time of the run in milliseconds.
    pub duration_ms: u64,
    /// The session kept for a next turn, when the request asked for it
    /// ([`KeepSession`](super::KeepSession)) and it could be kept.
    pub session: Option<super::SavedSession>,
    /// Why the session asked for was not kept.
    pub session_not_kept: Option<String>,
    /// The calls of the caller's functions the run ended on
    /// ([`CallerFunctions`](super::CallerFunctions)); empty otherwise.
    pub tool_calls: Vec<super::FunctionCall>,
    /// The last `rate_limit_event` the CLI reported: what the account's rate limiter said.
    pub rate_limit: Option<RateLimit>,
}

/// What the CLI's stream-json `rate_limit_event` says (`rate_limit_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `status: rejected`: the account may not make requests until `resets_at`.
    pub rejected: bool,
    /// `resetsAt`: when the limit resets.
    pub resets_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl RateLimit {
    /// Reads a `{"type":"rate_limit_event","rate_limit_info":{...}}` event.
    pub fn from_event(event: &serde_json::Value) -> Option<Self> {
        if event.get("type").and_then(serde_json::Value::as_str) != Some("rate_limit_event") {
            return None;
        }
        let info = event.get("rate_limit_info")?;
        Some(Self {
            rejected: info.get("status").and_then(serde_json::Value::as_str) == Some("rejected"),
            resets_at: info
                .get("resetsAt")
                .and_then(serde_json::Value::as_i64)
                .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0)),
        })
    }
}

impl AgentOutcome {
    /// A run succeeded when the CLI exited 0 and did not report an error.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.is_error
    }
}

// Why an agent run produced no outcome.

/// An agent run that could not start, was stopped, or printed something that is not stream-json.
///
/// A run that started and ended, whatever its exit code, is an [`AgentOutcome`](super::AgentOutcome)
/// instead. Travels through the stack boxed; callers ask `err.downcast_ref::<AgentError>()`.
#[derive(Debug)]
pub enum AgentError {
    /// The CLI could not be started (usually: not installed, or not where `CLAUDE_BIN` says).
    Spawn {
        /// The binary that was tried.
        bin: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The request reached the service without a workspace extension: the stack is mis-assembled.
    NoWorkspace,
    /// The CLI does not know the requested `--agent`.
    UnknownAgent {
        /// The name that was asked for.
        agent: String,
        /// The agents the CLI listed as available, as it printed them.
        available: Option<String>,
    },
    /// The agent printed a stdout line longer than the cap (`MAX_AGENT_STDOUT_BYTES`) and no final
    /// result: the line was dropped unread (never held whole), so nothing of the run can be told.
    /// A run that merely prints more than the cap in total keeps going and keeps its result.
    OutputTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// Neither stdout nor stderr produced a byte for this long; the agent was killed.
    Hung {
        /// The inactivity timeout that ran out.
        after: Duration,
    },
    /// The CLI ended without a `result` event and printed lines that are not JSON.
    MalformedOutput {
        /// The first such line, cut at 200 characters.
        sample: String,
    },
    /// Talking to the running agent failed (reading its pipes, waiting for it).
    Io(io::Error),
    /// The session to continue could not be put in place; the CLI was not started.
    Resume {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn { bin, source } => write!(
                f,
                "could not start the claude CLI {:?}: {source}; install it or set CLAUDE_BIN to its path",
                bin.display().to_string()
            ),
            Self::NoWorkspace => f.write_str("no workspace was prepared for the agent run"),
            Self::UnknownAgent { agent, available } => {
                write!(f, "agent {agent:?} not found")?;
                match available {
                    Some(list) => write!(f, "; available agents: {list}"),
                    None => Ok(()),
                }
            }
            Self::OutputTooLarge { limit } => write!(
                f,
                "the agent wrote a stdout line of more than {limit} bytes and no result"
            ),
            Self::Hung { after } => write!(
                f,
                "the agent produced no output for {} and was stopped as hung",
                seconds(*after)
            ),
            Self::MalformedOutput { sample } => write!(
                f,
                "the agent ended without a result and printed output that is not stream-json: {sample:?}"
            ),
            Self::Io(err) => write!(f, "talking to the agent failed: {err}"),
            Self::Resume { reason } => {
                write!(f, "the earlier session could not be resumed: {reason}")
            }
        }
    }
}

impl std::error::Error for AgentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } | Self::Io(source) => Some(source),
            _ => None,
        }
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// Collapses whitespace and cuts to `limit` characters, so a reason fits on one line of a
/// record, an error body or a log. A long reason loses its middle (marked `…`), never its end:
/// messages name what failed first and why last (`clone of … into … failed: … fatal: Invalid
/// cross-device link`), and the why is what the reader needs.
pub(crate) fn one_line(text: &str, limit: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let count = flat.chars().count();
    if count <= limit {
        return flat;
    }
    let head = limit / 3;
    let tail = limit.saturating_sub(head + 1);
    let start: String = flat.chars().take(head).collect();
    let end: String = flat.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_whitespace_and_keeps_the_cause_at_the_end() {
        assert_eq!(one_line("a\n b\t c", 10), "a b c");
        let line = one_line(
            &format!("clone of\n{} failed: fatal: the cause", "c".repeat(1000)),
            300,
        );
        assert!(!line.contains('\n'));
        assert_eq!(line.chars().count(), 300);
        assert!(line.starts_with("clone of c"), "{line}");
        assert!(line.contains('…'), "{line}");
        assert!(line.ends_with("failed: fatal: the cause"), "{line}");
    }

    #[test]
    fn messages_say_what_to_do() {
        let spawn = AgentError::Spawn {
            bin: "claude".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let text = spawn.to_string();
        assert!(
            text.contains("\"claude\"") && text.contains("CLAUDE_BIN"),
            "{text}"
        );

        let unknown = AgentError::UnknownAgent {
            agent: "nosuch".into(),
            available: Some("claude, Explore".into()),
        };
        assert_eq!(
            unknown.to_string(),
            "agent \"nosuch\" not found; available agents: claude, Explore"
        );
        assert_eq!(
            AgentError::Hung {
                after: Duration::from_secs(600)
            }
            .to_string(),
            "the agent produced no output for 600s and was stopped as hung"
        );
        assert_eq!(
            AgentError::Hung {
                after: Duration::from_millis(250)
            }
            .to_string(),
            "the agent produced no output for 0.250s and was stopped as hung"
        );
    }

    #[test]
    fn boxes_into_the_stack_error_and_downcasts_back() {
        let boxed: gateway_layers::BoxError = AgentError::OutputTooLarge { limit: 1 }.into();
        assert!(matches!(
            boxed.downcast_ref::<AgentError>(),
            Some(AgentError::OutputTooLarge { limit: 1 })
        ));
    }
}
