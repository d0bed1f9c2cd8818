//! The one test harness: a gateway served in-process on 127.0.0.1:0, in front of the real `claude`
//! CLI (or a stand-in script), which talks to a mock Anthropic API this harness also serves; with
//! the bounded wait ([`eventually`]), the git fixture ([`Repos`]), and the job and process helpers
//! the tests share. `examples/bench.rs` runs on it too.
#![allow(dead_code)]

mod git;
mod jobs;
pub mod openai_schema;
pub mod postgres;
mod process;
pub mod sdk;
mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use claude_gateway::app::{App, AppState};
use claude_gateway::config::{Config, Settings};
use mock_anthropic::MockAnthropic;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

// Each test crate uses some of these.
#[allow(unused_imports)]
pub use {
    git::{git, git_crypt_fixture, Repos, README},
    jobs::*,
    process::*,
    wait::{eventually, secs, until_none, Probe},
};

/// The token every harness gateway accepts.
pub const TOKEN: &str = "test-token";

/// The chat route.
pub const CHAT: &str = "/v1/chat/completions";

/// A running gateway and what it runs against.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its shared state, to look at jobs and gauges without going through HTTP.
    pub state: AppState,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The mock Anthropic API behind the CLI.
    pub mock: MockAnthropic,
    /// Where workspaces are made.
    pub jobs_dir: tempfile::TempDir,
    /// The agent's HOME (to check nothing is left in it).
    pub home: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// What a harness gateway runs against, kept alive as long as it.
pub struct Backing {
    /// The mock Anthropic API behind the CLI.
    pub mock: MockAnthropic,
    /// Where workspaces are made.
    pub jobs_dir: tempfile::TempDir,
    /// The agent's HOME (to check nothing is left in it).
    pub home: tempfile::TempDir,
}

/// Builds a [`Gateway`] with extra settings.
#[derive(Default)]
pub struct GatewayBuilder {
    args: Vec<String>,
    claude_bin: Option<PathBuf>,
    base_dir: Option<PathBuf>,
    git_crypt_key: Option<PathBuf>,
    jobs_dir: Option<PathBuf>,
    agent_vars: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// Adds `--flag value`.
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(format!("--{flag}"));
        self.args.push(value.to_string());
        self
    }

    /// Gives the agent (the CLI) one more environment variable, beside those that point it at
    /// the mock.
    pub fn agent_var(mut self, name: &str, value: impl ToString) -> Self {
        self.agent_vars.push((name.to_owned(), value.to_string()));
        self
    }

    /// Runs this CLI instead of the real one.
    pub fn claude(mut self, bin: PathBuf) -> Self {
        self.claude_bin = Some(bin);
        self
    }

    /// Runs the stand-in `tests/fixtures/fake-claude/NAME` instead of the real CLI.
    pub fn fake(self, name: &str) -> Self {
        self.claude(fake_claude(name))
    }

    /// Unlocks workspaces with this git-crypt key.
    pub fn git_crypt_key(mut self, key: &Path) -> Self {
        self.git_crypt_key = Some(key.to_path_buf());
        self
    }

    /// Uses this `JOBS_DIR` (and so its store) instead of a fresh one: a gateway started again on
    /// the directory of an earlier one.
    pub fn jobs_dir(mut self, dir: &Path) -> Self {
        self.jobs_dir = Some(dir.to_path_buf());
        self
    }

    /// Clones runs from this base repository.
    pub fn base(mut self, dir: &Path) -> Self {
        self.base_dir = Some(dir.to_path_buf());
        self
    }

    /// Starts the mock API and builds the gateway's [`App`] without serving it, for a test that
    /// drives the `App` itself.
    pub async fn build(self) -> (App, Backing) {
        let backing = Backing {
            mock: MockAnthropic::start().await,
            jobs_dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        };
        let claude = self.claude_bin.unwrap_or_else(claude_bin);
        let mut argv: Vec<String> = vec![
            "claude-gateway".into(),
            "--api-bearer-token".into(),
            TOKEN.into(),
            "--jobs-dir".into(),
            self.jobs_dir
                .as_deref()
                .unwrap_or(backing.jobs_dir.path())
                .display()
                .to_string(),
            "--claude-bin".into(),
            claude.display().to_string(),
            "--workspace-dir".into(),
            self.base_dir
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "/nonexistent/claude-gateway-base".into()),
            "--git-crypt-key".into(),
            self.git_crypt_key
                .map(|k| k.display().to_string())
                .unwrap_or_else(|| "/nonexistent/git-crypt-key".into()),
        ];
        argv.extend(self.args);
        let mut config: Config = Settings::try_parse_from(argv)
            .expect("valid test flags")
            .validate()
            .expect("valid test config");
        config.agent_env_overrides = agent_env(&backing.mock.url(), backing.home.path());
        config.agent_env_overrides.extend(self.agent_vars);
        // The harness runs in the test binary: the gateway's own executable serves the caller's
        // functions (examples, which have no such variable, offer none).
        if let Some(bin) = option_env!("CARGO_BIN_EXE_claude-gateway") {
            config.functions_bin = bin.into();
        }
        let app = App::build(config).await.expect("the gateway builds");
        (app, backing)
    }

    /// Starts the mock API and the gateway, and waits until it answers.
    pub async fn start(self) -> Gateway {
        let (
            app,
            Backing {
                mock,
                jobs_dir,
                home,
            },
        ) = self.build().await;
        let state = app.state().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(claude_gateway::serve(app, listener, async {
            let _ = rx.await;
        }));
        let gateway = Gateway {
            url,
            state,
            http: reqwest::Client::new(),
            mock,
            jobs_dir,
            home,
            shutdown: Some(tx),
            server: Some(server),
        };
        eventually("the gateway answers", secs(30), || async {
            gateway
                .request_as(None, Method::GET, "/health")
                .send()
                .await
                .is_ok()
        })
        .await;
        gateway
    }
}

