//! Removing workspaces without making anyone wait for it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a removal is retried. A git process killed a moment ago may still be writing into
/// the directory, which makes the first `remove_dir_all` fail with "directory not empty".
const ATTEMPTS: u32 = 3;

/// Pause between attempts, long enough for a killed process to be gone.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Removes `path` and everything under it in the background, logging a failure.
///
/// Returns at once: on the current tokio runtime when there is one, else on a new thread, so it
/// is safe to call from `Drop` anywhere.
pub(crate) fn remove_detached(path: PathBuf) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let mut attempt = 1;
                loop {
                    match tokio::fs::remove_dir_all(&path).await {
                        Ok(()) => return,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                        Err(e) if attempt >= ATTEMPTS => return log_failure(&path, &e),
                        Err(_) => tokio::time::sleep(RETRY_PAUSE * attempt).await,
                    }
                    attempt += 1;
                }
            });
        }
        Err(_) => {
            let spawned = std::thread::Builder::new()
                .name("workspace-release".into())
                .spawn(move || remove_blocking(&path));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start a thread to remove a workspace");
            }
        }
    }
}

/// The thread fallback of [`remove_detached`], with the same retries.
fn remove_blocking(path: &Path) {
    let mut attempt = 1;
    loop {
        match std::fs::remove_dir_all(path) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if attempt >= ATTEMPTS => return log_failure(path, &e),
            Err(_) => std::thread::sleep(RETRY_PAUSE * attempt),
        }
        attempt += 1;
    }
}

fn log_failure(path: &Path, error: &io::Error) {
    tracing::warn!(path = %path.display(), error = %error, "could not remove workspace");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until `path` no longer exists.
    fn wait_gone(path: &Path) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while path.exists() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
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
