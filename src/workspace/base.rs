//! The warm base clone: refreshed from its remote at most once per debounce window.
//!
//! A run never waits long for a refresh: it waits at most [`REFRESH_WAIT`] and then starts from
//! the last good base while the refresh carries on in the background. Git's network transfers
//! give up when they stall ([`LOW_SPEED_SECONDS`]), so an origin that accepts connections and
//! never answers costs one background refresh, not every run's deadline. A refresh also repairs
//! what would pin runs to an old base: a stale `index.lock` left by a killed git, and a base
//! directory deleted at runtime (cloned again from the origin it had).
//!
//! Two locks, two jobs:
//! - `last_refresh` (a mutex) is held only by a running refresh. Provisions that arrive while
//!   one runs wait for *that* refresh, then find the base fresh and go on: a burst shares one
//!   fetch. When the base is fresh the mutex is taken and released at once.
//! - `tree` (a read-write lock) keeps clones and the rewriting part of a refresh apart: clones
//!   read concurrently, never waiting for each other; the reset and `gc` write, at most once
//!   per window.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex, OnceCell, RwLock, RwLockReadGuard};

use super::git::{CommandError, Tool};

/// Longest a run waits for a refresh of the base before it starts from the base as it is.
pub(crate) const REFRESH_WAIT: Duration = Duration::from_secs(5);

/// A git network transfer slower than [`LOW_SPEED_BYTES`] a second for this long is abandoned
/// (`http.lowSpeedTime`): an origin that accepts and never answers fails in this time.
pub(crate) const LOW_SPEED_SECONDS: u64 = 20;

/// See [`LOW_SPEED_SECONDS`].
const LOW_SPEED_BYTES: u64 = 1000;

/// An ssh connection to the origin that is not up within this many seconds is abandoned (when
/// the operator configured no ssh command of their own).
const SSH_CONNECT_SECONDS: u64 = 20;

/// An `index.lock` in the base older than this is left over from a git that was killed: no git
/// of the gateway's runs on the base that long without the refresh lock, which is held.
const STALE_LOCK_AGE: Duration = Duration::from_secs(60);

/// The base repository every workspace is cloned from.
#[derive(Debug)]
pub(crate) struct Base {
    /// The base's working tree.
    dir: PathBuf,
    /// Runs git.
    git: Tool,
    /// The configured remote branch; `None` follows the remote's default branch.
    branch: Option<String>,
    /// Minimum time between two refreshes.
    debounce: Duration,
    /// When the last refresh attempt ended (failed ones included, so a dead remote costs one
    /// fetch per window, not one per job). Locked for the whole refresh; see the module docs.
    last_refresh: Arc<Mutex<Option<Instant>>>,
    /// Clones hold it shared; a refresh holds it exclusively while it rewrites the base.
    tree: RwLock<()>,
    /// Fetches started, for tests and metrics.
    fetches: AtomicU64,
    /// Refreshes that failed (the base was left as it was).
    failed_refreshes: AtomicU64,
    /// The base's `origin` URL, once read: what the base is cloned again from if it vanishes.
    origin: std::sync::Mutex<Option<String>>,
    /// Whether workspaces can hardlink the base's objects (same filesystem, same mount); found
    /// once, at the first clone.
    hardlinks: OnceCell<bool>,
    /// The commit the base's working tree is at, once read; forgotten whenever a refresh rewrites
    /// the tree, so a pooled checkout is compared with the base as it is now.
    head: std::sync::Mutex<Option<Arc<str>>>,
}

impl Base {
    pub(crate) fn new(dir: PathBuf, git: Tool, branch: Option<String>, debounce: Duration) -> Self {
        Self {
            dir,
            git,
            branch,
            debounce,
            last_refresh: Arc::new(Mutex::new(None)),
            tree: RwLock::new(()),
            fetches: AtomicU64::new(0),
            failed_refreshes: AtomicU64::new(0),
            origin: std::sync::Mutex::new(None),
            hardlinks: OnceCell::new(),
            head: std::sync::Mutex::new(None),
        }
    }

    /// Whether the base is there: a deleted base is cloned again at the next refresh.
    pub(crate) fn is_present(&self) -> bool {
        self.dir.join(".git").exists()
    }

