//! Containment, tried as a hostile agent would: the real CLI's Bash tool starts processes that
//! leave its process group (`setsid`, `nohup … &`, a double-forked daemon, a loop writing into the
//! workspace), and every way a run can end must stop all of them before the run stops counting
//! as active, and remove its workspace. Then what a run may reach: the gateway's secrets, other
//! runs, later runs, the gateway itself.
//!
//! Runs as root, as CI does: each run then has a uid of its own. The process tests run again with
//! `ISOLATION=process`, the fallback for a gateway that cannot switch uids.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{
    cancel_as, eventually, is_dead, secs, submit, until_none, wait_job, Gateway, GatewayBuilder,
    TOKEN,
};
use reqwest::StatusCode;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_claude-gateway");

/// A tag no other test uses, put into every command line of a run's processes so they can be
/// found whoever they run as and wherever they moved.
fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}{:06}", std::process::id() % 1000, nanos % 1_000_000)
}

/// A Bash command that leaves every kind of escaping process behind, tagged, then blocks (so the
/// run is in flight until something ends it).
fn escapes(tag: &str) -> String {
    format!(
        "setsid sleep {tag}1 </dev/null >/dev/null 2>&1 & \
         nohup sleep {tag}2 </dev/null >/dev/null 2>&1 & \
         sh -c '(setsid sleep {tag}3 </dev/null >/dev/null 2>&1 &) &' ; \
         sh -c 'while :; do echo {tag} >> spin-{tag}.txt; sleep 0.05; done' </dev/null >/dev/null 2>&1 & \
         sleep {tag}4"
    )
}

/// The prompt of a run that starts [`escapes`] and blocks.
fn escaping_prompt(tag: &str) -> String {
    format!("[[mock:bash {}]]", escapes(tag))
}

