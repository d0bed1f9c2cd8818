//! Helpers of the durable-store tests: the built binary as an operator runs it (started, killed
//! with SIGKILL or stopped with SIGTERM, started again on the same `JOBS_DIR`), jobs through its
//! HTTP API, and Server-Sent Events read one at a time, across a restart.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use mock_anthropic::MockAnthropic;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

// Each test crate uses some of these.
#[allow(unused_imports)]
pub use crate::common::{
    agent_env, claude_bin, eventually, fake_claude, json as read_json, processes_under, TOKEN,
};
#[allow(unused_imports)]
pub use crate::common::{is_terminal, parse_event, script, Sse, AGENT};

/// The built gateway.
pub const BIN: &str = env!("CARGO_BIN_EXE_claude-gateway");

/// The settings of a gateway in front of `claude` talking to the mock at `mock_url`, with its
/// jobs (and by default its store) in `jobs_dir` and the agent's HOME in `home`.
pub fn settings(
    claude: &Path,
    mock_url: &str,
    jobs_dir: &Path,
    home: &Path,
) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("API_BEARER_TOKEN", TOKEN.to_owned()),
        ("JOBS_DIR", jobs_dir.display().to_string()),
        (
            "WORKSPACE_DIR",
            "/nonexistent/claude-gateway-base".to_owned(),
        ),
        ("GIT_CRYPT_KEY", "/nonexistent/git-crypt-key".to_owned()),
        ("CLAUDE_BIN", claude.display().to_string()),
        ("RUST_LOG", "claude_gateway=info".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    settings.extend(agent_env(mock_url, home));
    settings
}

/// What a built gateway runs against: the mock Anthropic API, and the gateway's jobs and home
/// directories; they live as long as this, across the gateway's restarts.
pub struct Backing {
    /// The mock API behind the real CLI.
    pub mock: MockAnthropic,
    /// `JOBS_DIR` (and the default store's place).
    pub jobs_dir: TempDir,
    /// The agent's HOME.
    pub home: TempDir,
}