/// The variables the CLI needs to run against the mock, with a private HOME.
pub fn agent_env(mock_url: &str, home: &Path) -> Vec<(String, String)> {
    vec![
        ("ANTHROPIC_BASE_URL".into(), mock_url.to_owned()),
        ("ANTHROPIC_API_KEY".into(), "test-key".into()),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            "1".into(),
        ),
        ("IS_SANDBOX".into(), "1".into()),
        ("HOME".into(), home.display().to_string()),
    ]
}

/// Sends a request, panicking if it cannot be.
pub async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request sent")
}

/// The answer text of a chat completion; panics when it has none.
pub fn answer(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {body}"))
}

/// Asserts that `body` is an OpenAI error of `code` whose message says `says`.
pub fn assert_openai_error(body: &Value, code: &str, says: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains(says)),
        "{body}"
    );
}

/// Reads a JSON body; one from `/v1/…` must conform to OpenAI's schema of that answer.
pub async fn json(response: Response) -> Value {
    let (path, success) = (
        response.url().path().to_owned(),
        response.status().is_success(),
    );
    let text = response.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    conforms(&path, success, false, &text);
    body
}

/// Reads a streamed answer into its `data:` payloads; on `/v1/…` each event but `[DONE]` must
/// conform to OpenAI's schema of a chunk (or of an error, for one that ends the stream).
pub async fn sse_data(response: Response) -> Vec<String> {
    let (path, success) = (
        response.url().path().to_owned(),
        response.status().is_success(),
    );
    let text = response.text().await.expect("body read");
    conforms(&path, success, true, &text);
    openai_schema::sse_payloads(&text)
}

