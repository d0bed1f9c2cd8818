//! The git provisioner against real git repositories: a bare "remote", a warm base cloned from
//! it, and commits pushed to the remote after the base was cloned.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claude_gateway::workspace::{GitProvisioner, WorkspaceConfig};
use gateway_layers::workspace::Provision;
use tempfile::TempDir;

/// Runs git for test set-up, isolated from the machine's git configuration; panics on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A remote, a working copy that pushes to it, a warm base cloned from it, and a jobs dir.
struct Fixture {
    root: TempDir,
    remote: PathBuf,
    seed: PathBuf,
    base: PathBuf,
    jobs: PathBuf,
}

impl Fixture {
    /// A remote whose default branch is `branch`, with one commit (`README`), and its base.
    fn new(branch: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path().to_path_buf();
        let r = r.as_path();
        let (remote, seed, base, jobs) = (
            r.join("remote.git"),
            r.join("seed"),
            r.join("base"),
            r.join("jobs"),
        );
        git(
            r,
            &["init", "--quiet", "--bare", "-b", branch, "remote.git"],
        );
        git(r, &["clone", "--quiet", "remote.git", "seed"]);
        let fixture = Self {
            root,
            remote,
            seed,
            base,
            jobs,
        };
        fixture.push("README", "hello\n");
        git(r, &["clone", "--quiet", "remote.git", "base"]);
        fixture
    }

    /// Commits `file` on the seed's current branch, pushes it, and returns the commit id.
    fn push(&self, file: &str, content: &str) -> String {
        let path = self.seed.join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        git(&self.seed, &["add", "--", file]);
        git(&self.seed, &["commit", "--quiet", "-m", file]);
        git(&self.seed, &["push", "--quiet", "origin", "HEAD"]);
        git(&self.seed, &["rev-parse", "HEAD"])
    }

    /// A config over this fixture: no git-crypt key, a long debounce window.
    fn config(&self) -> WorkspaceConfig {
        WorkspaceConfig {
            base_dir: Some(self.base.clone()),
            jobs_dir: self.jobs.clone(),
            git_crypt_key: self.root.path().join("no-key"),
            fetch_debounce: Duration::from_secs(600),
            ..WorkspaceConfig::default()
        }
    }

    fn remote_url(&self) -> String {
        self.remote.to_string_lossy().into_owned()
    }
}

/// Waits (bounded) until `condition` holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(Iterator::count).unwrap_or(0)
}

/// A `git` stand-in: runs `clone_prelude` (shell) before a clone, then the real git.
fn fake_git(dir: &Path, clone_prelude: &str) -> PathBuf {
    let path = dir.join("fake-git");
    let script =
        format!("#!/bin/sh\nif [ \"$1\" = clone ]; then\n{clone_prelude}\nfi\nexec git \"$@\"\n");
    std::fs::write(&path, script).expect("write script");
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .expect("chmod");
    assert!(status.success());
    path
}

#[tokio::test]
async fn workspace_has_the_base_files_and_the_remotes_newer_commit() {
    let fx = Fixture::new("main");
    let newer = fx.push("src/new.tf", "resource {}\n");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let ws = provisioner.provision().await.expect("provision");

    assert!(ws.starts_with(&fx.jobs), "{}", ws.display());
    assert_eq!(
        std::fs::read_to_string(ws.join("README")).expect("README"),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("src/new.tf")).expect("new.tf"),
        "resource {}\n"
    );
    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), newer);
    assert_eq!(git(&ws, &["branch", "--show-current"]), "main");
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
    assert_eq!(provisioner.stats().fetches, 1);
}

#[tokio::test]
async fn workspace_origin_is_the_bases_origin_not_the_base() {
    let fx = Fixture::new("main");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let ws = provisioner.provision().await.expect("provision");

    assert_eq!(git(&ws, &["remote", "get-url", "origin"]), fx.remote_url());
    // The workspace can talk to the real remote: a fetch there works.
    git(&ws, &["fetch", "--quiet", "origin"]);
}

