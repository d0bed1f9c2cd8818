//! The command line the CLI is started with.
//!
//! No shell is involved: the binary is executed directly with an argument vector, and the prompt
//! goes to stdin, never to argv (on argv a prompt over 128 KiB fails with E2BIG, and one
//! starting with `-` was read as a flag).

use std::ffi::{OsStr, OsString};
use std::path::Path;

use tokio::sync::mpsc;

use crate::contain::{Io, PlacedCell, RunCommand};

use super::options::RunOptions;
use super::service::ClaudeConfig;
use super::session::SessionArgs;

/// The CLI's arguments for one request.
pub fn claude_args(request: &AgentRequest) -> Vec<OsString> {
    session_args(request, &SessionArgs::default())
}

/// The CLI's arguments for one request whose session is kept or resumed as `session` says.
pub(crate) fn session_args(request: &AgentRequest, session: &SessionArgs) -> Vec<OsString> {
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
    ];
    if !session.persist {
        // Otherwise every run leaves a transcript under ~/.claude/projects/ for ever.
        args.push("--no-session-persistence".into());
    }
    if let Some(id) = &session.resume {
        // Glued to its flag, like the model.
        args.push(format!("--resume={id}").into());
    }
    // Glued to its flag: a model name can never be read as a flag of its own.
    if let Some(model) = request.model.as_ref().or(request.options.model.as_ref()) {
        args.push(format!("--model={model}").into());
    }
    if request.partial_messages {
        args.push("--include-partial-messages".into());
    }
    args.extend(request.options.args());
    args
}

/// Builds the command for one run: arguments, working directory, allow-listed environment and
/// piped stdio, in its own process group so the whole group can be killed at once.
///
/// With the run's cell (`placed`), the command runs as the run (its uid in uid mode, its marker in
/// either mode, no new privileges) with the run's own HOME and TMPDIR, so nothing of one run's
/// CLI state reaches another run.
pub(crate) fn build_command(
    config: &ClaudeConfig,
    request: &AgentRequest,
    workspace: &Path,
    placed: Option<&PlacedCell>,
    session: &SessionArgs,
) -> RunCommand {
    let env = allowed_env(&config.env_source, &config.extra_env, &config.withheld_env);
    let mut cmd = match placed {
        // Starts from an empty environment holding only the run's marker.
        Some(placed) => placed.cell.command(&config.bin),
        None => RunCommand::plain(&config.bin),
    };
    cmd.args(session_args(request, session))
        .current_dir(workspace)
        .envs(env)
        .stdin(Io::Piped)
        .stdout(Io::Piped)
        .stderr(Io::Piped);
    if let Some(placed) = placed {
        cmd.env("HOME", &placed.home).env("TMPDIR", placed.tmpdir());
    }
    cmd
}

// The environment the agent runs with: an allow-list copied from the gateway's own.
//
// The agent runs arbitrary Bash, so it must never see the gateway's secrets. The
// child starts from an empty environment and receives only what the CLI needs to find its tools,
// reach its API (directly, through a proxy, on Bedrock or on Vertex) and render text.

/// Variables copied when present, by exact name.
const ALLOWED_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "TERM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "IS_SANDBOX",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUD_ML_REGION",
    "ANTHROPIC_VERTEX_PROJECT_ID",
];

/// Variables copied when present, by prefix: locale, the CLI's own settings and cloud credentials.
const ALLOWED_PREFIXES: &[&str] = &["LC_", "ANTHROPIC_", "CLAUDE_", "AWS_"];

/// Prefixes never passed on: any bearer-token variant a future setting might add, and the
/// gateway's own run marker (a value inherited from outside must not replace the run's).
const DENIED_PREFIXES: &[&str] = &["API_BEARER_", "CLAUDE_GATEWAY_"];

