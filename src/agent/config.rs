//! How the claude service runs the CLI: which binary, with what environment, within what limits.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default cap on what the agent may print to stdout before the run is stopped.
pub const DEFAULT_STDOUT_CAP: usize = 16 * 1024 * 1024;
/// Default cap on the stderr kept for the caller; the rest is read and dropped.
pub const DEFAULT_STDERR_CAP: usize = 1024 * 1024;
/// Default time without a byte on stdout or stderr after which the agent is considered hung.
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);

/// Settings of the [`ClaudeService`](super::ClaudeService), fixed at start-up.
#[derive(Clone)]
pub struct ClaudeConfig {
    /// The CLI to run (`CLAUDE_BIN`); a bare name is looked up on the `PATH` the agent receives.
    pub bin: PathBuf,
    /// Extra variable names a setting passes through to the agent, beyond the built-in allow-list.
    pub extra_env: Vec<String>,
    /// Extra names never passed through (gateway settings added after [`GATEWAY_SETTINGS`](super::GATEWAY_SETTINGS)).
    pub deny_env: Vec<String>,
    /// Bytes of stdout after which the run is stopped with
    /// [`AgentError::OutputTooLarge`](super::AgentError::OutputTooLarge), so a flood is never held in memory.
    pub stdout_cap: usize,
    /// Bytes of stderr kept; the rest is drained and dropped so the agent never blocks on a full pipe.
    pub stderr_cap: usize,
    /// No byte on stdout or stderr for this long means the agent hung: the run is stopped with
    /// [`AgentError::Hung`](super::AgentError::Hung) long before its deadline.
    pub inactivity_timeout: Duration,
    /// The parent environment the allow-list picks from, snapshotted at start-up so tests can inject
    /// their own and a later `set_var` cannot change what agents see.
    pub env_source: Vec<(OsString, OsString)>,
}

impl Default for ClaudeConfig {
    /// `claude` on `PATH`, default caps and timeout, and the current process environment.
    fn default() -> Self {
        Self {
            bin: PathBuf::from("claude"),
            extra_env: Vec::new(),
            deny_env: Vec::new(),
            stdout_cap: DEFAULT_STDOUT_CAP,
            stderr_cap: DEFAULT_STDERR_CAP,
            inactivity_timeout: DEFAULT_INACTIVITY_TIMEOUT,
            env_source: std::env::vars_os().collect(),
        }
    }
}

impl fmt::Debug for ClaudeConfig {
    // The environment holds API keys: print only how many variables the snapshot has.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaudeConfig")
            .field("bin", &self.bin)
            .field("extra_env", &self.extra_env)
            .field("deny_env", &self.deny_env)
            .field("stdout_cap", &self.stdout_cap)
            .field("stderr_cap", &self.stderr_cap)
            .field("inactivity_timeout", &self.inactivity_timeout)
            .field(
                "env_source",
                &format_args!("<{} variables>", self.env_source.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_environment_values() {
        let config = ClaudeConfig {
            env_source: vec![("ANTHROPIC_API_KEY".into(), "sk-secret".into())],
            ..ClaudeConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<1 variables>"), "{shown}");
    }
}
