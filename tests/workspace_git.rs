//! The git provisioner against real git repositories: a bare "remote", a warm base cloned from
//! it, and commits pushed to the remote after the base was cloned.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use claude_gateway::workspace::{GitProvisioner, WorkspaceConfig};
use common::{eventually, git, git_crypt_fixture, is_dead, script, secs, Repos, README};
use gateway_layers::workspace::Provision;

/// Where a fixture's workspaces are made.
fn jobs(fx: &Repos) -> PathBuf {
    fx.root.path().join("jobs")
}

/// A config over this fixture: no git-crypt key, a long debounce window.
fn config(fx: &Repos) -> WorkspaceConfig {
    WorkspaceConfig {
        base_dir: Some(fx.base.clone()),
        jobs_dir: jobs(fx),
        git_crypt_key: fx.root.path().join("no-key"),
        fetch_debounce: Duration::from_secs(600),
        ..WorkspaceConfig::default()
    }
}

/// A provisioner over `config`.
async fn new_provisioner(config: WorkspaceConfig) -> GitProvisioner {
    GitProvisioner::new(config).await.expect("new")
}

/// A config with no usable base repository (`base_dir`: none, one that is not there, or one that
/// is not a repository), making workspaces in `jobs_dir`.
fn scratch(base_dir: Option<PathBuf>, jobs_dir: PathBuf) -> WorkspaceConfig {
    WorkspaceConfig {
        base_dir,
        jobs_dir,
        ..WorkspaceConfig::default()
    }
}

/// Reads a file a test expects to be there.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Waits (bounded) until `condition` holds.
async fn until(what: &str, condition: impl Fn() -> bool) {
    eventually(what, secs(15), || async { condition() }).await;
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(Iterator::count).unwrap_or(0)
}

/// A `git` stand-in: runs `clone_prelude` (shell) before a clone, then the real git.
fn fake_git(dir: &Path, clone_prelude: &str) -> PathBuf {
    let body = format!("if [ \"$1\" = clone ]; then\n{clone_prelude}\nfi\nexec git \"$@\"");
    script(dir, "fake-git", &body)
}

/// Asserts that the checkout `ws` is at `commit` on `branch`.
fn assert_checkout(ws: &Path, commit: &str, branch: &str) {
    assert_eq!(
        git(ws, &["rev-parse", "HEAD"]),
        commit,
        "HEAD of {}",
        ws.display()
    );
    assert_eq!(git(ws, &["branch", "--show-current"]), branch);
}

/// A provisioner over `fx` whose git runs `clone_prelude` (shell) before each clone.
async fn provisioner_with_clone_prelude(fx: &Repos, clone_prelude: &str) -> GitProvisioner {
    new_provisioner(WorkspaceConfig {
        git_bin: fake_git(fx.root.path(), clone_prelude),
        ..config(fx)
    })
    .await
}

#[tokio::test]
async fn workspace_has_the_base_files_and_the_remotes_newer_commit() {
    let fx = Repos::new();
    let newer = fx.push("src/new.tf", "resource {}\n");
    let provisioner = new_provisioner(config(&fx)).await;

    let ws = provisioner.provision().await.expect("provision");

    assert!(ws.starts_with(jobs(&fx)), "{}", ws.display());
    assert_eq!(read(&ws.join(README.0)), README.1);
    assert_eq!(read(&ws.join("src/new.tf")), "resource {}\n");
    assert_checkout(&ws, &newer, "main");
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
    assert_eq!(provisioner.stats().fetches, 1);
}

#[tokio::test]
async fn workspace_origin_is_the_bases_origin_not_the_base() {
    let fx = Repos::new();
    let provisioner = new_provisioner(config(&fx)).await;

    let ws = provisioner.provision().await.expect("provision");

    assert_eq!(git(&ws, &["remote", "get-url", "origin"]), fx.remote_url());
    // The workspace can talk to the real remote: a fetch there works.
    git(&ws, &["fetch", "--quiet", "origin"]);
}

#[tokio::test]
async fn workspaces_are_distinct_and_isolated() {
    let fx = Repos::new();
    let provisioner = new_provisioner(config(&fx)).await;

    let a = provisioner.provision().await.expect("a");
    let b = provisioner.provision().await.expect("b");

    assert_ne!(a, b);
    std::fs::write(a.join(README.0), "changed by a\n").expect("write");
    std::fs::write(a.join("only-in-a"), "x").expect("write");
    assert_eq!(read(&b.join(README.0)), README.1);
    assert!(!b.join("only-in-a").exists());
    assert_eq!(read(&fx.base.join(README.0)), README.1);
}