/// Selects, from `source` (a snapshot of the gateway's environment), the variables the agent gets.
///
/// A variable is passed when its name is on the built-in allow-list or in `extra` (a setting's
/// pass-through list), and is neither an `API_BEARER_*` name nor in `withheld` (the embedding
/// application's own settings: the gateway passes every variable its flags read). Names that are not valid UTF-8 are dropped; values are copied
/// byte for byte. The order of `source` is kept.
pub(crate) fn allowed_env(
    source: &[(OsString, OsString)],
    extra: &[String],
    withheld: &[String],
) -> Vec<(OsString, OsString)> {
    source
        .iter()
        .filter(|(name, _)| is_allowed(name, extra, withheld))
        .cloned()
        .collect()
}

fn is_allowed(name: &OsStr, extra: &[String], withheld: &[String]) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let denied =
        withheld.iter().any(|w| w == name) || DENIED_PREFIXES.iter().any(|p| name.starts_with(p));
    if denied {
        return false;
    }
    ALLOWED_NAMES.contains(&name)
        || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p))
        || extra.iter().any(|e| e == name)
}

// What counts as a plain agent name: it reaches the CLI as the value of `--agent`, so it must
// not look like a flag, a path or anything a shell or file system would read specially.

/// The longest agent name accepted.
pub(crate) const MAX_AGENT_NAME_LEN: usize = 128;

/// Checks that `name` is a plain agent name: ASCII letters, digits, `-`, `_`, `.` and `:`,
/// not starting with `-` or `.`, at most [`MAX_AGENT_NAME_LEN`] bytes. Says why when it is not.
pub(crate) fn check_agent_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the agent name is empty");
    }
    if name.len() > MAX_AGENT_NAME_LEN {
        return Err("the agent name is longer than 128 characters");
    }
    if name.starts_with('-') || name.starts_with('.') {
        return Err("an agent name may not start with '-' or '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err("an agent name may hold only letters, digits, '-', '_', '.' and ':'");
    }
    Ok(())
}

// What a caller asks the agent to do: the body of the `http::Request` that travels down the stack.

/// One agent run, as the routes hand it to the stack.
///
/// The prompt is written to the CLI's stdin, never put on its command line, so it may be any size
/// and start with any character.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// The text sent to the agent on stdin. Shared, not copied, when the request is (a chat run
    /// going back to the queue keeps its request for a second try).
    pub prompt: std::sync::Arc<str>,
    /// The `--agent` name; validated by the routes as a plain name before it gets here.
    pub agent: String,
    /// `--model`, when the caller chose one (chat always does); wins over `options.model`.
    pub model: Option<String>,
    /// `--max-budget-usd`.
    pub max_budget_usd: f64,
    /// Ask the CLI for token-level deltas (`--include-partial-messages`), for streaming chat.
    pub partial_messages: bool,
    /// The caller's further options (checked by the routes before they get here).
    pub options: RunOptions,
}

/// A request extension: where the claude service sends each stream-json event as it arrives, as
/// the line of JSON the CLI printed (text is held compactly; a parsed event takes many times its
/// size).
///
/// Unbounded on purpose: the producer is the agent's stdout, forwarded up to
/// `MAX_AGENT_STDOUT_BYTES`, and a slow consumer must never slow the run.
#[derive(Debug, Clone)]
pub struct ProgressSink(pub mpsc::UnboundedSender<Box<str>>);

#[cfg(test)]
pub(crate) mod argv_tests {
    use super::*;

    fn request() -> AgentRequest {
        AgentRequest {
            prompt: "--help me".into(),
            agent: "recruiter-triage".into(),
            model: None,
            max_budget_usd: 2.5,
            partial_messages: false,
            options: RunOptions::default(),
        }
    }