    /// Whether a clone of the base into `jobs_dir` may hardlink its objects (`git clone
    /// --local`), or must copy them (`--no-hardlinks`): a hardlink cannot cross filesystems or
    /// mounts, and `--local` then fails with `Invalid cross-device link`. Tried once, with a real
    /// hardlink.
    pub(crate) async fn hardlinks_to(&self, jobs_dir: &Path) -> bool {
        let probed = self
            .hardlinks
            .get_or_try_init(|| async {
                let probe = jobs_dir.join(format!(".link-probe-{}", uuid::Uuid::new_v4().simple()));
                let source = self.dir.join(".git").join("HEAD");
                match tokio::fs::hard_link(&source, &probe).await {
                    Ok(()) => {
                        let _ = tokio::fs::remove_file(&probe).await;
                        Ok(true)
                    }
                    Err(error) if error.raw_os_error() == Some(nix::libc::EXDEV) => {
                        tracing::info!(
                            base = %self.dir.display(),
                            jobs_dir = %jobs_dir.display(),
                            "the jobs directory is on another filesystem than the base: workspaces copy the base's objects instead of hardlinking them"
                        );
                        Ok(false)
                    }
                    // Anything else (a missing base, say) is for the clone itself to report;
                    // not remembered, so the next clone tries again.
                    Err(error) => Err(error),
                }
            })
            .await;
        probed.copied().unwrap_or(true)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    pub(crate) fn failed_refreshes(&self) -> u64 {
        self.failed_refreshes.load(Ordering::Relaxed)
    }

    /// Refreshes the base unless that was done within the debounce window (or the base is
    /// gone); if a refresh is running, waits for it instead of starting another. Waits at most
    /// [`REFRESH_WAIT`]: a late refresh goes on in the background and the run starts from the
    /// last good base. Never fails: a failed refresh is logged and the base stays as it was.
    pub(crate) async fn ensure_fresh(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let refreshed = async move {
            let last = Arc::clone(&this.last_refresh).lock_owned().await;
            if last.is_some_and(|at| at.elapsed() < this.debounce) && this.is_present() {
                return;
            }
            let worker = Arc::clone(&this);
            // The refresh runs as its own task holding the lock, so a provision that stops
            // waiting neither kills git halfway through a reset (leaving `index.lock` behind)
            // nor lets the next provision start a second refresh alongside.
            let refresh = tokio::spawn(async move {
                let mut last = last;
                if !worker.refresh_now().await {
                    worker.failed_refreshes.fetch_add(1, Ordering::Relaxed);
                }
                *last = Some(Instant::now());
            });
            let _ = refresh.await;
        };
        if tokio::time::timeout(REFRESH_WAIT, refreshed).await.is_err() {
            tracing::warn!(
                base = %self.dir.display(),
                waited_seconds = REFRESH_WAIT.as_secs(),
                "base refresh is slow; the run starts from the last good base while it goes on"
            );
        }
    }

    /// Shared access for cloning: a refresh cannot rewrite the base meanwhile.
    pub(crate) async fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.tree.read().await
    }

