//! Helpers for the hardening tests: the built binary as its own process (so its memory, sockets
//! and logs can be measured apart from the test's), raw connections, and bounded polling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{eventually, fake_claude, get_with_token, post_json, secs, TOKEN};

/// The gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_claude-gateway");

/// The gateway binary running as a child process.
pub struct Binary {
    /// The process.
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its stderr (the log), as a file.
    pub log: PathBuf,
    /// Holds the jobs directory and the log.
    pub dir: tempfile::TempDir,
    /// HTTP client (no pooled connections left behind).
    pub http: reqwest::Client,
}

impl Binary {
    /// Starts the binary with a fake CLI `script` and extra settings, and waits until it serves.
    pub async fn start(script: &str, envs: &[(&str, String)]) -> Binary {
        Self::start_with(Some(fake_claude(script)), envs, None).await
    }

    /// Starts the binary with `claude` (or the default), `envs`, optionally under `prlimit`.
    pub async fn start_with(
        claude: Option<PathBuf>,
        envs: &[(&str, String)],
        nofile: Option<u32>,
    ) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("jobs");
        let log = dir.path().join("gateway.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = match nofile {
            Some(limit) => {
                let mut c = tokio::process::Command::new("prlimit");
                c.arg(format!("--nofile={limit}:{limit}")).arg(BIN);
                c
            }
            None => tokio::process::Command::new(BIN),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("API_BEARER_TOKEN", TOKEN)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("JOBS_DIR", &jobs)
            .env("WORKSPACE_DIR", "/nonexistent/claude-gateway-base")
            .env("GIT_CRYPT_KEY", "/nonexistent/git-crypt-key")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        if let Some(claude) = claude {
            command.env("CLAUDE_BIN", claude);
        }
        for (name, value) in envs {
            command.env(name, value);
        }
        let child = command.spawn().expect("the binary starts");
        let addr = eventually("the gateway listens", secs(30), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            listening_addr(&text).ok_or(text)
        })
        .await;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Binary {
            child,
            url: format!("http://{addr}"),
            addr,
            log,
            dir,
            http,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> u64 {
        rss_kib(self.pid()) / 1024
    }

    /// Established TCP connections the gateway has accepted (its listener and any socket of
    /// another kind not counted).
    pub fn connections(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return 0;
        };
        let inodes: std::collections::HashSet<String> = entries
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|target| {
                let target = target.to_string_lossy().into_owned();
                Some(
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_owned(),
                )
            })
            .collect();
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|table| std::fs::read_to_string(table).ok())
            .flat_map(|table| {
                table
                    .lines()
                    .skip(1)
                    .map(|line| {
                        line.split_whitespace()
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            // Fields: sl, local, remote, state (01 = established), ..., inode (10th).
            .filter(|f| f.len() > 9 && f[3] == "01" && inodes.contains(&f[9]))
            .count()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where workspaces are made.
    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.path().join("jobs")
    }

    /// `POST path` with a JSON body and the token.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        post_json(&self.http, &self.url, path, body).await
    }

    /// `GET path` with the token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        get_with_token(&self.http, &self.url, path).await
    }

    /// Submits a job and answers its id.
    pub async fn submit(&self, body: serde_json::Value) -> String {
        let response = self.post("/execute", &body).await;
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        let body: serde_json::Value = response.json().await.unwrap();
        body["job_id"].as_str().unwrap().to_owned()
    }

    /// Waits (bounded) until every job of the listing has a terminal status; answers them.
    pub async fn wait_all_finished(&self, count: usize, limit: Duration) -> Vec<serde_json::Value> {
        eventually("the jobs finish", limit, || async {
            let page: serde_json::Value = self
                .get("/jobs?limit=500")
                .await
                .json()
                .await
                .expect("a listing");
            let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
            let done = jobs
                .iter()
                .filter(|j| !matches!(j["status"].as_str(), Some("queued" | "running")))
                .count();
            if jobs.len() == count && done == count {
                Ok(jobs)
            } else {
                Err(page)
            }
        })
        .await
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }
}

/// `VmRSS` of a process, in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The address the gateway's log says it listens on, once it says so.
fn listening_addr(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("listening"))?;
    let at = line.find("addr=")? + "addr=".len();
    Some(line[at..].split_whitespace().next()?.to_owned())
}

/// A fake CLI script's path as a setting value.
pub fn script(name: &str) -> String {
    fake_claude(name).display().to_string()
}

/// Reads an HTTP/1 response from a raw connection until the peer closes it or `limit` passes;
/// answers what arrived.
pub async fn read_all(stream: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether `dir` is a mount point of its own.
pub fn is_mount_point(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*dir.to_string_lossy()))
}