impl Backing {
    /// A fresh mock API and fresh directories.
    pub async fn start() -> Backing {
        Backing {
            mock: MockAnthropic::start().await,
            jobs_dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// The settings of a gateway in front of the real CLI over this backing, with `extra` set.
    pub fn settings(&self, extra: &[(&str, &dyn std::fmt::Display)]) -> Vec<(String, String)> {
        let mut settings = settings(
            &claude_bin(),
            &self.mock.url(),
            self.jobs_dir.path(),
            self.home.path(),
        );
        for (name, value) in extra {
            set(&mut settings, name, value);
        }
        settings
    }
}

/// Replaces or adds `name=value` in `settings`.
pub fn set(settings: &mut Vec<(String, String)>, name: &str, value: impl ToString) {
    settings.retain(|(n, _)| n != name);
    settings.push((name.to_owned(), value.to_string()));
}

/// One run of the built binary.
pub struct Binary {
    /// The process; killed when dropped.
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl Binary {
    /// Starts the binary with exactly `settings` (plus `PATH` and a free `LISTEN_ADDR`) and waits
    /// (bounded) until `/health` answers.
    pub async fn start(settings: &[(String, String)]) -> Binary {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(settings.iter().map(|(n, v)| (n, v)))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let binary = Binary {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let health = format!("{}/health", binary.url);
        eventually(
            "the gateway answers /health",
            Duration::from_secs(30),
            || {
                let request = binary.http.get(&health).send();
                async move { request.await.ok().map(|_| ()) }
            },
        )
        .await;
        binary
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().expect("still running") as i32)
    }

    /// SIGKILL, as the OOM killer or `kill -9` would; returns once the process is gone.
    pub async fn kill9(mut self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("gone after SIGKILL")
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    /// SIGTERM; answers the exit code once it has exited (bounded by `limit`).
    pub async fn sigterm(mut self, limit: Duration) -> Option<i32> {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap()
            .code()
    }

    /// `POST /execute` with `body` (the agent filled in); answers the status and body.
    pub async fn execute(&self, mut body: Value) -> (StatusCode, Value) {
        body["agent"] = json!(AGENT);
        let response = self
            .http
            .post(format!("{}/execute", self.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        (status, read_json(response).await)
    }

    /// `POST /execute` with `body`, which must be refused with `status` and a `detail` that
    /// says `says`.
    pub async fn assert_refused(&self, body: Value, status: StatusCode, says: &str) {
        let (got, answer) = self.execute(body.clone()).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert!(
            answer["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{body} → {answer}"
        );
    }

    /// Submits `prompt` (with `extra` fields) and answers the job id, asserting a 202.
    pub async fn submit(&self, prompt: &str, extra: Value) -> String {
        let mut body = extra;
        if body.is_null() {
            body = json!({});
        }
        body["prompt"] = json!(prompt);
        let (status, answer) = self.execute(body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["status"], "queued");
        answer["job_id"].as_str().expect("a job id").to_owned()
    }

    /// `METHOD path` with the harness token: the status and body.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        (status, read_json(response).await)
    }

    /// `GET /jobs/{id}`: the status and body.
    pub async fn get(&self, job_id: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, &format!("/jobs/{job_id}"))
            .await
    }

    /// `GET /jobs/{id}`, asserting it is found.
    pub async fn record(&self, job_id: &str) -> Value {
        let (status, body) = self.get(job_id).await;
        assert_eq!(status, StatusCode::OK, "{job_id}: {body}");
        body
    }

    /// Polls the job until `done` holds for its record (bounded by `limit`).
    pub async fn wait_job(
        &self,
        job_id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(&format!("job {job_id} gets there"), limit, || async {
            let record = self.record(job_id).await;
            done(&record).then_some(record)
        })
        .await
    }

    /// Polls the job until it has ended.
    pub async fn wait_end(&self, job_id: &str) -> Value {
        self.wait_job(job_id, Duration::from_secs(120), is_terminal)
            .await
    }

    /// Waits (bounded) until the job is forgotten: its record answers 404.
    pub async fn wait_forgotten(&self, job_id: &str) {
        eventually(
            format!("job {job_id} is forgotten"),
            Duration::from_secs(30),
            || async { self.get(job_id).await.0 == StatusCode::NOT_FOUND },
        )
        .await;
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> Value {
        let response = self
            .http
            .get(format!("{}/health", self.url))
            .send()
            .await
            .expect("request sent");
        read_json(response).await
    }

    /// Opens `GET /jobs/{id}/events`, resuming after `last_event_id` when given.
    pub async fn events(&self, job_id: &str, last_event_id: Option<u64>) -> EventStream {
        let mut request = self
            .http
            .get(format!("{}/jobs/{job_id}/events", self.url))
            .bearer_auth(TOKEN);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), StatusCode::OK);
        EventStream {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }
}

type Body =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An open event stream, read one event at a time.
pub struct EventStream {
    body: Body,
    buffer: String,
}

impl EventStream {
    /// The next event; `None` when the stream ended (closed, or broken by the server's death).
    /// Keep-alive comments are skipped. Bounded: panics after 120 s without an event.
    pub async fn next(&mut self) -> Option<Sse> {
        let read = async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    if let Some(event) = parse_event(&block) {
                        return Some(event);
                    }
                }
                match self.body.next().await {
                    Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                    Some(Err(_)) | None => return None,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("an event or the end of the stream within 120 s")
    }

    /// Every event until the stream ends.
    pub async fn rest(&mut self) -> Vec<Sse> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// Entries of `dir` other than the job store's files: workspaces left behind.
pub fn leftovers(dir: &Path) -> Vec<std::path::PathBuf> {
    crate::common::workspaces_in(dir)
}

/// An event's id as a number.
pub fn id(event: &Sse) -> Option<u64> {
    event.id.as_deref().and_then(|id| id.parse().ok())
}
