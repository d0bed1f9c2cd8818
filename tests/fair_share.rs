//! Fair share between keys, over HTTP, with the real CLI against the mock API: the order jobs
//! start in (read from their records' `started_at`), per-key queue limits, and the policy file
//! reloaded on SIGHUP by the real binary.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    eventually, get_job_as, secs, send, status_and_json, submit_as, Gateway, AGENT, CHAT,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const ALICE: &str = "alice-secret";
const BOB: &str = "bob-secret";

/// Writes the tokens file (alice, bob) and the policy file into `dir`.
fn key_files(dir: &Path, policy: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("alice:{ALICE}\nbob:{BOB}\n")).unwrap();
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, policy).unwrap();
    (tokens, policy_file)
}

/// A gateway running two jobs at once, with the keys alice and bob under `policy`.
async fn gateway(dir: &Path, concurrency: usize, policy: &str) -> Gateway {
    let (tokens, policy_file) = key_files(dir, policy);
    Gateway::builder()
        .arg("max-concurrency", concurrency)
        .arg("max-queue-depth", 100)
        .arg("api-bearer-tokens-file", tokens.display())
        .arg("api-key-policy-file", policy_file.display())
        .start()
        .await
}

/// Submits one job of `token` whose agent call takes `delay_ms` at the mock.
async fn submit_slow(gw: &Gateway, token: &str, name: &str, delay_ms: u64) -> String {
    submit_as(gw, token, &format!("[[mock:delay {delay_ms}]] {name}"), 120).await
}

