//! The warm base clone: refreshed from its remote at most once per debounce window.
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, RwLock, RwLockReadGuard};

use super::git::{CommandError, Tool};

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
        }
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

    /// Refreshes the base unless that was done within the debounce window; if a refresh is
    /// running, waits for it instead of starting another. Never fails: a failed refresh is
    /// logged and the base stays as it was, the last good state.
    pub(crate) async fn ensure_fresh(self: &Arc<Self>) {
        let last = Arc::clone(&self.last_refresh).lock_owned().await;
        if last.is_some_and(|at| at.elapsed() < self.debounce) {
            return;
        }
        let this = Arc::clone(self);
        // The refresh runs as its own task holding the lock, so a provision cancelled while it
        // waits neither kills git halfway through a reset (leaving `index.lock` behind) nor
        // lets the next provision start a second refresh alongside.
        let refresh = tokio::spawn(async move {
            let mut last = last;
            if !this.refresh_now().await {
                this.failed_refreshes.fetch_add(1, Ordering::Relaxed);
            }
            *last = Some(Instant::now());
        });
        let _ = refresh.await;
    }

    /// Shared access for cloning: a refresh cannot rewrite the base meanwhile.
    pub(crate) async fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.tree.read().await
    }

    /// `git fetch origin --prune`, then reset the base to the remote branch. Returns whether
    /// the base is now up to date; failures are logged here with git's stderr.
    async fn refresh_now(&self) -> bool {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // Automatic gc after the fetch would delete objects a concurrent clone is linking; it
        // runs below, under the write lock, instead.
        let fetch = [
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
            "fetch",
            "origin",
            "--prune",
            "--quiet",
        ];
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
    async fn remote_branch(&self) -> Option<String> {
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
        let advertised = ["ls-remote", "--symref", "origin", "HEAD"];
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

    /// The base's `origin` URL, which every workspace gets as its own.
    pub(crate) async fn origin_url(&self) -> Option<String> {
        self.stdout(&["remote", "get-url", "origin"])
            .await
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
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