#[tokio::test]
async fn workspaces_are_distinct_and_isolated() {
    let fx = Fixture::new("main");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let a = provisioner.provision().await.expect("a");
    let b = provisioner.provision().await.expect("b");

    assert_ne!(a, b);
    std::fs::write(a.join("README"), "changed by a\n").expect("write");
    std::fs::write(a.join("only-in-a"), "x").expect("write");
    assert_eq!(
        std::fs::read_to_string(b.join("README")).expect("README"),
        "hello\n"
    );
    assert!(!b.join("only-in-a").exists());
    assert_eq!(
        std::fs::read_to_string(fx.base.join("README")).expect("base"),
        "hello\n"
    );
}

#[tokio::test]
async fn release_removes_the_workspace() {
    let fx = Fixture::new("main");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");
    let ws = provisioner.provision().await.expect("provision");
    assert!(ws.join(".git").is_dir());

    provisioner.release(ws.clone());

    eventually("the workspace is removed", || !ws.exists()).await;
    assert!(fx.base.join("README").exists(), "the base is untouched");
}

#[test]
fn release_outside_a_runtime_removes_the_workspace() {
    let fx = Fixture::new("main");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (provisioner, ws) = runtime.block_on(async {
        let p = GitProvisioner::new(fx.config()).await.expect("new");
        let ws = p.provision().await.expect("provision");
        (p, ws)
    });
    drop(runtime);

    provisioner.release(ws.clone());

    let deadline = Instant::now() + Duration::from_secs(15);
    while ws.exists() {
        assert!(Instant::now() < deadline, "workspace still there");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn release_refuses_paths_it_did_not_hand_out() {
    let fx = Fixture::new("main");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");
    let ws = provisioner.provision().await.expect("provision");

    provisioner.release(fx.base.clone());
    provisioner.release(fx.jobs.join("not-a-workspace"));
    // A later release of a real workspace is processed after the refused ones would have been.
    provisioner.release(ws.clone());
    eventually("the workspace is removed", || !ws.exists()).await;

    assert!(fx.base.join("README").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_eight_provisions_shares_one_fetch() {
    let fx = Fixture::new("main");
    let newer = fx.push("burst", "1");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let burst = (0..8).map(|_| provisioner.provision());
    let workspaces = futures_util::future::join_all(burst).await;

    assert_eq!(provisioner.stats().fetches, 1);
    let mut paths = Vec::new();
    for ws in workspaces {
        let ws = ws.expect("provision");
        assert_eq!(
            git(&ws, &["rev-parse", "HEAD"]),
            newer,
            "every workspace saw the refresh"
        );
        paths.push(ws);
    }
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 8);
}

#[tokio::test]
async fn a_provision_inside_the_debounce_window_does_not_fetch() {
    let fx = Fixture::new("main");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");
    let first = provisioner.provision().await.expect("first");
    let before = git(&first, &["rev-parse", "HEAD"]);

    fx.push("later", "1");
    let second = provisioner.provision().await.expect("second");

    assert_eq!(provisioner.stats().fetches, 1);
    assert_eq!(
        git(&second, &["rev-parse", "HEAD"]),
        before,
        "the base was not refreshed"
    );
}

#[tokio::test]
async fn with_no_debounce_every_provision_sees_the_latest_commit() {
    let fx = Fixture::new("main");
    let config = WorkspaceConfig {
        fetch_debounce: Duration::ZERO,
        ..fx.config()
    };
    let provisioner = GitProvisioner::new(config).await.expect("new");
    provisioner.provision().await.expect("first");

    let newer = fx.push("later", "1");
    let second = provisioner.provision().await.expect("second");

    assert_eq!(provisioner.stats().fetches, 2);
    assert_eq!(git(&second, &["rev-parse", "HEAD"]), newer);
}

/// Collects everything logged while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The default (current-thread) runtime keeps the spawned refresh on this thread, where the
// subscriber below is installed.
#[tokio::test]
async fn a_broken_remote_is_logged_and_the_last_good_base_is_used() {
    let fx = Fixture::new("main");
    let head = git(&fx.base, &["rev-parse", "HEAD"]);
    git(
        &fx.base,
        &["remote", "set-url", "origin", "/nonexistent/remote.git"],
    );
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let ws = provisioner
        .provision()
        .await
        .expect("provision despite the dead remote");

    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        std::fs::read_to_string(ws.join("README")).expect("README"),
        "hello\n"
    );
    let stats = provisioner.stats();
    assert_eq!((stats.fetches, stats.failed_refreshes), (1, 1));
    let logged = logs.text();
    assert!(logged.contains("base refresh failed"), "{logged}");
    assert!(
        logged.contains("/nonexistent/remote.git"),
        "git's stderr is logged: {logged}"
    );

    // The failed refresh counts for the window: the next job does not fetch again.
    provisioner.provision().await.expect("second");
    assert_eq!(provisioner.stats().fetches, 1);
}

#[tokio::test]
async fn the_remotes_default_branch_is_followed_not_master() {
    let fx = Fixture::new("trunk");
    // A stale `master` on the remote must not be what workspaces get.
    git(&fx.seed, &["checkout", "--quiet", "-b", "master"]);
    fx.push("wrong-branch", "x");
    git(&fx.seed, &["checkout", "--quiet", "trunk"]);
    let newer = fx.push("on-trunk", "1");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let ws = provisioner.provision().await.expect("provision");

    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), newer);
    assert_eq!(git(&ws, &["branch", "--show-current"]), "trunk");
    assert!(!ws.join("wrong-branch").exists());
}

