//! Issue 10, items 3, 4 and 9 (base repository): a git origin that never answers cannot stall
//! runs, a jobs directory on another filesystem works, and a base that is locked, deleted or
//! broken is repaired or reported, with the cause kept.

mod common;
mod harden_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{git, json, submit, wait_end, Gateway, GatewayBuilder, Repos};
use harden_support::Binary;
use serde_json::{json, Value};

const AGENT: &str = "general-purpose";

fn seconds_between(record: &Value, from: &str, to: &str) -> f64 {
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(record[field].as_str().unwrap()).unwrap()
    };
    (at(to) - at(from)).num_milliseconds() as f64 / 1000.0
}

/// A gateway cloning runs from `base` (refreshed before every run), whose stand-in agent answers
/// with the workspace's README.
async fn readme_gateway(base: &Path) -> Gateway {
    readme_builder(base).start().await
}

/// [`readme_gateway`], for more settings.
fn readme_builder(base: &Path) -> GatewayBuilder {
    Gateway::builder()
        .base(base)
        .claude(common::fake_claude("read-readme.sh"))
        .arg("fetch-debounce-seconds", 0)
}

/// Commits a new README to the remote of `repos`.
fn push_readme(repos: &Repos, text: &str) {
    let work = repos
        .root
        .path()
        .join(format!("work-{}", uuid::Uuid::new_v4().simple()));
    git(
        repos.root.path(),
        &[
            "clone",
            "-q",
            repos.remote.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    std::fs::write(work.join("README.md"), format!("{text}\n")).unwrap();
    git(&work, &["commit", "-qam", "update"]);
    git(&work, &["push", "-q", "origin", "HEAD"]);
}

#[tokio::test]
async fn an_origin_that_never_answers_does_not_stall_runs() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let repos = Repos::new();
    git(
        &repos.base,
        &[
            "remote",
            "set-url",
            "origin",
            &format!("http://127.0.0.1:{port}/repo.git"),
        ],
    );
    let gw = readme_gateway(&repos.base).await;
    let quick: Vec<String> =
        futures_util::future::join_all((0..6).map(|_| submit(&gw, "p", 30))).await;
    // A job whose deadline is shorter than the wait for a refresh.
    let short = submit(&gw, "p", 1).await;
    for id in &quick {
        let record = wait_end(&gw, id).await;
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["result"], common::README.1.trim(), "{record}");
        let took = seconds_between(&record, "created_at", "finished_at");
        assert!(took < 15.0, "a run waited {took} s for the origin");
    }
    let record = wait_end(&gw, &short).await;
    assert_eq!(record["status"], "timeout", "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(error.contains("before its agent started"), "{error}");
    holder.abort();
}

/// A tmpfs mounted over a directory for as long as it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_jobs_dir_on_another_filesystem_gets_working_clones() {
    let repos = Repos::new();
    // The job store elsewhere (in memory): the tmpfs mounted over JOBS_DIR below would hide its
    // file from the gateway.
    let gw = readme_builder(&repos.base)
        .arg("database-url", "memory")
        .start()
        .await;
    // JOBS_DIR becomes a tmpfs: the base's objects cannot be hardlinked into it.
    let Some(_tmpfs) = Tmpfs::mount(gw.jobs_dir.path()) else {
        panic!("this test mounts a tmpfs and must run as root with CAP_SYS_ADMIN");
    };
    assert!(harden_support::is_mount_point(gw.jobs_dir.path()));
    for _ in 0..2 {
        let id = submit(&gw, "p", 60).await;
        let record = wait_end(&gw, &id).await;
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["result"], common::README.1.trim());
    }
    gw.wait_workspaces_gone().await;
}

#[tokio::test]
async fn a_failed_clone_keeps_its_cause_and_is_logged_as_a_warning() {
    // A base at a long path, broken so that cloning it fails.
    let root = tempfile::tempdir().unwrap();
    let base = root
        .path()
        .join("a".repeat(120))
        .join("b".repeat(120))
        .join("base");
    std::fs::create_dir_all(&base).unwrap();
    git(&base, &["init", "-q"]);
    std::fs::write(base.join(".git").join("HEAD"), "not a ref\n").unwrap();
    let gw = Binary::start("ok.sh", &[("WORKSPACE_DIR", base.display().to_string())]).await;
    let id = gw.submit(json!({"prompt": "p", "agent": AGENT})).await;
    gw.wait_all_finished(1, Duration::from_secs(60)).await;
    let record: Value = gw.get(&format!("/jobs/{id}")).await.json().await.unwrap();
    assert_eq!(record["status"], "error", "{record}");
    let error = record["error"].as_str().unwrap();
    // What failed comes first, why last: the long paths between are what gets shortened.
    assert!(
        error.starts_with("workspace provisioning failed: clone of"),
        "{error}"
    );
    assert!(
        error.ends_with("does not exist"),
        "the cause was cut: {error}"
    );
    let log = gw.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("a run could not get its workspace"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(warning.contains("does not exist"), "{warning}");
}

#[tokio::test]
async fn a_stale_index_lock_does_not_pin_runs_to_an_old_base() {
    let repos = Repos::new();
    let lock = repos.base.join(".git").join("index.lock");
    let file = std::fs::File::create(&lock).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(file);
    push_readme(&repos, "updated upstream");
    let gw = readme_gateway(&repos.base).await;
    let id = submit(&gw, "p", 60).await;
    let record = wait_end(&gw, &id).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "updated upstream", "{record}");
    assert!(!lock.exists(), "the stale lock is still there");
}

#[tokio::test]
async fn a_base_deleted_at_runtime_is_reported_and_cloned_again() {
    let repos = Repos::new();
    let gw = readme_builder(&repos.base)
        .arg("workspace-pool-size", 1)
        .start()
        .await;
    let first = submit(&gw, "p", 60).await;
    assert_eq!(wait_end(&gw, &first).await["status"], "completed");
    // Once the pool is full again nothing refreshes the base (each refill does, with no
    // debounce): the deletion below does not race a fetch writing into it.
    gw.wait_health(|h| h["base"] == "ok" && h["pool_ready"] == 1)
        .await;

    std::fs::remove_dir_all(&repos.base).unwrap();
    let health = json(gw.get("/health").await).await;
    assert_eq!(health["base"], "missing", "{health}");

    let second = submit(&gw, "p", 60).await;
    let record = wait_end(&gw, &second).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], common::README.1.trim());
    assert!(
        repos.base.join(".git").is_dir(),
        "the base was not cloned again"
    );
    assert_eq!(json(gw.get("/health").await).await["base"], "ok");
}
