//! End-to-end tests of the claude service against stand-in scripts (tests/fixtures/fake-claude/)
//! for the faults the real CLI cannot be made to show, and against the real CLI where it can.
//!
//! Every script writes its pid (the process group id) to `pid` in the workspace; after each run the
//! tests check that no live process of that group is left.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gateway_layers::workspace::WorkspacePath;
use gateway_layers::BoxError;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::{
    AgentError, AgentOutcome, AgentRequest, ClaudeConfig, ClaudeService, ProgressSink, Usage,
};

/// Upper bound for anything the tests wait for; far above what a healthy run needs.
const PATIENCE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fake-claude")
        .join(name)
}

/// The variables the scripts need, as a start-up snapshot would hold them.
fn base_env() -> Vec<(OsString, OsString)> {
    ["PATH", "HOME"]
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)))
        .collect()
}

fn config(script: &str) -> ClaudeConfig {
    ClaudeConfig {
        bin: fixture(script),
        env_source: base_env(),
        inactivity_timeout: PATIENCE,
        ..ClaudeConfig::default()
    }
}

fn request(prompt: &str) -> AgentRequest {
    AgentRequest {
        prompt: prompt.into(),
        agent: "recruiter-triage".into(),
        model: None,
        max_budget_usd: 1.0,
        partial_messages: false,
        options: Default::default(),
    }
}

fn http_request(req: AgentRequest, workspace: &Path) -> http::Request<AgentRequest> {
    let mut req = http::Request::new(req);
    req.extensions_mut()
        .insert(WorkspacePath(workspace.to_path_buf()));
    req
}

/// The outcome of a run of `script` (with the default config) asked `hi`, in `workspace`.
async fn outcome_of(script: &str, workspace: &Path) -> AgentOutcome {
    call(config(script), request("hi"), workspace)
        .await
        .unwrap()
}

async fn call(
    config: ClaudeConfig,
    req: AgentRequest,
    workspace: &Path,
) -> Result<AgentOutcome, BoxError> {
    ClaudeService::new(config)
        .oneshot(http_request(req, workspace))
        .await
}

fn agent_error(result: Result<AgentOutcome, BoxError>) -> AgentError {
    match result {
        Ok(outcome) => panic!("expected an error, got {outcome:?}"),
        Err(err) => match err.downcast::<AgentError>() {
            Ok(err) => *err,
            Err(other) => panic!("expected an AgentError, got {other}"),
        },
    }
}

fn read_pid(dir: &Path, file: &str) -> Option<i32> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Pids of the live (non-zombie) processes in group `pgid`, from /proc.
fn live_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = after.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Asserts that the run's process group and its background `grandchild` are gone.
async fn assert_tree_gone(dir: &Path, grandchild: i32) {
    assert_group_gone(dir).await;
    assert!(
        !alive(grandchild),
        "background process {grandchild} survived the run"
    );
}