#[tokio::test]
async fn release_removes_the_workspace() {
    let fx = Repos::new();
    let provisioner = new_provisioner(config(&fx)).await;
    let ws = provisioner.provision().await.expect("provision");
    assert!(ws.join(".git").is_dir());

    provisioner.release(ws.clone());

    until("the workspace is removed", || !ws.exists()).await;
    assert!(fx.base.join(README.0).exists(), "the base is untouched");
}

#[test]
fn release_outside_a_runtime_removes_the_workspace() {
    let fx = Repos::new();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (provisioner, ws) = runtime.block_on(async {
        let p = new_provisioner(config(&fx)).await;
        let ws = p.provision().await.expect("provision");
        (p, ws)
    });
    drop(runtime);

    provisioner.release(ws.clone());

    // A runtime of its own only to wait in: the release above happened outside any.
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    waiter.block_on(until("the workspace is removed", || !ws.exists()));
}

#[tokio::test]
async fn release_refuses_paths_it_did_not_hand_out() {
    let fx = Repos::new();
    let provisioner = new_provisioner(config(&fx)).await;
    let ws = provisioner.provision().await.expect("provision");

    provisioner.release(fx.base.clone());
    provisioner.release(jobs(&fx).join("not-a-workspace"));
    // A later release of a real workspace is processed after the refused ones would have been.
    provisioner.release(ws.clone());
    until("the workspace is removed", || !ws.exists()).await;

    assert!(fx.base.join(README.0).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_eight_provisions_shares_one_fetch() {
    let fx = Repos::new();
    let newer = fx.push("burst", "1");
    let provisioner = new_provisioner(config(&fx)).await;

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
    let fx = Repos::new();
    let provisioner = new_provisioner(config(&fx)).await;
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
    let fx = Repos::new();
    let config = WorkspaceConfig {
        fetch_debounce: Duration::ZERO,
        ..config(&fx)
    };
    let provisioner = new_provisioner(config).await;
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
    let fx = Repos::new();
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
    let provisioner = new_provisioner(config(&fx)).await;

    let ws = provisioner
        .provision()
        .await
        .expect("provision despite the dead remote");

    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), head);
    assert_eq!(read(&ws.join(README.0)), README.1);
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
    let fx = Repos::on_branch("trunk");
    // A stale `master` on the remote must not be what workspaces get.
    fx.push_to_new_branch("master", "wrong-branch", "x");
    let newer = fx.push("on-trunk", "1");
    let provisioner = new_provisioner(config(&fx)).await;

    let ws = provisioner.provision().await.expect("provision");

    assert_checkout(&ws, &newer, "trunk");
    assert!(!ws.join("wrong-branch").exists());
}

#[tokio::test]
async fn the_default_branch_is_asked_of_the_remote_when_origin_head_is_unknown() {
    let fx = Repos::on_branch("trunk");
    git(&fx.base, &["remote", "set-head", "origin", "--delete"]);
    git(&fx.base, &["checkout", "--quiet", "--detach"]);
    let newer = fx.push("on-trunk", "1");
    let provisioner = new_provisioner(config(&fx)).await;

    let ws = provisioner.provision().await.expect("provision");

    assert_eq!(git(&ws, &["rev-parse", "HEAD"]), newer);
    assert_eq!(provisioner.stats().failed_refreshes, 0);
}

#[tokio::test]
async fn a_configured_base_branch_wins_over_the_default() {
    let fx = Repos::new();
    let release = fx.push_to_new_branch("release", "release-notes", "1");
    fx.push("on-main", "1");
    let config = WorkspaceConfig {
        base_branch: Some("release".into()),
        ..config(&fx)
    };
    let provisioner = new_provisioner(config).await;

    let ws = provisioner.provision().await.expect("provision");

    assert_checkout(&ws, &release, "release");
    assert!(!ws.join("on-main").exists());
}

