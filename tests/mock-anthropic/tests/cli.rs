//! The real Claude Code CLI (pinned in `tests/cli/package.json`) against the mock.
//!
//! Each test fails, saying how to install it, when the CLI is not installed (`./scripts/test`
//! installs it).

use std::process::Stdio;
use std::time::{Duration, Instant};

use mock_anthropic::{pinned_cli, MockAnthropic, Usage};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Bounds a whole CLI run; a trivial one takes about a second.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// One finished CLI run.
struct Run {
    /// Exit code; `None` if killed by a signal.
    code: Option<i32>,
    /// stdout lines, each parsed as JSON, with when it arrived.
    lines: Vec<(Instant, Value)>,
    stderr: String,
    elapsed: Duration,
    /// The working directory the CLI ran in (kept alive so tests can look at files in it).
    cwd: TempDir,
}

impl Run {
    fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
    }

    fn result(&self) -> &Value {
        self.lines
            .iter()
            .map(|(_, line)| line)
            .rfind(|line| line["type"] == "result")
            .unwrap_or_else(|| panic!("no result line; stderr: {}", self.stderr))
    }

    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a (Instant, Value)> + 'a {
        self.lines
            .iter()
            .filter(move |(_, line)| line["type"] == kind)
    }

    fn text_deltas(&self) -> impl Iterator<Item = &(Instant, Value)> + '_ {
        self.of_type("stream_event")
            .filter(|(_, line)| line["event"]["delta"]["type"] == "text_delta")
    }
}

/// Starts a mock and runs `claude -p` against it (see [`claude_against`]).
async fn claude(prompt: &str, args: &[&str]) -> (MockAnthropic, Run) {
    let mock = MockAnthropic::start().await;
    let run = claude_against(&mock, prompt, args).await;
    (mock, run)
}

/// Runs `claude -p` the way the gateway does (prompt on stdin, cleared environment, throwaway HOME
/// and working directory) against `mock`, with `args` appended.
async fn claude_against(mock: &MockAnthropic, prompt: &str, args: &[&str]) -> Run {
    let bin = pinned_cli();
    let home = TempDir::new().unwrap();
    let cwd = TempDir::new().unwrap();
    let mut command = Command::new(bin);
    command
        .args([
            "-p",
            "--dangerously-skip-permissions",
            "--max-budget-usd",
            "1",
            "--output-format",
            "stream-json",
            "--verbose",
            "--no-session-persistence",
        ])
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", home.path())
        .env("IS_SANDBOX", "1")
        .envs(mock.cli_env())
        .current_dir(cwd.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().expect("claude starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(prompt.as_bytes()).await.unwrap();
    drop(stdin);
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();

    let run = async {
        let read_stdout = async {
            let mut lines = Vec::new();
            let mut reader = BufReader::new(stdout).lines();
            while let Some(line) = reader.next_line().await.unwrap() {
                let json = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                lines.push((Instant::now(), json));
            }
            lines
        };
        let read_stderr = async {
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
                .await
                .unwrap();
            text
        };
        let (lines, stderr, status) = tokio::join!(read_stdout, read_stderr, child.wait());
        (lines, stderr, status.unwrap())
    };
    let (lines, stderr, status) = tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("claude finishes in time");
    Run {
        code: status.code(),
        lines,
        stderr,
        elapsed: started.elapsed(),
        cwd,
    }
}

#[tokio::test]
async fn text_directive_becomes_the_cli_result_with_the_mock_usage() {
    let (_, run) = claude("[[mock:text hello from the mock]]", &["--model", "sonnet"]).await;
    run.assert_success();
    assert_eq!(run.lines[0].1["type"], "system");
    assert_eq!(run.lines[0].1["subtype"], "init");
    let result = run.result();
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "hello from the mock");
    assert_eq!(result["num_turns"], 1);
    let (usage, default) = (&result["usage"], Usage::DEFAULT);
    assert_eq!(
        [
            &usage["input_tokens"],
            &usage["output_tokens"],
            &usage["cache_read_input_tokens"],
            &usage["cache_creation_input_tokens"],
        ],
        [
            default.input_tokens,
            default.output_tokens,
            default.cache_read_input_tokens,
            default.cache_creation_input_tokens,
        ],
        "{usage}"
    );
    assert!(result["total_cost_usd"].as_f64().unwrap() > 0.0);
    assert!(result["session_id"].is_string());
    let assistant = &run
        .of_type("assistant")
        .next()
        .expect("an assistant line")
        .1;
    assert_eq!(
        assistant["message"]["content"][0]["text"],
        "hello from the mock"
    );
}

#[tokio::test]
async fn prompt_without_directive_is_echoed() {
    let (_, run) = claude("say hi", &[]).await;
    assert_eq!(run.result()["result"], "mock answer: say hi");
}

#[tokio::test]
async fn requested_model_and_prompt_reach_the_api() {
    let (mock, run) = claude(
        "earlier turn: the sky is green",
        &["--model", "claude-sonnet-4-6"],
    )
    .await;
    run.assert_success();
    let requests = mock.message_requests();
    assert_eq!(requests.len(), 1, "one API call for a plain answer");
    let request = &requests[0];
    assert_eq!(request.model.as_deref(), Some("claude-sonnet-4-6"));
    assert!(request.stream, "the CLI streams");
    assert_eq!(request.query.as_deref(), Some("beta=true"));
    assert_eq!(request.header("x-api-key"), Some("mock-anthropic-key"));
    assert_eq!(
        request.prompt_text().trim(),
        "earlier turn: the sky is green"
    );
    assert!(request.all_text().contains("the sky is green"));
    assert_eq!(
        run.result()["modelUsage"]["claude-sonnet-4-6"]["inputTokens"],
        Usage::DEFAULT.input_tokens
    );

    // Aliases are resolved by the CLI before they reach the API.
    let (mock, _) = claude("hi", &["--model", "haiku"]).await;
    let model = mock.message_requests()[0].model.clone().unwrap_or_default();
    assert!(model.starts_with("claude-haiku-"), "haiku became {model}");
}

#[tokio::test]
async fn bash_tool_call_runs_in_the_working_directory_and_its_output_comes_back() {
    let prompt = "make a file [[mock:bash echo hi > made.txt && echo made-it]]";
    let (mock, run) = claude(prompt, &["--agent", "general-purpose"]).await;
    run.assert_success();
    let made = std::fs::read_to_string(run.cwd.path().join("made.txt"))
        .expect("the command ran in the cwd");
    assert_eq!(made, "hi\n");

    let result = run.result();
    assert_eq!(result["result"], "tool said: made-it");
    assert_eq!(result["num_turns"], 2);
    assert_eq!(
        result["usage"]["input_tokens"],
        2 * Usage::DEFAULT.input_tokens
    );
    let tool_result = &run
        .of_type("user")
        .next()
        .expect("a user line with the tool result")
        .1;
    assert_eq!(tool_result["message"]["content"][0]["type"], "tool_result");
    assert_eq!(tool_result["message"]["content"][0]["content"], "made-it");

    let requests = mock.message_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].tool_outputs(), ["made-it"]);
    assert!(
        requests[1].all_text().contains("make a file"),
        "the follow-up repeats the prompt"
    );
}

