//! Removing workspaces without making anyone wait for it.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use crate::contain::{remove_tree, remove_tree_async};

/// Removes `path` and everything under it in the background, logging a failure.
///
/// Returns at once: on the current tokio runtime's blocking pool when there is one, else on a new
/// thread, so it is safe to call from `Drop` anywhere. The removal itself is
/// [`remove_tree`], which retries what a process killed a moment ago can still make fail.
pub(crate) fn remove_detached(path: PathBuf) {
    let remove = move || {
        if let Err(error) = remove_tree(&path) {
            tracing::warn!(path = %path.display(), %error, "could not remove a run's directory");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(remove);
        }
        Err(_) => {
            let spawned = std::thread::Builder::new()
                .name("workspace-release".into())
                .spawn(remove);
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start a thread to remove a workspace");
            }
        }
    }
}

/// A workspace directory being set up: removed (in the background) unless [`keep`](Self::keep)
/// is called, so a failed clone or a provision future dropped mid-clone leaves nothing behind.
#[derive(Debug)]
pub(crate) struct PendingDir {
    /// The directory; `None` once handed over.
    path: Option<PathBuf>,
}

impl PendingDir {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or_else(|| Path::new(""))
    }

    /// The workspace is complete: its owner now releases it.
    pub(crate) fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_detached(path);
        }
    }
}

// Finding and removing the workspaces an earlier process left behind (a crash, a `SIGKILL`).

/// The run directories (workspaces and their HOMEs) and the pool directory directly under `jobs_dir`: real directories
/// (not symlinks, not files) whose name is one this provisioner generates. Anything else is never
/// touched.
pub(crate) async fn find_leftovers(jobs_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut entries = tokio::fs::read_dir(jobs_dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        // `DirEntry::file_type` does not follow symlinks: a `ws-…` link to elsewhere is kept.
        let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
        if is_dir && (is_run_dir_name(&entry.file_name()) || entry.file_name() == POOL_DIR) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Removes `dirs`, logging each failure; returns how many were removed.
pub(crate) async fn remove_all(dirs: Vec<PathBuf>) -> usize {
    let mut removed = 0;
    for dir in dirs {
        match remove_tree_async(dir.clone()).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "could not remove a leftover run directory")
            }
        }
    }
    removed
}

// Names of run directories: unique, and recognisable so a later process can sweep them.

/// Every workspace directory is named `ws-<uuid>`; nothing else under `JOBS_DIR` is ever removed,
/// except the run's HOME beside it, `home-<the same uuid>`.
const PREFIX: &str = "ws-";

/// The directory under `JOBS_DIR` holding the warm pool's checkouts (only the gateway can open
/// it); swept whole at start-up.
pub(crate) const POOL_DIR: &str = ".pool";

/// The prefix of a run's HOME.
const HOME_PREFIX: &str = "home-";

/// A fresh, unique workspace directory name.
pub(crate) fn fresh_name() -> String {
    format!("{PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// The HOME of the run that works in `workspace` (`…/ws-<id>` gives `…/home-<id>`).
pub(crate) fn home_for(workspace: &Path) -> PathBuf {
    let id = workspace
        .file_name()
        .and_then(OsStr::to_str)
        .and_then(|n| n.strip_prefix(PREFIX))
        .unwrap_or_default();
    workspace.with_file_name(format!("{HOME_PREFIX}{id}"))
}

/// Whether `name` is one [`fresh_name`] could have produced (prefix and a well-formed uuid), so an
/// operator's `ws-notes` directory is not taken for a leftover.
pub(crate) fn is_workspace_name(name: &OsStr) -> bool {
    has_id_after(name, PREFIX)
}

/// Whether `name` names a workspace or a run's HOME.
fn is_run_dir_name(name: &OsStr) -> bool {
    has_id_after(name, PREFIX) || has_id_after(name, HOME_PREFIX)
}

fn has_id_after(name: &OsStr, prefix: &str) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(prefix))
        .is_some_and(|id| id.len() == 32 && uuid::Uuid::try_parse(id).is_ok())
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn fresh_names_are_recognised_and_distinct() {
        let (a, b) = (fresh_name(), fresh_name());
        assert_ne!(a, b);
        assert!(is_workspace_name(OsStr::new(&a)));
        let home = home_for(Path::new(&format!("/jobs/{a}")));
        assert_eq!(
            home,
            Path::new(&format!("/jobs/home-{}", a.trim_start_matches("ws-")))
        );
        assert!(is_run_dir_name(home.file_name().unwrap()));
        assert!(!is_workspace_name(home.file_name().unwrap()));
    }

    #[test]
    fn other_names_are_not_workspaces() {
        for name in [
            "ws-",
            "ws-notes",
            "workspace",
            "x-0123456789abcdef0123456789abcdef",
        ] {
            assert!(!is_workspace_name(OsStr::new(name)), "{name}");
        }
        assert!(!is_workspace_name(OsStr::new(
            "ws-01234567-89ab-cdef-0123-456789abcdef"
        )));
    }
}

#[cfg(test)]
mod release_tests {
    use super::*;

    /// Waits (bounded) until `path` no longer exists.
    fn wait_gone(path: &Path) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while path.exists() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    fn filled_dir(root: &Path) -> PathBuf {
        let dir = root.join("ws");
        std::fs::create_dir_all(dir.join("a/b")).expect("mkdir");
        std::fs::write(dir.join("a/b/file"), "x").expect("write");
        dir
    }

    #[test]
    fn removal_works_without_a_runtime() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = filled_dir(root.path());
        remove_detached(dir.clone());
        assert!(wait_gone(&dir));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removal_runs_on_the_runtime() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = filled_dir(root.path());
        remove_detached(dir.clone());
        let gone = tokio::task::spawn_blocking(move || wait_gone(&dir)).await;
        assert!(gone.expect("join"));
    }

    #[test]
    fn pending_dir_is_removed_unless_kept() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = filled_dir(root.path());
        drop(PendingDir::new(dir.clone()));
        assert!(wait_gone(&dir));

        let kept = filled_dir(root.path());
        assert_eq!(PendingDir::new(kept.clone()).keep(), kept);
        assert!(kept.exists());
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[tokio::test]
    async fn only_workspace_directories_are_swept() {
        let jobs = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let j = jobs.path();
        let leftover = j.join(fresh_name());
        std::fs::create_dir_all(leftover.join(".git/objects")).expect("mkdir");
        std::fs::write(leftover.join("main.tf"), "x").expect("write");
        let file_named_like_one = j.join(fresh_name());
        std::fs::write(&file_named_like_one, "not a dir").expect("write");
        let link_named_like_one = j.join(fresh_name());
        std::os::unix::fs::symlink(outside.path(), &link_named_like_one).expect("symlink");
        std::fs::write(outside.path().join("precious"), "keep").expect("write");
        std::fs::create_dir(j.join("ws-notes")).expect("mkdir");
        std::fs::create_dir(j.join("other")).expect("mkdir");

        let found = find_leftovers(j).await.expect("readable");
        assert_eq!(found, vec![leftover.clone()]);
        assert_eq!(remove_all(found).await, 1);

        assert!(!leftover.exists());
        assert!(file_named_like_one.is_file());
        assert!(link_named_like_one.join("precious").is_file());
        assert!(j.join("ws-notes").is_dir());
        assert!(j.join("other").is_dir());
    }
}