#[tokio::test]
async fn without_a_base_jobs_get_an_empty_scratch_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    for base_dir in [None, Some(root.path().join("missing"))] {
        let jobs = root.path().join("jobs");
        let provisioner = new_provisioner(scratch(base_dir, jobs.clone())).await;
        assert!(provisioner.is_scratch());

        let a = provisioner.provision().await.expect("a");
        let b = provisioner.provision().await.expect("b");

        assert_ne!(a, b);
        assert!(a.starts_with(&jobs) && a.is_dir());
        assert_eq!(entries(&a), 0);
        assert_eq!(provisioner.stats().fetches, 0);
        provisioner.release(a.clone());
        provisioner.release(b.clone());
        until("scratch dirs are removed", || !a.exists() && !b.exists()).await;
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

    let provisioner = new_provisioner(scratch(None, jobs.clone())).await;

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

    let err = GitProvisioner::new(scratch(None, file.join("jobs")))
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
    let provisioner = new_provisioner(scratch(Some(not_a_repo.clone()), jobs.clone())).await;

    let err = provisioner.provision().await.expect_err("not a repository");

    let message = err.to_string();
    let expected = format!(
        "clone of {} into {}/ws-",
        not_a_repo.display(),
        jobs.display()
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("fatal:"), "{message}");
    until("nothing is left in the jobs dir", || entries(&jobs) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_provision_mid_clone_kills_git_and_removes_the_directory() {
    let fx = Repos::new();
    let marks = fx.root.path().join("marks");
    std::fs::create_dir(&marks).expect("mkdir");
    let pidfile = marks.join("pid");
    let prelude = format!(
        "for last; do :; done\nmkdir -p \"$last/partial\"\necho $$ > {}\nexec sleep 60",
        pidfile.display()
    );
    let provisioner = provisioner_with_clone_prelude(&fx, &prelude).await;

    let task = tokio::spawn(provisioner.provision());
    until("the clone has started", || {
        pidfile.exists() && entries(&jobs(&fx)) == 1
    })
    .await;
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());

    until("the partial workspace is removed", || {
        entries(&jobs(&fx)) == 0
    })
    .await;
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .to_owned();
    until("the clone is killed", || is_dead(&pid)).await;
}

#[tokio::test]
async fn a_hung_clone_times_out_with_a_clear_error() {
    let fx = Repos::new();
    let prelude = "for last; do :; done\nmkdir -p \"$last/partial\"\nexec sleep 60";
    let config = WorkspaceConfig {
        git_bin: fake_git(fx.root.path(), prelude),
        command_timeout: Duration::from_secs(2),
        ..config(&fx)
    };
    let provisioner = new_provisioner(config).await;

    let err = provisioner.provision().await.expect_err("the clone hangs");

    let message = err.to_string();
    assert!(message.starts_with("clone of "), "{message}");
    assert!(message.contains("timed out after 2s"), "{message}");
    until("the partial workspace is removed", || {
        entries(&jobs(&fx)) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_do_not_wait_for_each_other() {
    let fx = Repos::new();
    let marks = fx.root.path().join("marks");
    std::fs::create_dir(&marks).expect("mkdir");
    // The first clone blocks until the test says go; the others run straight through.
    let prelude = format!(
        "if mkdir {m}/first 2>/dev/null; then\n  while [ ! -e {m}/go ]; do sleep 0.05; done\nfi",
        m = marks.display()
    );
    let provisioner = provisioner_with_clone_prelude(&fx, &prelude).await;

    let slow = tokio::spawn(provisioner.provision());
    until("the first clone is running", || {
        marks.join("first").exists()
    })
    .await;
    let fast = tokio::time::timeout(Duration::from_secs(30), provisioner.provision())
        .await
        .expect("the second clone is not held up by the first")
        .expect("provision");

    assert!(fast.join(README.0).exists());
    assert!(!slow.is_finished());
    std::fs::write(marks.join("go"), "").expect("go");
    let slow = slow.await.expect("join").expect("provision");
    assert!(slow.join(README.0).exists());
}

#[tokio::test]
async fn git_crypt_files_are_decrypted_with_the_key() {
    let (fx, key) = git_crypt_fixture();
    let provisioner = new_provisioner(WorkspaceConfig {
        git_crypt_key: key,
        ..config(&fx)
    })
    .await;

    let ws = provisioner.provision().await.expect("provision");

    assert_eq!(read(&ws.join("secret.txt")), "the plaintext secret\n");
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn without_the_key_git_crypt_files_stay_encrypted() {
    let (fx, _key) = git_crypt_fixture();
    let provisioner = new_provisioner(config(&fx)).await;

    let ws = provisioner.provision().await.expect("provision");

    let bytes = std::fs::read(ws.join("secret.txt")).expect("secret");
    assert!(bytes.starts_with(b"\0GITCRYPT"), "{bytes:?}");
}

#[tokio::test]
async fn a_bad_git_crypt_key_fails_the_provision() {
    let (fx, _key) = git_crypt_fixture();
    let bad_key = fx.root.path().join("bad.key");
    std::fs::write(&bad_key, "not a key").expect("write");
    let provisioner = new_provisioner(WorkspaceConfig {
        git_crypt_key: bad_key.clone(),
        ..config(&fx)
    })
    .await;

    let err = provisioner.provision().await.expect_err("bad key");

    let message = err.to_string();
    assert!(message.starts_with("git-crypt unlock of "), "{message}");
    assert!(
        message.contains(&bad_key.display().to_string()),
        "{message}"
    );
    until("nothing is left in the jobs dir", || {
        entries(&jobs(&fx)) == 0
    })
    .await;
}
