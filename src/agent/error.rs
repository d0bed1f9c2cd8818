//! Why an agent run produced no outcome.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

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
    /// The agent printed more than the cap to stdout; it was killed so the flood is not held in memory.
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
                "the agent wrote more than {limit} bytes to stdout and was stopped"
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

#[cfg(test)]
mod tests {
    use super::*;

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