    /// Arguments as strings, to compare with literals.
    pub(crate) fn strings(args: Vec<OsString>) -> Vec<String> {
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
            ["--model=sonnet", "--include-partial-messages"]
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
        let cmd = build_command(
            &config,
            &request(),
            Path::new("/tmp/ws"),
            None,
            &SessionArgs::default(),
        );
        let std = cmd.as_std();
        assert_eq!(std.get_program(), "/opt/claude");
        assert_eq!(std.get_current_dir(), Some(Path::new("/tmp/ws")));
        let envs: Vec<_> = std.get_envs().collect();
        assert_eq!(envs, [("PATH".as_ref(), Some("/bin".as_ref()))]);
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn names(env: &[(OsString, OsString)]) -> Vec<String> {
        env.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn keeps_the_variables_the_cli_needs() {
        let env = source(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("LC_ALL", "C.UTF-8"),
            ("ANTHROPIC_API_KEY", "sk"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1"),
            ("CLAUDE_CODE_USE_BEDROCK", "1"),
            ("AWS_REGION", "eu-west-1"),
            ("https_proxy", "http://proxy:3128"),
            ("IS_SANDBOX", "1"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json"),
        ]);
        assert_eq!(names(&allowed_env(&env, &[], &[])), names(&env));
    }

    #[test]
    fn drops_everything_else() {
        let env = source(&[
            ("PATH", "/usr/bin"),
            ("DATABASE_URL", "postgres://secret"),
            ("GITHUB_TOKEN", "ghp_secret"),
            ("LD_PRELOAD", "/evil.so"),
        ]);
        assert_eq!(names(&allowed_env(&env, &[], &[])), ["PATH"]);
    }

    #[test]
    fn never_passes_the_bearer_token_even_when_named_for_pass_through() {
        let env = source(&[
            ("API_BEARER_TOKEN", "secret"),
            ("API_BEARER_TOKENS_FILE", "/secrets/tokens"),
            ("API_BEARER_TOKEN_OLD", "older-secret"),
            ("CLAUDE_BIN", "/usr/local/bin/claude"),
            ("GIT_CRYPT_KEY", "/secrets/key"),
            ("HOME", "/root"),
        ]);
        let extra: Vec<String> = ["API_BEARER_TOKEN", "API_BEARER_TOKEN_OLD", "GIT_CRYPT_KEY"]
            .map(String::from)
            .into();
        let withheld: Vec<String> = ["CLAUDE_BIN", "GIT_CRYPT_KEY"].map(String::from).into();
        assert_eq!(names(&allowed_env(&env, &extra, &withheld)), ["HOME"]);
    }

    #[test]
    fn passes_extra_names_a_setting_adds() {
        let env = source(&[("GH_HOST", "github.example"), ("OTHER", "x")]);
        let extra = vec!["GH_HOST".to_string()];
        assert_eq!(names(&allowed_env(&env, &extra, &[])), ["GH_HOST"]);
    }

    #[test]
    fn the_embedders_withheld_names_override_the_allow_list() {
        let env = source(&[("CLAUDE_NEW_GATEWAY_SETTING", "x"), ("PATH", "/bin")]);
        let withheld = vec!["CLAUDE_NEW_GATEWAY_SETTING".to_string()];
        assert_eq!(names(&allowed_env(&env, &withheld, &withheld)), ["PATH"]);
    }

    #[test]
    fn values_are_copied_unchanged() {
        let env = source(&[("LANG", "de_DE.UTF-8")]);
        assert_eq!(allowed_env(&env, &[], &[]), env);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_are_dropped() {
        use std::os::unix::ffi::OsStringExt;
        let env = vec![(OsString::from_vec(vec![b'P', 0xff]), OsString::from("x"))];
        assert!(allowed_env(&env, &["P\u{fffd}".to_string()], &[]).is_empty());
    }
}

#[cfg(test)]
mod agent_name_tests {
    use super::check_agent_name as check;

    #[test]
    fn plain_names_pass() {
        for name in [
            "general-purpose",
            "recruiter-triage",
            "a",
            "plugin:agent_1.2",
        ] {
            assert!(check(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn flags_paths_and_shell_text_are_refused() {
        for name in [
            "",
            "--model",
            "-x",
            "../etc",
            "a/b",
            "a b",
            "$(id)",
            "é",
            &"a".repeat(129),
        ] {
            assert!(check(name).is_err(), "{name}");
        }
    }
}