    /// The commit the base is at (`git rev-parse HEAD`), read once per refresh. Asked with the
    /// read lock held (`_reading`), so the answer is the commit a clone made meanwhile gets.
    pub(crate) async fn head(&self, _reading: &RwLockReadGuard<'_, ()>) -> Option<Arc<str>> {
        if let Some(head) = self.cached_head() {
            return Some(head);
        }
        let head: Arc<str> = self
            .stdout(&["rev-parse", "--verify", "HEAD"])
            .await
            .map(|s| s.trim().into())?;
        *self.head.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&head));
        Some(head)
    }

    fn cached_head(&self) -> Option<Arc<str>> {
        self.head
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Called with the write lock held, before the tree changes.
    fn forget_head(&self) {
        *self.head.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// `git fetch origin --prune`, then reset the base to the remote branch. Returns whether
    /// the base is now up to date; failures are logged here with git's stderr.
    async fn refresh_now(&self) -> bool {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        if !self.is_present() {
            return self.clone_again().await;
        }
        if self.origin().is_none() {
            // Learned while the base is there, to clone it again should it vanish.
            let _ = self.origin_url().await;
        }
        // Automatic gc after the fetch would delete objects a concurrent clone is linking; it
        // runs below, under the write lock, instead.
        let mut fetch = vec!["-c", "gc.auto=0", "-c", "maintenance.auto=false"];
        let network = self.network_config().await;
        fetch.extend(network.iter().map(String::as_str));
        fetch.extend(["fetch", "origin", "--prune", "--quiet"]);
        if let Err(e) = self.git.run(&self.dir, fetch).await {
            self.log_failure("fetch", &e);
            return false;
        }
        let Some(branch) = self.remote_branch().await else {
            tracing::warn!(
                base = %self.dir.display(),
                "base refresh: could not tell the remote's default branch; set the base branch explicitly. \
                 Jobs use the base as it is"
            );
            return false;
        };
        let target = format!("refs/remotes/origin/{branch}");

        let _writing = self.tree.write().await;
        self.forget_head();
        self.clear_stale_lock().await;
        // `checkout --force -B <branch> origin/<branch>` is `reset --hard origin/<branch>` that also
        // works when the base sits on another branch or a detached HEAD.
        let reset = ["checkout", "--force", "--quiet", "-B", &branch, &target];
        if let Err(e) = self.git.run(&self.dir, reset).await {
            self.log_failure("reset", &e);
            return false;
        }
        tracing::debug!(base = %self.dir.display(), %branch, "base refreshed");
        let gc = ["-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"];
        if let Err(e) = self.git.run(&self.dir, gc).await {
            self.log_failure("gc", &e);
        }
        true
    }

    /// Removes `.git/index.lock` when a killed git left it behind: it makes every reset fail,
    /// pinning runs to an old base. Called under the write lock, with the refresh lock held, so
    /// no git of the gateway's is working on the base; a lock younger than
    /// [`STALE_LOCK_AGE`] may be an operator's git and is left alone.
    async fn clear_stale_lock(&self) {
        let lock = self.dir.join(".git").join("index.lock");
        let Ok(meta) = tokio::fs::metadata(&lock).await else {
            return;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        if age < STALE_LOCK_AGE {
            return;
        }
        match tokio::fs::remove_file(&lock).await {
            Ok(()) => tracing::warn!(
                lock = %lock.display(),
                age_seconds = age.as_secs(),
                "removed a stale index.lock from the base (left by a git that was killed)"
            ),
            Err(error) => {
                tracing::warn!(lock = %lock.display(), %error, "could not remove a stale index.lock")
            }
        }
    }

    /// Clones the base again from the origin it had, when its directory was deleted at runtime.
    /// Under the write lock: no clone reads a half-made base.
    async fn clone_again(&self) -> bool {
        let _writing = self.tree.write().await;
        self.forget_head();
        let Some(url) = self.origin() else {
            tracing::error!(
                base = %self.dir.display(),
                "the workspace base is missing and its origin is unknown: runs fail until it is restored"
            );
            return false;
        };
        tracing::error!(base = %self.dir.display(), "the workspace base is missing; cloning it again from its origin");
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        let staging = parent.join(format!(".base-reclone-{}", uuid::Uuid::new_v4().simple()));
        let staging_arg = staging.to_string_lossy();
        let network = self.network_config().await;
        let mut clone: Vec<&str> = network.iter().map(String::as_str).collect();
        clone.extend(["clone", "--quiet", "--", url.as_str(), &staging_arg]);
        if let Err(e) = self.git.run(parent, clone).await {
            self.log_failure("clone again", &e);
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return false;
        }
        // Whatever is left where the base was (an empty directory, a tree without `.git`).
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        if let Err(error) = tokio::fs::rename(&staging, &self.dir).await {
            tracing::error!(base = %self.dir.display(), %error, "could not put the new clone of the base in place");
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return false;
        }
        tracing::warn!(base = %self.dir.display(), "the workspace base was cloned again from its origin");
        true
    }

    /// The `-c` settings that bound git's network operations: a stalled HTTP transfer
    /// ([`LOW_SPEED_SECONDS`]), and an ssh connection that does not come up or goes silent — unless
    /// the operator set `GIT_SSH_COMMAND`, `GIT_SSH` or `core.sshCommand`, which are kept.
    async fn network_config(&self) -> Vec<String> {
        let mut config = vec![
            "-c".to_owned(),
            format!("http.lowSpeedLimit={LOW_SPEED_BYTES}"),
            "-c".to_owned(),
            format!("http.lowSpeedTime={LOW_SPEED_SECONDS}"),
        ];
        let chosen_by_env = ["GIT_SSH_COMMAND", "GIT_SSH"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        let configured = self.is_present()
            && self
                .stdout(&["config", "--get", "core.sshCommand"])
                .await
                .is_some_and(|s| !s.trim().is_empty());
        if !chosen_by_env && !configured {
            config.push("-c".to_owned());
            config.push(format!("core.sshCommand={}", bounded_ssh_command()));
        }
        config
    }

    /// The origin URL learned so far.
    fn origin(&self) -> Option<String> {
        self.origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn log_failure(&self, step: &str, error: &CommandError) {
        tracing::warn!(
            base = %self.dir.display(),
            step,
            error = %error,
            stderr = error.stderr(),
            "base refresh failed; jobs use the last good base"
        );
    }

    /// The branch the base follows: the configured one, else the remote's default branch as
    /// recorded in `origin/HEAD`, else as the remote advertises it, else the upstream of the
    /// base's current branch.
    pub(crate) async fn remote_branch(&self) -> Option<String> {
        if let Some(branch) = &self.branch {
            return Some(branch.clone());
        }
        let recorded = [
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ];
        if let Some(branch) = self.stdout(&recorded).await.and_then(|s| strip_origin(&s)) {
            return Some(branch);
        }
        let network = self.network_config().await;
        let mut advertised: Vec<&str> = network.iter().map(String::as_str).collect();
        advertised.extend(["ls-remote", "--symref", "origin", "HEAD"]);
        if let Some(branch) = self
            .stdout(&advertised)
            .await
            .and_then(|s| advertised_head(&s))
        {
            return Some(branch);
        }
        let upstream = [
            "rev-parse",
            "--abbrev-ref",
            "--symbolic-full-name",
            "@{upstream}",
        ];
        self.stdout(&upstream).await.and_then(|s| strip_origin(&s))
    }

    /// The base's `origin` URL, which every workspace gets as its own (and remembered, to
    /// clone the base again from should it vanish).
    pub(crate) async fn origin_url(&self) -> Option<String> {
        let url = self
            .stdout(&["remote", "get-url", "origin"])
            .await
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())?;
        *self
            .origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(url.clone());
        Some(url)
    }

    /// What a successful git command in the base printed; `None` when it failed.
    async fn stdout(&self, args: &[&str]) -> Option<String> {
        self.git
            .run(&self.dir, args)
            .await
            .ok()
            .map(|out| out.stdout)
    }
}

/// `ssh` for git when nobody chose one: a connection attempt gives up after
/// [`SSH_CONNECT_SECONDS`], a silent server after three unanswered keep-alives, and nothing waits
/// on a prompt.
fn bounded_ssh_command() -> String {
    format!(
        "ssh -o ConnectTimeout={SSH_CONNECT_SECONDS} -o ServerAliveInterval=10 -o ServerAliveCountMax=3 -o BatchMode=yes"
    )
}

/// `origin/main` → `main`.
fn strip_origin(short_ref: &str) -> Option<String> {
    short_ref
        .trim()
        .strip_prefix("origin/")
        .filter(|b| !b.is_empty() && *b != "HEAD")
        .map(str::to_owned)
}

/// The branch in `git ls-remote --symref origin HEAD` output (`ref: refs/heads/main\tHEAD`).
fn advertised_head(listing: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let (target, name) = line.strip_prefix("ref: ")?.split_once('\t')?;
        let branch = target.strip_prefix("refs/heads/")?;
        (name.trim() == "HEAD" && !branch.is_empty()).then(|| branch.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn git_network_operations_are_bounded_unless_the_operator_chose_an_ssh_command() {
        let dir = tempfile::tempdir().unwrap();
        let git = Tool::new(PathBuf::from("git"), Duration::from_secs(10));
        git.run(dir.path(), ["init", "-q"]).await.unwrap();
        let base = Base::new(dir.path().to_path_buf(), git.clone(), None, Duration::ZERO);
        let config = base.network_config().await.join(" ");
        assert!(config.contains("http.lowSpeedTime=20"), "{config}");
        if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
            assert!(config.contains("ConnectTimeout=20"), "{config}");
        }
        git.run(
            dir.path(),
            ["config", "core.sshCommand", "ssh -i /keys/deploy"],
        )
        .await
        .unwrap();
        let config = base.network_config().await.join(" ");
        assert!(!config.contains("core.sshCommand"), "{config}");
    }

    #[test]
    fn branch_names_are_read_from_git_output() {
        assert_eq!(strip_origin("origin/trunk\n").as_deref(), Some("trunk"));
        assert_eq!(
            strip_origin("origin/release/1.2").as_deref(),
            Some("release/1.2")
        );
        assert_eq!(strip_origin("upstream/main"), None);
        assert_eq!(strip_origin("origin/HEAD"), None);

        let listing =
            "ref: refs/heads/main\tHEAD\n0123456789abcdef0123456789abcdef01234567\tHEAD\n";
        assert_eq!(advertised_head(listing).as_deref(), Some("main"));
        assert_eq!(advertised_head("0123\tHEAD\n"), None);
    }
}