/// Live processes (zombies aside) whose command line holds `tag`.
fn tagged(tag: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() || is_dead(&pid) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(tag) && !cmdline.contains("mock:bash") {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Waits until all four escapes of the run are running.
async fn wait_escaped(tag: &str) {
    eventually("the agent's Bash left its processes", secs(60), || async {
        let found = tagged(tag);
        let kinds = (1..=4)
            .filter(|n| found.iter().any(|p| p.contains(&format!("sleep {tag}{n}"))))
            .count();
        if kinds == 4 && found.iter().any(|p| p.contains("while :")) {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;
}

/// Waits at most 2 s until no process of the run is alive.
async fn wait_none_alive(tag: &str) {
    until_none("nothing of the run is alive", secs(2), || tagged(tag)).await;
}

/// After a run ended: `active` drops only once none of its processes is left, and within 2 s
/// nothing of it is alive and its directories are gone.
async fn assert_nothing_left(gw: &Gateway, tag: &str) {
    gw.wait_health(|h| h["active"] == 0).await;
    let alive = tagged(tag);
    assert!(
        alive.is_empty(),
        "the run stopped counting as active while its processes lived: {alive:?}"
    );
    wait_none_alive(tag).await;
    gw.wait_workspaces_gone_within(secs(2)).await;
}

/// How a run is made to end.
#[derive(Debug, Clone, Copy)]
enum End {
    Deadline,
    Cancel,
    ChatDisconnect,
    StreamDisconnect,
    Watchdog,
    Shutdown,
}

/// Starts a run that leaves escaping processes, ends it as `end` says, and checks that nothing of
/// it is left, under `isolation`.
async fn ending_leaves_nothing(isolation: &str, end: End) {
    let mut builder = Gateway::builder().arg("isolation", isolation);
    builder = match end {
        End::Watchdog => builder.arg("agent-inactivity-timeout-seconds", 5),
        End::Shutdown => builder.arg("shutdown-grace-seconds", 1),
        _ => builder,
    };
    let mut gw = builder.start().await;
    let tag = tag();
    let prompt = escaping_prompt(&tag);
    match end {
        End::Deadline | End::Cancel | End::Watchdog | End::Shutdown => {
            let timeout = if matches!(end, End::Deadline) {
                20
            } else {
                600
            };
            let job_id = submit(&gw, &prompt, timeout).await;
            wait_escaped(&tag).await;
            match end {
                End::Deadline => {
                    let record =
                        wait_job(&gw, &job_id, secs(60), |r| r["status"] != "running").await;
                    assert_eq!(record["status"], "timeout", "{record}");
                }
                End::Cancel => {
                    let (status, record) = cancel_as(&gw, TOKEN, &job_id).await;
                    assert_eq!(status, StatusCode::OK, "{record}");
                }
                End::Watchdog => {
                    let record =
                        wait_job(&gw, &job_id, secs(60), |r| r["status"] != "running").await;
                    assert_eq!(record["status"], "error", "{record}");
                    assert!(
                        record["error"].as_str().unwrap_or("").contains("hung"),
                        "{record}"
                    );
                }
                _ => {
                    gw.shutdown().await;
                    let record = gw
                        .state
                        .jobs
                        .get("default", &job_id)
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(record.status.as_str(), "error", "{record:?}");
                }
            }
        }
        End::ChatDisconnect => {
            let request = gw.chat_request(&prompt).send();
            let client = tokio::spawn(request);
            wait_escaped(&tag).await;
            client.abort();
        }
        End::StreamDisconnect => {
            let mut body = Gateway::chat_body(&prompt);
            body["stream"] = Value::Bool(true);
            let mut response = gw.post(common::CHAT, &body).await;
            assert_eq!(response.status(), StatusCode::OK);
            let first = response.chunk().await.unwrap();
            assert!(first.is_some(), "the stream starts");
            wait_escaped(&tag).await;
            drop(response);
        }
    }
    if matches!(end, End::Shutdown) {
        // The server is gone; what is left is judged from outside.
        wait_none_alive(&tag).await;
        gw.wait_workspaces_gone_within(secs(2)).await;
        return;
    }
    assert_nothing_left(&gw, &tag).await;
}

/// One test per way a run ends, under the isolation `$isolation`.
macro_rules! ending_tests {
    ($isolation:literal) => {
        ending_tests!(@each $isolation;
            a_deadline_leaves_no_process_and_no_workspace: Deadline,
            a_cancel_leaves_no_process_and_no_workspace: Cancel,
            a_chat_client_gone_leaves_no_process_and_no_workspace: ChatDisconnect,
            a_stream_client_gone_leaves_no_process_and_no_workspace: StreamDisconnect,
            a_hung_agent_leaves_no_process_and_no_workspace: Watchdog,
            shutdown_past_its_grace_leaves_no_process_and_no_workspace: Shutdown,
        );
    };
    (@each $isolation:literal; $($name:ident: $end:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            super::ending_leaves_nothing($isolation, super::End::$end).await;
        }
    )*};
}

/// As root (CI): a uid per run.
mod uid {
    ending_tests!("auto");
}

/// The fallback, forced: shared uid, processes found by their marker.
mod process_mode {
    ending_tests!("process");
}

/// The binary, on `jobs_dir`, against `mock`, with `isolation`.
fn binary_env(
    mock: &mock_anthropic::MockAnthropic,
    jobs_dir: &Path,
    home: &Path,
    isolation: &str,
) -> Vec<(String, String)> {
    let mut envs = common::agent_env(&mock.url(), home);
    envs.extend([
        ("API_BEARER_TOKEN".to_owned(), TOKEN.to_owned()),
        ("JOBS_DIR".to_owned(), jobs_dir.display().to_string()),
        ("WORKSPACE_DIR".to_owned(), "/nonexistent/base".to_owned()),
        (
            "CLAUDE_BIN".to_owned(),
            common::claude_bin().display().to_string(),
        ),
        ("MAX_CONCURRENCY".to_owned(), "3".to_owned()),
        ("ISOLATION".to_owned(), isolation.to_owned()),
    ]);
    envs
}

/// kill -9 of the gateway with three runs in flight, then a start on the same `JOBS_DIR`: by the
/// time the new process answers `/health`, nothing of those runs is alive.
async fn a_crash_leaves_nothing_after_the_next_start(isolation: &str) {
    let mock = mock_anthropic::MockAnthropic::start().await;
    let jobs = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let envs = binary_env(&mock, jobs.path(), home.path(), isolation);
    let (mut first, url) = common::spawn_binary(BIN, envs.clone()).await;
    let http = reqwest::Client::new();
    let tags: Vec<String> = (0..3).map(|n| format!("{}{n}", tag())).collect();
    for tag in &tags {
        let response = http
            .post(format!("{url}/execute"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"prompt": escaping_prompt(tag), "agent": "general-purpose"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    for tag in &tags {
        wait_escaped(tag).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // The crash left its runs going, with no one to stop them.
    assert!(tags.iter().all(|tag| !tagged(tag).is_empty()));

    let (mut second, _url) = common::spawn_binary(BIN, envs).await;
    let alive: Vec<String> = tags.iter().flat_map(|tag| tagged(tag)).collect();
    assert!(
        alive.is_empty(),
        "the new gateway answers while its predecessor's runs live: {alive:?}"
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_runs_in_flight_leaves_nothing_once_the_next_gateway_answers() {
    a_crash_leaves_nothing_after_the_next_start("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_mode_a_crash_leaves_nothing_once_the_next_gateway_answers() {
    a_crash_leaves_nothing_after_the_next_start("process").await;
}

/// Runs `command` with the agent's Bash and answers what the tool printed.
async fn bash(gw: &Gateway, command: &str) -> String {
    let response = gw.chat(&format!("[[mock:bash {command}]]")).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A directory any user may enter, holding `name` with `content` at mode 0600: a secret laid out
/// the way an operator should, so that only the permission bits stand between it and a run.
fn secret_file(name: &str, content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the isolation tests need root (CI runs as root): a uid per run needs it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cannot_read_the_gateways_environment_token_file_or_git_crypt_key() {
    require_root();
    let (_tokens_dir, tokens) = secret_file("tokens", "ci:the-ci-token-value\n");
    let (fx, key) = common::git_crypt_fixture();
    std::fs::set_permissions(fx.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let gw = Gateway::builder()
        .base(&fx.base)
        .arg("openai-compat-agent", "general-purpose")
        .arg("api-bearer-tokens-file", tokens.display())
        .git_crypt_key(&key)
        .arg("isolation", "uid")
        .start()
        .await;
    let gateway = std::process::id();
    let said = bash(
        &gw,
        &format!(
            "id -u; head -c 300 /proc/{gateway}/environ; cat {tokens}; cat {key} | wc -c; \
             ls .git/git-crypt/keys; cat secret.txt",
            tokens = tokens.display(),
            key = key.display()
        ),
    )
    .await;
    let uid: u32 = said
        .split_whitespace()
        .find_map(|w| w.trim_start_matches("said:").parse().ok())
        .unwrap_or(0);
    assert!(uid >= 1000, "the run is not its own user: {said}");
    assert!(
        !said.contains("PATH="),
        "the gateway's environment leaked: {said}"
    );
    assert!(
        !said.contains("the-ci-token-value"),
        "the token file leaked: {said}"
    );
    assert!(said.matches("Permission denied").count() >= 3, "{said}");
    assert!(
        said.contains("No such file"),
        "the workspace kept the git-crypt key: {said}"
    );
    // The run still works on the decrypted files.
    assert!(said.contains("the plaintext secret"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cannot_reach_another_running_run_or_signal_it_or_the_gateway() {
    require_root();
    let gw = Gateway::builder()
        .arg("isolation", "uid")
        .arg("max-concurrency", 2)
        .start()
        .await;
    let tag = tag();
    let other = submit(&gw, &escaping_prompt(&tag), 600).await;
    wait_escaped(&tag).await;
    let workspace = gw
        .workspaces()
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("ws-"))
        .unwrap();
    let home = workspace.with_file_name(
        workspace
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("ws-", "home-"),
    );
    let victim = tagged(&tag)
        .iter()
        .find(|p| p.contains(&format!("sleep {tag}4")))
        .and_then(|p| p.split(':').next().map(str::to_owned))
        .unwrap();
    let said = bash(
        &gw,
        &format!(
            "ls {jobs}; ls {ws}; touch {ws}/planted; ls {home}; kill -0 {gateway}; kill -9 {victim}",
            jobs = gw.jobs_dir.path().display(),
            ws = workspace.display(),
            home = home.display(),
            gateway = std::process::id(),
        ),
    )
    .await;
    assert_eq!(said.matches("Permission denied").count(), 4, "{said}");
    assert_eq!(said.matches("Operation not permitted").count(), 2, "{said}");
    assert!(!workspace.join("planted").exists());
    assert!(
        !tagged(&tag).is_empty(),
        "the other run's process was killed"
    );
    let (status, _) = cancel_as(&gw, TOKEN, &other).await;
    assert_eq!(status, StatusCode::OK);
    assert_nothing_left(&gw, &tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_run_leaves_in_its_home_reaches_a_later_run() {
    let gw = Gateway::start().await;
    let first = bash(
        &gw,
        "mkdir -p ~/.claude && echo '{\"hooks\":{\"PreToolUse\":[]}}' > ~/.claude/settings.json \
         && echo left > ~/planted && echo left > $TMPDIR/planted && echo home=$HOME",
    )
    .await;
    assert!(first.contains("home="), "{first}");
    let later = bash(
        &gw,
        "cat ~/planted $TMPDIR/planted ~/.claude/settings.json; echo home=$HOME",
    )
    .await;
    assert_eq!(later.matches("No such file").count(), 3, "{later}");
    let home = |said: &str| {
        said.split("home=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
    };
    assert_ne!(home(&first), home(&later), "two runs shared a HOME");
    gw.wait_workspaces_gone().await;
}

#[test]
fn a_world_readable_token_file_under_uid_isolation_refuses_to_start() {
    require_root();
    let (_dir, tokens) = secret_file("tokens", "ci:the-ci-token-value\n");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let jobs = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("API_BEARER_TOKENS_FILE", &tokens)
        .env("JOBS_DIR", jobs.path())
        .env("ISOLATION", "uid")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // Log lines may come first; the reason is the one last line.
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("claude-gateway: "), "{stderr}");
    assert!(last.contains("can be read by any user"), "{stderr}");
    assert!(!stderr.contains("the-ci-token-value"), "{stderr}");
}

#[test]
fn demanding_uid_isolation_without_the_privilege_exits_2_with_one_line() {
    require_root();
    let jobs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(jobs.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // The binary as an unprivileged user (nobody), which cannot switch uids.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("API_BEARER_TOKEN", "test-token-value")
        .env("JOBS_DIR", jobs.path())
        .env("ISOLATION", "uid")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .expect("setpriv runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.to_lowercase().contains("uid"), "{stderr}");
}

/// The fallback still gives each run its own HOME and stops its processes; `/health` and
/// `/metrics` say which isolation is in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_in_force_is_reported() {
    require_root();
    for (setting, mode) in [("process", "process"), ("auto", "uid")] {
        let gw = GatewayBuilder::default()
            .arg("isolation", setting)
            .start()
            .await;
        assert_eq!(gw.health().await["isolation"], mode);
        // As root on a cgroup v2 host (CI) runs get cgroups unless turned off.
        assert_eq!(gw.health().await["run_cgroups"], true);
        let metrics = gw.get_open("/metrics").await.text().await.unwrap();
        assert!(
            metrics.contains(&format!("claude_gateway_isolation{{mode=\"{mode}\"}} 1")),
            "{metrics}"
        );
    }
    let off = GatewayBuilder::default()
        .arg("run-cgroup", "off")
        .start()
        .await;
    assert_eq!(off.health().await["run_cgroups"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_run_leaves_in_the_hosts_shared_directories_is_gone_when_it_ends() {
    let gw = Gateway::start().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let planted = [
        format!("/tmp/planted-{tag}"),
        format!("/var/tmp/planted-{tag}"),
        format!("/dev/shm/planted-{tag}"),
    ];
    let said = bash(
        &gw,
        &format!(
            "echo left > {0} && mkdir -p {1}/deep && echo left > {1}/deep/file && echo left > {2} \
             && ipcmk -M 4096 && ipcmk -Q && ipcmk -S 1 && echo uid=$(id -u)",
            planted[0], planted[1], planted[2]
        ),
    )
    .await;
    assert!(said.contains("uid="), "{said}");
    assert!(!said.contains("uid=0"), "the run ran as root: {said}");
    let uid: u32 = said
        .split("uid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("no uid in {said}"));
    // Its uid goes to a later run: nothing of it may wait there.
    eventually("the run's leftovers are removed", secs(10), || async {
        let mut left: Vec<String> = planted
            .iter()
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .cloned()
            .collect();
        // System V shared memory, message queues and semaphores the run's uid made.
        for listing in ["shm", "msg", "sem"] {
            let text = std::fs::read_to_string(format!("/proc/sysvipc/{listing}")).unwrap();
            let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
            let cuid = header.iter().position(|c| *c == "cuid").unwrap();
            left.extend(
                text.lines()
                    .skip(1)
                    .filter(|l| l.split_whitespace().nth(cuid) == Some(&*uid.to_string()))
                    .map(|l| format!("{listing}: {l}")),
            );
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}
