//! Making one checkout of the warm base: clone, origin, git-crypt unlock, and handing it to the
//! run's identity. Used by a run that finds no ready checkout, and by the pool ahead of time.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::contain::{remove_tree, RunCell};

use super::base::Base;
use super::error::WorkspaceError;
use super::git::Tool;

/// Where checkouts come from, and the tools that make them.
#[derive(Debug)]
pub(crate) struct Source {
    /// The warm base and its refresh state.
    pub(crate) base: Arc<Base>,
    /// Runs `git` for the clone.
    pub(crate) git: Tool,
    /// Runs `git-crypt unlock`.
    pub(crate) git_crypt: Tool,
    /// The git-crypt key, used when the file exists.
    pub(crate) key: PathBuf,
}

/// What a checkout was made from: a pooled one is handed out only while both still hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Made {
    /// The base's commit it was cloned at (`None` when it could not be read).
    pub(crate) head: Option<Arc<str>>,
    /// Whether it was unlocked with the git-crypt key (the key file existed).
    pub(crate) unlocked: bool,
}

impl Source {
    /// Clones the base as it is into `dest` (which must not exist, or be empty), gives it the
    /// base's origin, and unlocks it when the key exists. `jobs_dir` decides whether objects
    /// can be hardlinked.
    pub(crate) async fn checkout(
        &self,
        jobs_dir: &Path,
        dest: &Path,
    ) -> Result<Made, WorkspaceError> {
        let head = {
            let hardlinks = self.base.hardlinks_to(jobs_dir).await;
            let reading = self.base.read().await;
            clone_local(&self.git, self.base.dir(), dest, hardlinks).await?;
            self.base.head(&reading).await
        };
        match self.base.origin_url().await {
            Some(url) => set_origin(&self.git, dest, &url).await?,
            None => {
                tracing::debug!(base = %self.base.dir().display(), "base has no origin; workspace keeps the base as origin")
            }
        }
        let unlocked = self.key_present().await;
        if unlocked {
            git_crypt_unlock(&self.git_crypt, dest, &self.key).await?;
        }
        Ok(Made { head, unlocked })
    }

    /// What a checkout made now would be made from.
    pub(crate) async fn now(&self) -> Made {
        let head = {
            let reading = self.base.read().await;
            self.base.head(&reading).await
        };
        Made {
            head,
            unlocked: self.key_present().await,
        }
    }

    /// Whether the key file is present. Asked at every provision, so a key mounted after
    /// start-up is used, and one removed is no longer tried.
    async fn key_present(&self) -> bool {
        tokio::fs::metadata(&self.key)
            .await
            .is_ok_and(|m| m.is_file())
    }
}

/// Makes the checkout at `workspace` the run's: removes the git-crypt key copy `git-crypt unlock`
/// leaves in it (a run must never hold the key; its files stay decrypted, and git-crypt's filters
/// cannot re-encrypt without it, so the run's own git commands on encrypted paths fail instead of
/// leaking it), then gives every entry to the run's identity. Blocking: walks the tree, which for a
/// large base is most of the cost of a run's start, so the pool does it ahead of time.
pub(crate) fn hand_to(cell: &RunCell, workspace: &Path) -> Result<(), WorkspaceError> {
    let keys = workspace.join(".git/git-crypt/keys");
    remove_tree(&keys).map_err(|e| {
        WorkspaceError::new(
            format!(
                "could not remove the git-crypt key from {}",
                workspace.display()
            ),
            e,
        )
    })?;
    cell.hand_over(workspace).map_err(|e| {
        WorkspaceError::new(
            format!("could not hand over the workspace {}", workspace.display()),
            e,
        )
    })
}

/// `git clone --local <base> <dest>`: the object store is hardlinked, so the cost is the
/// checkout of the working tree, not a copy of history; `--no-hardlinks` (a copy) when
/// `hardlinks` is false, as across filesystems. The clone checks out the base's
/// current branch, which a refresh has just reset to the remote branch.
async fn clone_local(
    git: &Tool,
    base: &Path,
    dest: &Path,
    hardlinks: bool,
) -> Result<(), WorkspaceError> {
    let cwd = dest.parent().unwrap_or(Path::new("/"));
    let link = if hardlinks {
        "--local"
    } else {
        "--no-hardlinks"
    };
    let args: [&OsStr; 6] = [
        OsStr::new("clone"),
        OsStr::new(link),
        OsStr::new("--quiet"),
        OsStr::new("--"),
        base.as_os_str(),
        dest.as_os_str(),
    ];
    git.run(cwd, args).await.map(drop).map_err(|e| {
        WorkspaceError::new(
            format!("clone of {} into {} failed", base.display(), dest.display()),
            e,
        )
    })
}

/// Points the clone's `origin` at the base's own remote, so `git fetch`/`git push` in the
/// workspace talk to the real repository rather than to the shared base directory.
async fn set_origin(git: &Tool, dest: &Path, url: &str) -> Result<(), WorkspaceError> {
    git.run(dest, ["remote", "set-url", "origin", url])
        .await
        .map(drop)
        .map_err(|e| {
            WorkspaceError::new(
                format!("setting the origin of {} failed", dest.display()),
                e,
            )
        })
}

// Decrypting a workspace's git-crypt files with the deployment's key.

/// Runs `git-crypt unlock <key>` in `workspace`.
///
/// Failing here fails the provision: an agent working on ciphertext would produce wrong
/// results without anyone noticing.
async fn git_crypt_unlock(
    git_crypt: &Tool,
    workspace: &Path,
    key: &Path,
) -> Result<(), WorkspaceError> {
    git_crypt
        .run(workspace, [OsStr::new("unlock"), key.as_os_str()])
        .await
        .map(drop)
        .map_err(|e| {
            WorkspaceError::new(
                format!(
                    "git-crypt unlock of {} with key {} failed",
                    workspace.display(),
                    key.display()
                ),
                e,
            )
        })
}