/// The chunks of a streamed chat completion, parsed; its last event must be `[DONE]`.
pub async fn chat_chunks(response: Response) -> Vec<Value> {
    let data = sse_data(response).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Asserts that runs of keys `alice` (weight 3) and `bob` (weight 1) started in `order` (their
/// names, `alice0`, `bob2`, …) kept FIFO within each key and shared the slots 3:1, rounds of four
/// starts holding at most two of bob's (one, within one job), and the first round one.
pub fn assert_three_to_one(order: &[String]) {
    for key in ["alice", "bob"] {
        let mine: Vec<_> = order
            .iter()
            .filter(|n| n.starts_with(key))
            .cloned()
            .collect();
        let mut sorted = mine.clone();
        sorted.sort_by_key(|n| n[key.len()..].parse::<u32>().unwrap());
        assert_eq!(mine, sorted, "FIFO within each key: {order:?}");
    }
    for round in order.chunks(4) {
        let bob = round.iter().filter(|n| n.starts_with("bob")).count();
        assert!((0..=2).contains(&bob), "round {round:?} of {order:?}");
    }
    assert!(order[..4].iter().any(|n| n.starts_with("bob")), "{order:?}");
}

/// Panics, naming the fields, unless the answer to `path` conforms to OpenAI's schema.
fn conforms(path: &str, success: bool, streamed: bool, text: &str) {
    let errors = openai_schema::answer_violations(path, success, streamed, text);
    assert!(
        errors.is_empty(),
        "the answer to {path} does not conform to OpenAI's schema:\n  {}\nbody: {text}",
        errors.join("\n  ")
    );
}

/// A response's status and JSON body.
pub async fn status_and_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, json(response).await)
}

impl Gateway {
    /// Whether a request the mock API received holds `needle` anywhere in its body.
    pub fn mock_saw(&self, needle: &str) -> bool {
        self.mock
            .requests()
            .iter()
            .any(|request| request.body.to_string().contains(needle))
    }

    /// A gateway with default settings in front of the real CLI.
    pub async fn start() -> Gateway {
        GatewayBuilder::default().start().await
    }

    /// A gateway in front of the real CLI with one setting changed: `--flag value`.
    pub async fn with(flag: &str, value: impl ToString) -> Gateway {
        GatewayBuilder::default().arg(flag, value).start().await
    }

    /// A gateway that runs one run at a time and queues up to `depth`.
    pub async fn one_slot(depth: usize) -> Gateway {
        Self::builder()
            .arg("max-concurrency", 1)
            .arg("max-queue-depth", depth)
            .start()
            .await
    }

    /// A builder for other settings.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// A gateway with default settings in front of the stand-in `tests/fixtures/fake-claude/NAME`.
    pub async fn fake(name: &str) -> Gateway {
        GatewayBuilder::default().fake(name).start().await
    }

    /// A gateway in front of the stand-in `tests/fixtures/fake-claude/NAME` with one setting
    /// changed: `--flag value`.
    pub async fn fake_with(name: &str, flag: &str, value: impl ToString) -> Gateway {
        GatewayBuilder::default()
            .fake(name)
            .arg(flag, value)
            .start()
            .await
    }

    /// A request to `path` carrying `token` as its bearer token (`None`: no `Authorization`).
    pub fn request_as(&self, token: Option<&str>, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A request to `path` with the harness token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_as(Some(TOKEN), method, path)
    }