#[tokio::test]
async fn the_default_branch_is_asked_of_the_remote_when_origin_head_is_unknown() {
    let fx = Fixture::new("trunk");
    git(&fx.base, &["remote", "set-head", "origin", "--delete"]);
    git(&fx.base, &["checkout", "--quiet", "--detach"]);
    let newer = fx.push("on-trunk", "1");
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let ws = provisioner.provision().await.expect("provision");

    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), newer);
    assert_eq!(provisioner.stats().failed_refreshes, 0);
}

#[tokio::test]
async fn a_configured_base_branch_wins_over_the_default() {
    let fx = Fixture::new("main");
    git(&fx.seed, &["checkout", "--quiet", "-b", "release"]);
    let release = fx.push("release-notes", "1");
    git(&fx.seed, &["checkout", "--quiet", "main"]);
    fx.push("on-main", "1");
    let config = WorkspaceConfig {
        base_branch: Some("release".into()),
        ..fx.config()
    };
    let provisioner = GitProvisioner::new(config).await.expect("new");

    let ws = provisioner.provision().await.expect("provision");

    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), release);
    assert_eq!(git(&ws, &["branch", "--show-current"]), "release");
    assert!(!ws.join("on-main").exists());
}

#[tokio::test]
async fn without_a_base_jobs_get_an_empty_scratch_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    for base_dir in [None, Some(root.path().join("missing"))] {
        let jobs = root.path().join("jobs");
        let provisioner = GitProvisioner::new(WorkspaceConfig {
            base_dir,
            jobs_dir: jobs.clone(),
            ..WorkspaceConfig::default()
        })
        .await
        .expect("new");
        assert!(provisioner.is_scratch());

        let a = provisioner.provision().await.expect("a");
        let b = provisioner.provision().await.expect("b");

        assert_ne!(a, b);
        assert!(a.starts_with(&jobs) && a.is_dir());
        assert_eq!(entries(&a), 0);
        assert_eq!(provisioner.stats().fetches, 0);
        provisioner.release(a.clone());
        provisioner.release(b.clone());
        eventually("scratch dirs are removed", || !a.exists() && !b.exists()).await;
    }
}

