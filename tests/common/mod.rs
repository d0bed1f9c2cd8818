//! Shared test harness: a gateway served in-process on 127.0.0.1:0, in front of the real `claude`
//! CLI, which talks to a mock Anthropic API this harness also serves.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use claude_gateway::config::{Config, Settings};
use mock_anthropic::MockAnthropic;
use serde_json::Value;
use tokio::sync::oneshot;

/// The token every harness gateway accepts.
pub const TOKEN: &str = "test-token";

/// The pinned CLI the test command installs.
pub fn claude_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/node_modules/.bin/claude");
    assert!(
        bin.exists(),
        "the claude CLI is not installed at {}: run ./scripts/test (it installs it)",
        bin.display()
    );
    bin
}

/// A stand-in CLI script from `tests/fixtures/fake-claude/`.
pub fn fake_claude(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fake-claude")
        .join(name)
}

/// A running gateway and what it runs against.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The mock Anthropic API behind the CLI.
    pub mock: MockAnthropic,
    /// Where workspaces are made.
    pub jobs_dir: tempfile::TempDir,
    /// The agent's HOME (to check nothing is left in it).
    pub home: tempfile::TempDir,
    /// HTTP client.
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Builds a [`Gateway`] with extra settings.
#[derive(Default)]
pub struct GatewayBuilder {
    args: Vec<String>,
    claude_bin: Option<PathBuf>,
    base_dir: Option<PathBuf>,
}

impl GatewayBuilder {
    /// Adds `--flag value`.
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(format!("--{flag}"));
        self.args.push(value.to_string());
        self
    }

    /// Runs this CLI instead of the real one.
    pub fn claude(mut self, bin: PathBuf) -> Self {
        self.claude_bin = Some(bin);
        self
    }

    /// Clones runs from this base repository.
    pub fn base(mut self, dir: &Path) -> Self {
        self.base_dir = Some(dir.to_path_buf());
        self
    }

    /// Starts the mock API and the gateway.
    pub async fn start(self) -> Gateway {
        let mock = MockAnthropic::start().await;
        let jobs_dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let claude = self.claude_bin.unwrap_or_else(claude_bin);
        let mut argv: Vec<String> = vec![
            "claude-gateway".into(),
            "--api-bearer-token".into(),
            TOKEN.into(),
            "--jobs-dir".into(),
            jobs_dir.path().display().to_string(),
            "--claude-bin".into(),
            claude.display().to_string(),
            "--workspace-dir".into(),
            self.base_dir
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "/nonexistent/claude-gateway-base".into()),
            "--git-crypt-key".into(),
            "/nonexistent/git-crypt-key".into(),
        ];
        argv.extend(self.args);
        let mut config: Config = Settings::try_parse_from(argv)
            .expect("valid test flags")
            .validate()
            .expect("valid test config");
        config.agent_env_overrides = agent_env(&mock.url(), home.path());
        start_with(config, mock, jobs_dir, home).await
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

async fn start_with(
    config: Config,
    mock: MockAnthropic,
    jobs_dir: tempfile::TempDir,
    home: tempfile::TempDir,
) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        claude_gateway::run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("gateway runs");
    });
    let gateway = Gateway {
        url,
        mock,
        jobs_dir,
        home,
        http: reqwest::Client::new(),
        shutdown: Some(tx),
        server: Some(server),
    };
    // `run` builds the gateway (start-up sweep included) before it serves: wait until it does.
    let health = format!("{}/health", gateway.url);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gateway.http.get(&health).send().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never came up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway
}

impl Gateway {
    /// A gateway with default settings in front of the real CLI.
    pub async fn start() -> Gateway {
        GatewayBuilder::default().start().await
    }

    /// A builder for other settings.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// `POST path` with a JSON body and the harness token.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `GET path` with the harness token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request sent")
    }

    /// A one-message chat completion request body.
    pub fn chat_body(content: &str) -> Value {
        serde_json::json!({"model": "haiku", "messages": [{"role": "user", "content": content}]})
    }

    /// Asks for shutdown and waits until the server has drained.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), server).await;
        }
    }

    /// Workspaces currently under `JOBS_DIR`.
    pub fn workspaces(&self) -> Vec<PathBuf> {
        workspaces_in(self.jobs_dir.path())
    }

    /// Waits (bounded) until `JOBS_DIR` is empty: removal happens off the response path.
    pub async fn wait_workspaces_gone(&self) {
        wait_until(Duration::from_secs(20), || self.workspaces().is_empty())
            .await
            .unwrap_or_else(|_| panic!("workspaces left: {:?}", self.workspaces()));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Entries of a `JOBS_DIR` other than the job store's files (which live there by default): the
/// workspaces in it.
pub fn workspaces_in(jobs_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(jobs_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    !e.file_name()
                        .to_string_lossy()
                        .starts_with("claude-gateway.db")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` every 25 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A git repository in a temp dir with a bare "remote" and a base clone of it.
pub struct Repos {
    /// Holds everything.
    pub root: tempfile::TempDir,
    /// The bare remote.
    pub remote: PathBuf,
    /// The warm base clone.
    pub base: PathBuf,
}

/// Runs git with a fixed identity; panics with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Repos {
    /// A remote with one commit holding `README.md`, and a base cloned from it.
    pub fn new() -> Repos {
        let root = tempfile::tempdir().unwrap();
        let seed = root.path().join("seed");
        std::fs::create_dir(&seed).unwrap();
        git(&seed, &["init", "-q"]);
        std::fs::write(seed.join("README.md"), "base repository\n").unwrap();
        git(&seed, &["add", "."]);
        git(&seed, &["commit", "-qm", "first"]);
        let remote = root.path().join("remote.git");
        git(
            root.path(),
            &[
                "clone",
                "-q",
                "--bare",
                seed.to_str().unwrap(),
                remote.to_str().unwrap(),
            ],
        );
        let base = root.path().join("base");
        git(
            root.path(),
            &[
                "clone",
                "-q",
                remote.to_str().unwrap(),
                base.to_str().unwrap(),
            ],
        );
        Repos { root, remote, base }
    }
}

/// Reads a JSON body.
pub async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body read");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Live processes (zombies excluded) whose working directory is under `dir`, with their command
/// lines: an agent run in a workspace there and anything it started.
pub fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        // A zombie is already dead; only its parent's wait is missing.
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !zombie && cwd.starts_with(dir) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

impl Gateway {
    /// Waits (bounded) until no process runs in any of this gateway's workspaces.
    pub async fn wait_no_agent_process(&self) {
        let dir = self.jobs_dir.path().to_path_buf();
        if wait_until(Duration::from_secs(15), || processes_under(&dir).is_empty())
            .await
            .is_err()
        {
            panic!("agent processes left running: {:?}", processes_under(&dir));
        }
    }

    /// Waits (bounded) until `/health` satisfies `check`.
    pub async fn wait_health(&self, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let health = json(
                self.http
                    .get(format!("{}/health", self.url))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            if check(&health) {
                return health;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "health never matched: {health}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