    /// `POST path` with a JSON body and the harness token.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        send(self.request(Method::POST, path).json(body)).await
    }

    /// `POST path` with the harness token and `body` as it is, labelled JSON.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        let request = self.request(Method::POST, path);
        send(
            request
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// `GET path` with the harness token.
    pub async fn get(&self, path: &str) -> Response {
        send(self.request(Method::GET, path)).await
    }

    /// `GET path` with no token.
    pub async fn get_open(&self, path: &str) -> Response {
        send(self.request_as(None, Method::GET, path)).await
    }

    /// The value of one sample of `/metrics` (`series` is the name with its labels, e.g.
    /// `claude_gateway_pool_takes_total{outcome="hit"}`), 0 when absent.
    #[allow(dead_code)]
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .get_open("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// `GET /health` (no token needed), as JSON.
    pub async fn health(&self) -> Value {
        json(self.get_open("/health").await).await
    }

    /// A one-message chat completion request body.
    pub fn chat_body(content: &str) -> Value {
        serde_json::json!({"model": "haiku", "messages": [{"role": "user", "content": content}]})
    }

    /// `POST /v1/chat/completions` of one user message, `content`.
    pub async fn chat(&self, content: &str) -> Response {
        self.post(CHAT, &Self::chat_body(content)).await
    }

    /// [`chat`](Self::chat), asserting the answer's status; answers its JSON body.
    pub async fn chat_json(&self, content: &str, status: StatusCode) -> Value {
        let response = self.chat(content).await;
        assert_eq!(response.status(), status);
        json(response).await
    }

    /// A chat completion of one user message, not sent yet: `.send()` it (it can be spawned).
    pub fn chat_request(&self, content: &str) -> RequestBuilder {
        self.request(Method::POST, CHAT)
            .json(&Self::chat_body(content))
    }

    /// The variables the agent runs with (the mock's address, a private HOME).
    pub fn agent_env(&self) -> Vec<(String, String)> {
        agent_env(&self.mock.url(), self.home.path())
    }

    /// Asks for shutdown and waits (bounded) until the server has drained; what it ran against
    /// (the mock, `JOBS_DIR`, HOME) stays until the `Gateway` is dropped.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(60), server)
                .await
                .expect("the gateway drains within a minute")
                .expect("the server task ends cleanly");
        }
    }

    /// Workspaces currently under `JOBS_DIR` (the warm pool's directory, `.pool`, holds no
    /// run's and is left out).
    pub fn workspaces(&self) -> Vec<PathBuf> {
        workspaces_in(self.jobs_dir.path())
    }

    /// Checkouts ready in the warm pool (`JOBS_DIR/.pool`).
    pub fn pooled(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.jobs_dir.path().join(".pool"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("ws-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (bounded) until `JOBS_DIR` is empty: removal happens off the response path.
    pub async fn wait_workspaces_gone(&self) {
        self.wait_workspaces_gone_within(secs(20)).await;
    }

    /// Waits at most `limit` until `JOBS_DIR` is empty.
    pub async fn wait_workspaces_gone_within(&self, limit: Duration) {
        until_none("the workspaces are removed", limit, || self.workspaces()).await;
    }

    /// Waits (bounded) until a run left nothing behind: no agent process, no workspace, nothing
    /// active or queued.
    pub async fn wait_nothing_left(&self) {
        self.wait_no_agent_process().await;
        self.wait_workspaces_gone().await;
        self.wait_idle().await;
    }

    /// Waits (bounded) until no process runs in any of this gateway's workspaces.
    pub async fn wait_no_agent_process(&self) {
        wait_no_process_in(self.jobs_dir.path()).await;
    }

    /// Waits (bounded) until an agent process runs in one of this gateway's workspaces.
    pub async fn wait_agent_process(&self) {
        wait_process_in(self.jobs_dir.path()).await;
    }

    /// Waits (bounded) until `/health` satisfies `check`; answers it.
    pub async fn wait_health(&self, check: impl Fn(&Value) -> bool) -> Value {
        eventually("/health matches", secs(30), || async {
            let health = self.health().await;
            if check(&health) {
                Ok(health)
            } else {
                Err(health)
            }
        })
        .await
    }

    /// Waits (bounded) until no run is active or queued (`/health` says `active: 0, queued: 0`).
    pub async fn wait_idle(&self) -> Value {
        self.wait_health(|h| h["active"] == 0 && h["queued"] == 0)
            .await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `POST base+path` with a JSON body and the harness token, on any client (for gateways this
/// harness did not start, such as the binary run as a process).
pub async fn post_json(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    http.post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// `GET base+path` with the harness token, on any client.
pub async fn get_with_token(http: &reqwest::Client, base: &str, path: &str) -> reqwest::Response {
    http.get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request sent")
}

/// A gateway in front of the stand-in CLI `script`, with extra `--flag value` settings.
pub async fn fake_gateway(script: &str, args: &[(&str, u64)]) -> Gateway {
    let mut builder = Gateway::builder().claude(fake_claude(script));
    for (flag, value) in args {
        builder = builder.arg(flag, value);
    }
    builder.start().await
}

/// Entries of a `JOBS_DIR` other than the job store's files (which live there by default) and the
/// warm pool: the run directories in it.
pub fn workspaces_in(jobs_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(jobs_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !name.starts_with("claude-gateway.db") && name != ".pool"
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