/// Waits (bounded) until no live process of the group in `dir/pid` is left.
async fn assert_group_gone(dir: &Path) {
    let pgid = read_pid(dir, "pid").expect("the script wrote its pid");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = live_members(pgid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of group {pgid} still running: {left:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_successful_run_reports_text_usage_cost_and_every_event() {
    let dir = TempDir::new().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut req = http_request(request("hello"), dir.path());
    req.extensions_mut().insert(ProgressSink(tx));

    let outcome = ClaudeService::new(config("ok.sh"))
        .oneshot(req)
        .await
        .unwrap();

    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.text.as_deref(), Some("Hello from the fake agent."));
    assert_eq!(outcome.session_id.as_deref(), Some("fake-session"));
    assert_eq!(outcome.subtype.as_deref(), Some("success"));
    assert_eq!(outcome.cost_usd, Some(0.0042));
    assert_eq!(
        outcome.usage,
        Some(Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_input_tokens: 30,
            cache_creation_input_tokens: 2,
        })
    );
    let line = outcome.result_line.as_deref().unwrap();
    assert!(line.starts_with(r#"{"type":"result""#), "{line}");

    let mut types = Vec::new();
    while let Ok(event) = rx.try_recv() {
        let event: serde_json::Value = serde_json::from_str(&event).unwrap();
        types.push(event["type"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(types, ["system", "assistant", "result"]);
    assert_group_gone(dir.path()).await;
}

#[tokio::test]
async fn a_crash_is_an_outcome_without_exit_code_and_with_stderr() {
    let dir = TempDir::new().unwrap();
    let outcome = outcome_of("crash.sh", dir.path()).await;
    assert_eq!(outcome.exit_code, None, "killed by SIGSEGV");
    assert!(!outcome.succeeded());
    assert!(outcome.result_line.is_none());
    assert!(
        outcome.stderr.contains("segmentation fault imminent"),
        "{:?}",
        outcome.stderr
    );
    assert_group_gone(dir.path()).await;
}

#[tokio::test]
async fn a_silent_agent_is_stopped_by_the_watchdog_with_its_grandchild() {
    let dir = TempDir::new().unwrap();
    let config = ClaudeConfig {
        inactivity_timeout: Duration::from_millis(500),
        ..config("hang.sh")
    };
    let started = Instant::now();
    let err = agent_error(call(config, request("hi"), dir.path()).await);
    assert!(
        matches!(err, AgentError::Hung { after } if after == Duration::from_millis(500)),
        "{err}"
    );
    assert!(started.elapsed() < PATIENCE);
    let grandchild = read_pid(dir.path(), "grandchild.pid").expect("tree was up");
    assert_tree_gone(dir.path(), grandchild).await;
}

#[tokio::test]
async fn dropping_the_run_kills_the_whole_process_group() {
    let dir = TempDir::new().unwrap();
    // Boxed so that `drop` below really drops the future (a `pin!` would only drop a reference).
    let mut run = Box::pin(call(config("hang.sh"), request("hi"), dir.path()));
    let tree_up = dir.path().join("grandchild.pid");
    tokio::select! {
        result = &mut run => panic!("the hanging agent ended by itself: {result:?}"),
        () = wait_for_file(&tree_up) => {}
    }
    let pgid = read_pid(dir.path(), "pid").unwrap();
    let grandchild = read_pid(dir.path(), "grandchild.pid").unwrap();
    assert!(
        live_members(pgid).len() >= 2,
        "leader and grandchild are running"
    );

    // What a timeout, a cancel or a client disconnect does to the future.
    drop(run);

    assert_tree_gone(dir.path(), grandchild).await;
}

#[tokio::test]
async fn a_normal_exit_kills_background_jobs_left_holding_the_pipes() {
    let dir = TempDir::new().unwrap();
    let started = Instant::now();
    let outcome = outcome_of("leave-background.sh", dir.path()).await;
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.text.as_deref(), Some("done, one job left running"));
    // The group was killed at exit, so the pipes closed at once: no wait for the drain grace.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let grandchild = read_pid(dir.path(), "grandchild.pid").unwrap();
    assert_tree_gone(dir.path(), grandchild).await;
}

#[tokio::test]
async fn a_stderr_flood_completes_with_stderr_cut_at_the_cap() {
    let dir = TempDir::new().unwrap();
    let config = ClaudeConfig {
        stderr_cap: 64 * 1024,
        ..config("stderr-flood.sh")
    };
    let outcome = call(config, request("hi"), dir.path()).await.unwrap();
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.text.as_deref(), Some("survived the flood"));
    assert_eq!(outcome.stderr.len(), 64 * 1024);
    assert!(outcome.stderr.bytes().all(|b| b == b'e'));
    assert!(outcome.stderr_truncated);
    assert_group_gone(dir.path()).await;
}

#[tokio::test]
async fn a_stderr_flood_within_the_cap_is_kept_whole() {
    let dir = TempDir::new().unwrap();
    let outcome = outcome_of("stderr-flood.sh", dir.path()).await;
    assert_eq!(outcome.stderr.len(), 1024 * 1024);
    assert!(!outcome.stderr_truncated);
}

#[tokio::test]
async fn a_stdout_flood_past_the_cap_still_ends_with_its_result() {
    let dir = TempDir::new().unwrap();
    let started = Instant::now();
    let outcome = outcome_of("stdout-flood.sh", dir.path()).await;
    assert_eq!(outcome.text.as_deref(), Some("the result after the flood"));
    assert!(started.elapsed() < PATIENCE);
    assert_group_gone(dir.path()).await;
}

#[tokio::test]
async fn output_that_is_not_stream_json_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let err = agent_error(call(config("garbage.sh"), request("hi"), dir.path()).await);
    match &err {
        AgentError::MalformedOutput { sample } => {
            assert_eq!(sample, "Welcome to claude! This is not JSON.");
        }
        other => panic!("expected MalformedOutput, got {other}"),
    }
    assert!(err.to_string().contains("not stream-json"), "{err}");
    assert_group_gone(dir.path()).await;
}

#[tokio::test]
async fn a_failure_with_empty_stdout_is_an_outcome_even_if_the_prompt_was_not_read() {
    let dir = TempDir::new().unwrap();
    // fail.sh exits without reading stdin: writing this prompt meets a broken pipe.
    let prompt = "x".repeat(1024 * 1024);
    let outcome = call(config("fail.sh"), request(&prompt), dir.path())
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, Some(3));
    assert!(outcome.result_line.is_none());
    assert_eq!(outcome.stderr, "Error: could not reach the API\n");
    assert_group_gone(dir.path()).await;
}

#[tokio::test]
async fn the_agent_never_sees_gateway_secrets() {
    let dir = TempDir::new().unwrap();
    let mut env = base_env();
    for (k, v) in [
        ("API_BEARER_TOKEN", "gateway-secret"),
        ("API_BEARER_TOKENS_FILE", "/secrets/tokens"),
        ("DATABASE_URL", "postgres://secret"),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("GH_HOST", "github.example"),
        ("LC_ALL", "C.UTF-8"),
    ] {
        env.push((k.into(), v.into()));
    }
    let config = ClaudeConfig {
        env_source: env,
        extra_env: vec!["API_BEARER_TOKEN".into(), "GH_HOST".into()],
        ..config("echo-env.sh")
    };
    let outcome = call(config, request("hi"), dir.path()).await.unwrap();
    let text = outcome.text.unwrap_or_default();
    let names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
    for wanted in ["PATH", "ANTHROPIC_API_KEY", "GH_HOST", "LC_ALL"] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    assert!(text.contains("ANTHROPIC_API_KEY=sk-ant-test"), "{text}");
    assert!(!text.contains("gateway-secret"), "{text}");
    assert!(!text.contains("API_BEARER"), "{text}");
    assert!(!text.contains("DATABASE_URL"), "{text}");
    assert_group_gone(dir.path()).await;
}

#[tokio::test]
async fn a_large_prompt_starting_with_dashes_arrives_intact_on_stdin() {
    let dir = TempDir::new().unwrap();
    let mut prompt = String::from("--dangerously-do-something-else\n");
    while prompt.len() < 300 * 1024 {
        prompt.push_str("Summarise the quarterly numbers, line by line. ");
    }
    let outcome = call(config("echo-stdin.sh"), request(&prompt), dir.path())
        .await
        .unwrap();
    let text = outcome.text.unwrap_or_default();
    assert!(
        text.starts_with(&format!("bytes={} ", prompt.len())),
        "{text}"
    );
    assert!(
        !text.contains("dangerously-do-something-else"),
        "prompt leaked into argv: {text}"
    );
    assert!(
        text.contains("args=-p --agent recruiter-triage --dangerously-skip-permissions"),
        "{text}"
    );
    let received = std::fs::read(dir.path().join("stdin.bin")).unwrap();
    assert!(
        received == prompt.as_bytes(),
        "stdin differs from the prompt"
    );
    assert_group_gone(dir.path()).await;
}

#[tokio::test]
async fn an_unknown_agent_is_named_with_the_available_ones() {
    let dir = TempDir::new().unwrap();
    let mut req = request("hi");
    req.agent = "nosuch".into();
    let err = agent_error(call(config("unknown-agent.sh"), req, dir.path()).await);
    assert_eq!(
        err.to_string(),
        "agent \"nosuch\" not found; available agents: claude, Explore, general-purpose, Plan, statusline-setup"
    );
}

#[tokio::test]
async fn a_missing_binary_names_it_and_points_at_claude_bin() {
    let dir = TempDir::new().unwrap();
    let config = ClaudeConfig {
        bin: dir.path().join("no-such-claude"),
        ..config("ok.sh")
    };
    let err = agent_error(call(config, request("hi"), dir.path()).await);
    assert!(matches!(err, AgentError::Spawn { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no-such-claude") && text.contains("CLAUDE_BIN"),
        "{text}"
    );
}

#[tokio::test]
async fn a_request_without_workspace_is_refused() {
    let err = agent_error(
        ClaudeService::new(config("ok.sh"))
            .oneshot(http::Request::new(request("hi")))
            .await,
    );
    assert!(matches!(err, AgentError::NoWorkspace), "{err}");
}

#[tokio::test]
async fn the_real_cli_reports_an_unknown_agent() {
    // Fails loudly, with the install hint, when the pinned CLI is missing.
    let bin = mock_anthropic::pinned_cli();
    let dir = TempDir::new().unwrap();
    let home = TempDir::new().unwrap();
    let mut env = base_env();
    env.retain(|(k, _)| k != "HOME");
    for (k, v) in [
        ("HOME", home.path().as_os_str()),
        ("IS_SANDBOX", "1".as_ref()),
        ("ANTHROPIC_API_KEY", "x".as_ref()),
        // Nothing listens there: the CLI must fail before it needs the API.
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9".as_ref()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".as_ref()),
    ] {
        env.push((k.into(), v.to_owned()));
    }
    let config = ClaudeConfig {
        bin,
        env_source: env,
        inactivity_timeout: Duration::from_secs(60),
        ..ClaudeConfig::default()
    };
    let mut req = request("hi");
    req.agent = "nosuch".into();
    let err = agent_error(call(config, req, dir.path()).await);
    match &err {
        AgentError::UnknownAgent { agent, available } => {
            assert_eq!(agent, "nosuch");
            let list = available.as_deref().unwrap_or_default();
            assert!(list.contains("general-purpose"), "{list}");
        }
        other => panic!("expected UnknownAgent, got {other}"),
    }
    assert!(err
        .to_string()
        .starts_with("agent \"nosuch\" not found; available agents: "));
}
