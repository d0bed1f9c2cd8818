//! The command line the CLI is started with.
//!
//! No shell is involved: the binary is executed directly with an argument vector, and the prompt
//! goes to stdin, never to argv (seed defect 3: a prompt over 128 KiB failed with E2BIG, and one
//! starting with `-` was read as a flag).

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::config::ClaudeConfig;
use super::env::allowed_env;
use super::request::AgentRequest;

/// The CLI's arguments for one request.
pub fn claude_args(request: &AgentRequest) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-p".into(),
        "--agent".into(),
        request.agent.clone().into(),
        "--dangerously-skip-permissions".into(),
        "--max-budget-usd".into(),
        request.max_budget_usd.to_string().into(),
        "--output-format".into(),
        "stream-json".into(),
        // stream-json in print mode requires --verbose.
        "--verbose".into(),
        // Seed defect 7: every run left a transcript under ~/.claude/projects/ forever.
        "--no-session-persistence".into(),
    ];
    if let Some(model) = &request.model {
        args.push("--model".into());
        args.push(model.clone().into());
    }
    if request.partial_messages {
        args.push("--include-partial-messages".into());
    }
    args
}

/// Builds the command for one run: arguments, working directory, allow-listed environment, piped
/// stdio, and its own process group so the whole tree can be killed at once.
pub(crate) fn build_command(
    config: &ClaudeConfig,
    request: &AgentRequest,
    workspace: &Path,
) -> Command {
    let mut cmd = Command::new(&config.bin);
    cmd.args(claude_args(request))
        .current_dir(workspace)
        .env_clear()
        .envs(allowed_env(
            &config.env_source,
            &config.extra_env,
            &config.deny_env,
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The child leads a new group whose id is its pid; killpg reaches every descendant that
        // stays in it (background jobs started by the agent's Bash tool included).
        .process_group(0)
        // The process guard kills the whole group itself; tokio's kill_on_drop reaches the leader only.
        .kill_on_drop(false);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AgentRequest {
        AgentRequest {
            prompt: "--help me".into(),
            agent: "recruiter-triage".into(),
            model: None,
            max_budget_usd: 2.5,
            partial_messages: false,
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn prints_stream_json_without_session_and_never_carries_the_prompt() {
        assert_eq!(
            strings(claude_args(&request())),
            [
                "-p",
                "--agent",
                "recruiter-triage",
                "--dangerously-skip-permissions",
                "--max-budget-usd",
                "2.5",
                "--output-format",
                "stream-json",
                "--verbose",
                "--no-session-persistence",
            ]
        );
    }

    #[test]
    fn adds_model_and_partial_messages_when_asked() {
        let req = AgentRequest {
            model: Some("sonnet".into()),
            partial_messages: true,
            max_budget_usd: 5.0,
            ..request()
        };
        let args = strings(claude_args(&req));
        assert_eq!(args[5], "5");
        assert_eq!(
            &args[10..],
            ["--model", "sonnet", "--include-partial-messages"]
        );
    }

    #[test]
    fn the_command_runs_in_the_workspace_with_only_allowed_variables() {
        let config = ClaudeConfig {
            bin: "/opt/claude".into(),
            env_source: vec![
                ("PATH".into(), "/bin".into()),
                ("API_BEARER_TOKEN".into(), "secret".into()),
            ],
            ..ClaudeConfig::default()
        };
        let cmd = build_command(&config, &request(), Path::new("/tmp/ws"));
        let std = cmd.as_std();
        assert_eq!(std.get_program(), "/opt/claude");
        assert_eq!(std.get_current_dir(), Some(Path::new("/tmp/ws")));
        let envs: Vec<_> = std.get_envs().collect();
        assert_eq!(envs, [("PATH".as_ref(), Some("/bin".as_ref()))]);
    }
}