/// Submits `n` slow jobs as `token`, named `{name}0`, `{name}1`, …, and adds them to `jobs`.
async fn submit_named(
    gw: &Gateway,
    jobs: &mut Vec<(String, String, &'static str)>,
    (token, name): (&'static str, &str),
    n: usize,
    delay_ms: u64,
) {
    for i in 0..n {
        let name = format!("{name}{i}");
        let id = submit_slow(gw, token, &name, delay_ms).await;
        jobs.push((name, id, token));
    }
}

/// The jobs among `ids` (named by `names`) that have started, in the order they started.
async fn start_order(gw: &Gateway, jobs: &[(String, String, &str)]) -> Vec<String> {
    let mut started = Vec::new();
    for (name, id, token) in jobs {
        let (status, record) = get_job_as(gw, token, id).await;
        assert_eq!(status, StatusCode::OK, "{record}");
        if let Some(at) = record["started_at"].as_str() {
            started.push((at.to_owned(), name.clone()));
        }
    }
    started.sort();
    started.into_iter().map(|(_, name)| name).collect()
}

/// Waits until every job named in `names` has started; answers the start order then.
async fn wait_started(
    gw: &Gateway,
    jobs: &[(String, String, &str)],
    names: &[&str],
) -> Vec<String> {
    eventually(format!("{names:?} start"), secs(60), || async {
        let order = start_order(gw, jobs).await;
        if names.iter().all(|n| order.iter().any(|o| o == n)) {
            Ok(order)
        } else {
            Err(format!("{order:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn a_newcomer_starts_at_the_next_two_slot_releases_behind_a_long_queue() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), 2, "").await;
    let mut jobs = Vec::new();
    submit_named(&gw, &mut jobs, (ALICE, "alice"), 20, 1500).await;
    submit_named(&gw, &mut jobs, (BOB, "bob"), 2, 10).await;
    let order = wait_started(&gw, &jobs, &["bob0", "bob1"]).await;
    // Alice's first two were running when bob came; bob's two take the next two slots.
    assert_eq!(
        order[..2].iter().filter(|n| n.starts_with("alice")).count(),
        2,
        "{order:?}"
    );
    let mut next_two = order[2..4].to_vec();
    next_two.sort();
    assert_eq!(next_two, ["bob0", "bob1"], "{order:?}");
}

#[tokio::test]
async fn starts_follow_the_weights_three_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "[keys.alice]\nweight = 3\n[keys.bob]\nweight = 1\n";
    let gw = gateway(dir.path(), 2, policy).await;
    let mut jobs = Vec::new();
    submit_named(&gw, &mut jobs, (ALICE, "alice"), 9, 600).await;
    submit_named(&gw, &mut jobs, (BOB, "bob"), 3, 600).await;
    let all: Vec<&str> = jobs.iter().map(|(n, ..)| n.as_str()).collect();
    let order = wait_started(&gw, &jobs, &all).await;
    // FIFO within each key; rounds of four starts: three of alice's and one of bob's, within one
    // job; over the whole queue the share is exactly 3:1 and the first round already has bob's.
    common::assert_three_to_one(&order);
}

#[tokio::test]
async fn a_key_at_its_max_queued_gets_429_while_another_key_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "[keys.alice]\nmax_queued = 2\n";
    let gw = gateway(dir.path(), 1, policy).await;
    // One runs (for a while), two wait: alice's queue is full.
    let first = submit_slow(&gw, ALICE, "alice0", 15_000).await;
    eventually("alice0 starts", secs(30), || async {
        get_job_as(&gw, ALICE, &first).await.1["status"] == "running"
    })
    .await;
    submit_slow(&gw, ALICE, "alice1", 10).await;
    submit_slow(&gw, ALICE, "alice2", 10).await;

    let body = json!({"prompt": "alice3", "agent": AGENT, "timeout_seconds": 60});
    let response = send(
        gw.request_as(Some(ALICE), Method::POST, "/execute")
            .json(&body),
    )
    .await;
    let retry_after = response.headers().get("retry-after").cloned();
    let (status, answer) = status_and_json(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(retry_after.is_some(), "Retry-After is set");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("alice") && detail.contains("max_queued"),
        "{detail}"
    );

    // Chat takes the same queue under the same policy: OpenAI's rate-limit shape.
    let chat = gw
        .request_as(Some(ALICE), Method::POST, CHAT)
        .json(&Gateway::chat_body("hello"));
    let response = send(chat).await;
    assert!(response.headers().get("retry-after").is_some());
    let (status, answer) = status_and_json(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "rate_limit_exceeded", "{answer}");

    // Bob is not affected by alice's limit.
    submit_slow(&gw, BOB, "bob0", 10).await;
}

/// The real binary with the keys and `policy`, its log lines sent down a channel.
struct Binary {
    child: tokio::process::Child,
    url: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    _mock: mock_anthropic::MockAnthropic,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Binary {
    async fn start(tokens: &Path, policy: &Path) -> Self {
        let mock = mock_anthropic::MockAnthropic::start().await;
        let jobs = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut envs = common::agent_env(&mock.url(), home.path());
        envs.extend(
            [
                ("API_BEARER_TOKENS_FILE", tokens.display().to_string()),
                ("API_KEY_POLICY_FILE", policy.display().to_string()),
                ("JOBS_DIR", jobs.path().display().to_string()),
                ("WORKSPACE_DIR", "/nonexistent/base".to_owned()),
                (
                    "CLAUDE_BIN",
                    common::fake_claude("hang.sh").display().to_string(),
                ),
                ("MAX_CONCURRENCY", "1".to_owned()),
                ("SHUTDOWN_GRACE_SECONDS", "1".to_owned()),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        );
        let bin = env!("CARGO_BIN_EXE_claude-gateway");
        let (mut child, url) =
            common::spawn_binary_with(bin, envs, std::process::Stdio::piped()).await;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            url,
            lines,
            seen: Vec::new(),
            _mock: mock,
            _dirs: (jobs, home),
        }
    }

    /// Submits a job as `token`; answers the status.
    async fn submit(&self, token: &str) -> StatusCode {
        let body = json!({"prompt": "p", "agent": AGENT, "timeout_seconds": 600});
        reqwest::Client::new()
            .post(format!("{}/execute", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("answered")
            .status()
    }

    /// Replaces the policy file in one step, as a ConfigMap update does, so no reader ever sees
    /// it half written.
    fn write_policy(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Stops it as an operator would (SIGTERM), so the hanging agents are stopped too.
    async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after its grace period")
            .unwrap();
        assert!(status.success(), "{status}");
    }

    fn hangup(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    }

    /// Waits for a log line containing `needle`, keeping every line read.
    async fn wait_line(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no log line with {needle:?}; saw {:#?}", self.seen),
        }
    }
}

#[tokio::test]
async fn a_policy_change_applies_after_sighup_and_a_malformed_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, policy) = key_files(dir.path(), "[keys.alice]\nmax_queued = 1\n");
    let mut gw = Binary::start(&tokens, &policy).await;
    // One runs (the agent hangs), one waits: alice is at her limit.
    assert_eq!(gw.submit(ALICE).await, StatusCode::ACCEPTED);
    assert_eq!(gw.submit(ALICE).await, StatusCode::ACCEPTED);
    assert_eq!(gw.submit(ALICE).await, StatusCode::TOO_MANY_REQUESTS);

    Binary::write_policy(&policy, "[keys.alice]\nmax_queued = 3\n");
    gw.hangup();
    gw.wait_line("key policy reloaded").await;
    assert_eq!(gw.submit(ALICE).await, StatusCode::ACCEPTED);

    Binary::write_policy(&policy, "[keys.alice]\nmax_queued = \"many\"\n");
    gw.hangup();
    let error = gw.wait_line("not reloaded").await;
    assert!(error.contains("ERROR"), "{error}");
    // The limit in force is still 3: one more is taken, the next is not.
    assert_eq!(gw.submit(ALICE).await, StatusCode::ACCEPTED);
    assert_eq!(gw.submit(ALICE).await, StatusCode::TOO_MANY_REQUESTS);

    // A good file again; every line about the bad one came before this one.
    Binary::write_policy(&policy, "[keys.alice]\nmax_queued = 4\n");
    gw.hangup();
    gw.wait_line("key policy reloaded").await;
    let errors = gw.seen.iter().filter(|l| l.contains("ERROR")).count();
    assert_eq!(errors, 1, "{:#?}", gw.seen);
    assert_eq!(gw.submit(ALICE).await, StatusCode::ACCEPTED);
    assert_eq!(gw.submit(BOB).await, StatusCode::ACCEPTED);
    gw.stop().await;
}
