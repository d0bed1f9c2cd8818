//! The agents a test runs (the pinned CLI, stand-in scripts) and the processes they leave.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use mock_anthropic::pinned_cli as claude_bin;

use super::wait::{eventually, secs, until_none};

/// A stand-in CLI script from `tests/fixtures/fake-claude/`.
pub fn fake_claude(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fake-claude")
        .join(name)
}

/// Writes an executable bash script `name` into `dir`: `#!/bin/bash`, then `body`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Whether `/proc/PID/stat` says the process is gone or a zombie (dead, only its parent's wait
/// missing).
pub fn is_dead(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Live processes (zombies excluded) whose working directory is under `dir`, with their command
/// lines: an agent run in a workspace there and anything it started.
pub fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if !is_dead(&name) && cwd.starts_with(dir) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// Waits (bounded) until no process runs under `dir`.
pub async fn wait_no_process_in(dir: &Path) {
    until_none("no process is left running", secs(15), || {
        processes_under(dir)
    })
    .await;
}

/// Waits (bounded) until some process runs under `dir`.
pub async fn wait_process_in(dir: &Path) {
    eventually("the agent has started", secs(30), || async {
        !processes_under(dir).is_empty()
    })
    .await;
}

/// Starts the gateway binary `bin` (an integration test's `env!("CARGO_BIN_EXE_claude-gateway")`)
/// on a free port and waits until /health answers.
pub async fn spawn_binary(
    bin: &str,
    envs: Vec<(String, String)>,
) -> (tokio::process::Child, String) {
    spawn_binary_with(bin, envs, std::process::Stdio::inherit()).await
}

/// [`spawn_binary`], its stderr going to `stderr` (`piped()` to read its log).
pub async fn spawn_binary_with(
    bin: &str,
    envs: Vec<(String, String)>,
    stderr: std::process::Stdio,
) -> (tokio::process::Child, String) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let child = tokio::process::Command::new(bin)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .envs(envs)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let http = reqwest::Client::new();
    eventually("the gateway comes up", secs(10), || async {
        http.get(format!("{url}/health")).send().await.is_ok()
    })
    .await;
    (child, url)
}

/// The directory of the pinned client tools (`tests/clients`: the OpenAI SDKs, Schemathesis).
pub fn clients_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
}

/// Runs `command` (one of the pinned client tools) to its end within `limit`, killing it past
/// that, and answers its stdout; panics with both outputs unless it exits 0.
pub async fn run_tool(
    what: &str,
    limit: std::time::Duration,
    command: &mut tokio::process::Command,
) -> String {
    let output = tokio::time::timeout(limit, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what} starts ({e}; run ./scripts/test to install it)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}
