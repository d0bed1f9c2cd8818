//! A full disk under the job store: `/execute` answers a clear 503, nothing already acknowledged is
//! lost (not even across a SIGKILL), and the gateway recovers by itself when space returns.
//!
//! The disk is a real one: a 4 MiB tmpfs mounted for the test (which needs root, as the test
//! machines give; elsewhere the test says so and passes without running) and filled with a file.

mod common;
mod store_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use store_support::*;

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount` reads it); `None` when this process may not mount.
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|out| out.status.success());
        mounted.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `path` by writing `path` until there is no space left.
fn fill(path: &Path) -> PathBuf {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // What a partial chunk could not take.
    let _ = file.write_all(&[0u8; 512]);
    let _ = file.sync_all();
    path.to_path_buf()
}

/// An agent that answers at once, unless its prompt says `hold`: then it runs until stopped.
const AGENT_SCRIPT: &str = r#"prompt=$(cat)
case "$prompt" in
  *hold*) exec sleep 600 ;;
esac
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s","total_cost_usd":0,"usage":{"input_tokens":1,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}'
"#;

/// Submits 64 KiB prompts until one is refused; answers the acknowledged ids and the refusal.
async fn submit_until_refused(gateway: &Binary) -> (Vec<String>, StatusCode, Value) {
    let prompt = "x".repeat(64 * 1024);
    let mut acknowledged = Vec::new();
    for _ in 0..500 {
        let (status, body) = gateway.execute(json!({"prompt": prompt})).await;
        if status != StatusCode::ACCEPTED {
            return (acknowledged, status, body);
        }
        acknowledged.push(body["job_id"].as_str().unwrap().to_owned());
    }
    panic!("500 submissions of 64 KiB on a full 4 MiB disk were all accepted");
}

#[tokio::test]
async fn a_full_disk_answers_503_loses_nothing_acknowledged_and_recovers_when_space_returns() {
    // Written before anything is spawned (a script open for writing while another thread forks
    // fails to execute with ETXTBSY).
    let scripts = tempfile::tempdir().unwrap();
    let agent = script(scripts.path(), "agent.sh", AGENT_SCRIPT);
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("skipped: this process may not mount a tmpfs (it needs root)");
        return;
    };
    let jobs_dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut settings = settings(&agent, "http://127.0.0.1:9", jobs_dir.path(), home.path());
    let database = disk.path().join("jobs.db");
    set(
        &mut settings,
        "DATABASE_URL",
        format!("sqlite://{}", database.display()),
    );
    set(&mut settings, "MAX_CONCURRENCY", 1);
    set(&mut settings, "MAX_QUEUE_DEPTH", 1000);
    let gateway = Binary::start(&settings).await;
    let before = gateway.submit("before the disk filled", Value::Null).await;
    let record = gateway.wait_end(&before).await;
    assert_eq!(record["status"], "completed", "{record}");
    // Holds the one slot, so what follows stays queued.
    let hold = gateway.submit("hold", Value::Null).await;
    gateway
        .wait_job(&hold, Duration::from_secs(30), |r| r["status"] == "running")
        .await;

    // The disk fills: submissions go on while the database has room of its own, then get a
    // clear 503 that says why, with a Retry-After.
    let filler = fill(&disk.path().join("filler"));
    let (mut acknowledged, status, body) = submit_until_refused(&gateway).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("full") && detail.contains("no space left"),
        "{detail}"
    );
    // The gateway stays up, and every acknowledged job still answers.
    assert_eq!(gateway.health().await["status"], "ok");
    for job in acknowledged.iter().chain([&before, &hold]) {
        let (status, body) = gateway.get(job).await;
        assert_eq!(status, StatusCode::OK, "{job}: {body}");
    }

    // Space returns: accepted again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    acknowledged.push(gateway.submit("space is back", Value::Null).await);

    // Full again, and killed while it is.
    let filler = fill(&disk.path().join("filler"));
    let (more, status, _) = submit_until_refused(&gateway).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    acknowledged.extend(more);
    gateway.kill9().await;

    // Started again once there is room: every acknowledged job is there and runs.
    std::fs::remove_file(&filler).unwrap();
    let gateway = Binary::start(&settings).await;
    assert_eq!(gateway.record(&before).await["status"], "completed");
    let interrupted = gateway.record(&hold).await;
    assert_eq!(interrupted["interrupted"], true, "{interrupted}");
    for job in &acknowledged {
        let record = gateway.wait_end(job).await;
        assert_eq!(record["status"], "completed", "{record}");
    }
    assert_eq!(gateway.sigterm(Duration::from_secs(30)).await, Some(0));
}