#[tokio::test]
async fn start_up_removes_only_leftover_workspaces() {
    let root = tempfile::tempdir().expect("tempdir");
    let jobs = root.path().join("jobs");
    let leftover = jobs.join("ws-0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(leftover.join("src")).expect("mkdir");
    std::fs::write(leftover.join("src/main.tf"), "x").expect("write");
    std::fs::create_dir_all(jobs.join("keep-me")).expect("mkdir");
    std::fs::write(jobs.join("ws-fedcba9876543210fedcba9876543210"), "a file").expect("write");
    std::fs::create_dir_all(jobs.join("ws-notes")).expect("mkdir");

    let provisioner = GitProvisioner::new(WorkspaceConfig {
        base_dir: None,
        jobs_dir: jobs.clone(),
        ..WorkspaceConfig::default()
    })
    .await
    .expect("new");

    assert!(!leftover.exists());
    assert!(jobs.join("keep-me").is_dir());
    assert!(jobs.join("ws-fedcba9876543210fedcba9876543210").is_file());
    assert!(jobs.join("ws-notes").is_dir());
    assert!(provisioner.jobs_dir().is_absolute());
}

#[tokio::test]
async fn an_unusable_jobs_dir_fails_start_up() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = root.path().join("a-file");
    std::fs::write(&file, "x").expect("write");

    let err = GitProvisioner::new(WorkspaceConfig {
        base_dir: None,
        jobs_dir: file.join("jobs"),
        ..WorkspaceConfig::default()
    })
    .await
    .expect_err("cannot create a dir under a file");

    assert!(
        err.to_string()
            .starts_with("could not create jobs directory"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_clone_says_what_failed_and_leaves_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let not_a_repo = root.path().join("plain");
    std::fs::create_dir(&not_a_repo).expect("mkdir");
    let jobs = root.path().join("jobs");
    let provisioner = GitProvisioner::new(WorkspaceConfig {
        base_dir: Some(not_a_repo.clone()),
        jobs_dir: jobs.clone(),
        ..WorkspaceConfig::default()
    })
    .await
    .expect("new");

    let err = provisioner.provision().await.expect_err("not a repository");

    let message = err.to_string();
    let expected = format!(
        "clone of {} into {}/ws-",
        not_a_repo.display(),
        jobs.display()
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("fatal:"), "{message}");
    eventually("nothing is left in the jobs dir", || entries(&jobs) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_provision_mid_clone_kills_git_and_removes_the_directory() {
    let fx = Fixture::new("main");
    let marks = fx.root.path().join("marks");
    std::fs::create_dir(&marks).expect("mkdir");
    let pidfile = marks.join("pid");
    let prelude = format!(
        "for last; do :; done\nmkdir -p \"$last/partial\"\necho $$ > {}\nexec sleep 60",
        pidfile.display()
    );
    let config = WorkspaceConfig {
        git_bin: fake_git(fx.root.path(), &prelude),
        ..fx.config()
    };
    let provisioner = GitProvisioner::new(config).await.expect("new");

    let task = tokio::spawn(provisioner.provision());
    eventually("the clone has started", || {
        pidfile.exists() && entries(&fx.jobs) == 1
    })
    .await;
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());

    eventually("the partial workspace is removed", || {
        entries(&fx.jobs) == 0
    })
    .await;
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .to_owned();
    eventually("the clone is killed", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    })
    .await;
}

#[tokio::test]
async fn a_hung_clone_times_out_with_a_clear_error() {
    let fx = Fixture::new("main");
    let prelude = "for last; do :; done\nmkdir -p \"$last/partial\"\nexec sleep 60";
    let config = WorkspaceConfig {
        git_bin: fake_git(fx.root.path(), prelude),
        command_timeout: Duration::from_secs(2),
        ..fx.config()
    };
    let provisioner = GitProvisioner::new(config).await.expect("new");

    let err = provisioner.provision().await.expect_err("the clone hangs");

    let message = err.to_string();
    assert!(message.starts_with("clone of "), "{message}");
    assert!(message.contains("timed out after 2s"), "{message}");
    eventually("the partial workspace is removed", || {
        entries(&fx.jobs) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_do_not_wait_for_each_other() {
    let fx = Fixture::new("main");
    let marks = fx.root.path().join("marks");
    std::fs::create_dir(&marks).expect("mkdir");
    // The first clone blocks until the test says go; the others run straight through.
    let prelude = format!(
        "if mkdir {m}/first 2>/dev/null; then\n  while [ ! -e {m}/go ]; do sleep 0.05; done\nfi",
        m = marks.display()
    );
    let config = WorkspaceConfig {
        git_bin: fake_git(fx.root.path(), &prelude),
        ..fx.config()
    };
    let provisioner = GitProvisioner::new(config).await.expect("new");

    let slow = tokio::spawn(provisioner.provision());
    eventually("the first clone is running", || {
        marks.join("first").exists()
    })
    .await;
    let fast = tokio::time::timeout(Duration::from_secs(30), provisioner.provision())
        .await
        .expect("the second clone is not held up by the first")
        .expect("provision");

    assert!(fast.join("README").exists());
    assert!(!slow.is_finished());
    std::fs::write(marks.join("go"), "").expect("go");
    let slow = slow.await.expect("join").expect("provision");
    assert!(slow.join("README").exists());
}

/// The git-crypt fixture: `secret.txt` committed encrypted, and the exported key.
fn git_crypt_fixture() -> (Fixture, PathBuf) {
    let installed = Command::new("git-crypt").arg("--version").output().is_ok();
    assert!(
        installed,
        "git-crypt is required: apt-get install -y git-crypt"
    );
    let fx = Fixture::new("main");
    let key = fx.root.path().join("git-crypt.key");
    let run = |args: &[&str]| {
        let out = Command::new("git-crypt")
            .args(args)
            .current_dir(&fx.seed)
            .output()
            .expect("git-crypt runs");
        assert!(
            out.status.success(),
            "git-crypt {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init"]);
    run(&["export-key", &key.to_string_lossy()]);
    fx.push(
        ".gitattributes",
        "secret.txt filter=git-crypt diff=git-crypt\n",
    );
    fx.push("secret.txt", "the plaintext secret\n");
    (fx, key)
}

#[tokio::test]
async fn git_crypt_files_are_decrypted_with_the_key() {
    let (fx, key) = git_crypt_fixture();
    let provisioner = GitProvisioner::new(WorkspaceConfig {
        git_crypt_key: key,
        ..fx.config()
    })
    .await
    .expect("new");

    let ws = provisioner.provision().await.expect("provision");

    assert_eq!(
        std::fs::read_to_string(ws.join("secret.txt")).expect("secret"),
        "the plaintext secret\n"
    );
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn without_the_key_git_crypt_files_stay_encrypted() {
    let (fx, _key) = git_crypt_fixture();
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let ws = provisioner.provision().await.expect("provision");

    let bytes = std::fs::read(ws.join("secret.txt")).expect("secret");
    assert!(bytes.starts_with(b"\0GITCRYPT"), "{bytes:?}");
}

#[tokio::test]
async fn a_bad_git_crypt_key_fails_the_provision() {
    let (fx, _key) = git_crypt_fixture();
    let bad_key = fx.root.path().join("bad.key");
    std::fs::write(&bad_key, "not a key").expect("write");
    let provisioner = GitProvisioner::new(WorkspaceConfig {
        git_crypt_key: bad_key.clone(),
        ..fx.config()
    })
    .await
    .expect("new");

    let err = provisioner.provision().await.expect_err("bad key");

    let message = err.to_string();
    assert!(message.starts_with("git-crypt unlock of "), "{message}");
    assert!(
        message.contains(&bad_key.display().to_string()),
        "{message}"
    );
    eventually("nothing is left in the jobs dir", || entries(&fx.jobs) == 0).await;
}

/// Not a test: times provisions from a 5,000-file base. Run with
/// `cargo test --release --test workspace_git -- --ignored --nocapture provision_timing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, not a test"]
async fn provision_timing_with_a_5000_file_base() {
    let fx = Fixture::new("main");
    for i in 0..5000 {
        let dir = fx.seed.join(format!("modules/m{:03}", i / 50));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join(format!("f{i}.tf")),
            format!("resource \"x\" \"r{i}\" {{ n = {i} }}\n"),
        )
        .expect("write");
    }
    git(&fx.seed, &["add", "-A"]);
    git(&fx.seed, &["commit", "--quiet", "-m", "5000 files"]);
    git(&fx.seed, &["push", "--quiet", "origin", "HEAD"]);
    git(&fx.base, &["pull", "--quiet"]);
    let provisioner = GitProvisioner::new(fx.config()).await.expect("new");

    let started = Instant::now();
    let first = provisioner.provision().await.expect("first");
    println!("first provision (includes fetch): {:?}", started.elapsed());
    provisioner.release(first);

    let mut times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let ws = provisioner.provision().await.expect("provision");
        times.push(started.elapsed());
        provisioner.release(ws.clone());
        // Measure provisions alone, not alongside the previous removal.
        eventually("the workspace is removed", || !ws.exists()).await;
    }
    times.sort();
    println!(
        "provision, no fetch: min {:?} median {:?} max {:?}",
        times[0], times[5], times[9]
    );

    let started = Instant::now();
    let burst = futures_util::future::join_all((0..8).map(|_| provisioner.provision())).await;
    println!("burst of 8 concurrent provisions: {:?}", started.elapsed());
    for ws in burst {
        provisioner.release(ws.expect("provision"));
    }
}