#[tokio::test]
async fn error_status_makes_the_cli_fail_at_once() {
    let (mock, run) = claude("[[mock:error 529]]", &[]).await;
    assert_eq!(run.code, Some(1));
    let result = run.result();
    assert_eq!(result["is_error"], true);
    assert_eq!(result["api_error_status"], 529);
    assert!(
        result["result"].as_str().unwrap().contains("529"),
        "{result}"
    );
    assert_eq!(mock.message_requests().len(), 1, "no retries");
    assert!(
        run.elapsed < Duration::from_secs(15),
        "took {:?}",
        run.elapsed
    );
}

#[tokio::test]
async fn partial_messages_show_each_word_as_a_stream_event() {
    let (_, run) = claude(
        "[[mock:text one two three four]]",
        &["--include-partial-messages"],
    )
    .await;
    let deltas: Vec<&str> = run
        .text_deltas()
        .filter_map(|(_, line)| line["event"]["delta"]["text"].as_str())
        .collect();
    assert_eq!(deltas, ["one ", "two ", "three ", "four"]);
    assert_eq!(run.result()["result"], "one two three four");
}

#[tokio::test]
async fn delay_comes_after_the_first_delta_so_partial_output_shows_first() {
    let delay = Duration::from_millis(1500);
    let prompt = format!(
        "[[mock:delay {}]] [[mock:text slow answer here]]",
        delay.as_millis()
    );
    let (_, run) = claude(&prompt, &["--include-partial-messages"]).await;
    let first_delta = run.text_deltas().next().expect("a text delta").0;
    let result = run.of_type("result").next().expect("a result").0;
    assert!(
        result.duration_since(first_delta) >= delay.mul_f32(0.8),
        "the first delta arrived only {:?} before the result",
        result.duration_since(first_delta)
    );
    assert_eq!(run.result()["result"], "slow answer here");
}
