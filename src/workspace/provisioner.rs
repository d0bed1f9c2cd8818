//! The gateway's [`Provision`] strategy: a fresh clone of the warm base per job, or an empty
//! scratch directory when there is no base.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use gateway_layers::workspace::{Provision, ProvisionFuture};

use super::base::Base;
use super::config::WorkspaceConfig;
use super::error::WorkspaceError;
use super::git::Tool;
use super::release::{remove_detached, PendingDir};
use super::{clone, git_crypt, name, scratch, sweep};

/// Hands out per-job workspaces under `JOBS_DIR` and removes them afterwards.
///
/// Cheap to clone; clones share the base, its refresh state and the counters.
#[derive(Debug, Clone)]
pub struct GitProvisioner {
    /// Shared with every provision future, which must be `'static`.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Where workspaces are created, made absolute.
    jobs_dir: PathBuf,
    /// Clone from a base, or hand out empty directories.
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// No base repository: empty directories.
    Scratch,
    /// Clones of a base repository.
    Git {
        /// The warm base and its refresh state.
        base: Arc<Base>,
        /// Runs `git` for the clone.
        git: Tool,
        /// Runs `git-crypt unlock`.
        git_crypt: Tool,
        /// The git-crypt key, used when the file exists.
        key: PathBuf,
    },
}

/// Counters of the provisioner's work, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvisionerStats {
    /// `git fetch` runs of the base started (successful or not).
    pub fetches: u64,
    /// Refreshes that failed, after which jobs used the base as it was.
    pub failed_refreshes: u64,
}

impl GitProvisioner {
    /// Sets up the provisioner: creates `jobs_dir` if missing, and removes the workspaces an
    /// earlier process left there (`ws-<uuid>` directories only; nothing else is touched) before
    /// this one can create any.
    ///
    /// Without a base directory (unset, or missing at start-up) it runs in scratch mode, which
    /// is logged at info. Does no git work: the first provision refreshes the base.
    ///
    /// # Errors
    /// When `jobs_dir` cannot be created or read, or the base branch is not a branch name.
    pub async fn new(config: WorkspaceConfig) -> Result<Self, WorkspaceError> {
        if let Some(branch) = &config.base_branch {
            if branch.is_empty()
                || branch.starts_with('-')
                || branch.chars().any(char::is_whitespace)
            {
                return Err(WorkspaceError::new(
                    "invalid base branch",
                    format!("{branch:?} is not a branch name"),
                ));
            }
        }
        let jobs_dir = absolute(&config.jobs_dir)?;
        tokio::fs::create_dir_all(&jobs_dir).await.map_err(|e| {
            WorkspaceError::new(
                format!("could not create jobs directory {}", jobs_dir.display()),
                e,
            )
        })?;
        sweep_leftovers(&jobs_dir).await?;

        let base_dir = match &config.base_dir {
            Some(dir) => Some((
                absolute(dir)?,
                tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()),
            )),
            None => None,
        };
        let mode = match base_dir {
            None => {
                tracing::info!(
                    "no workspace base directory configured: jobs get an empty scratch directory"
                );
                Mode::Scratch
            }
            Some((dir, false)) => {
                tracing::info!(
                    base = %dir.display(),
                    "workspace base directory does not exist: jobs get an empty scratch directory"
                );
                Mode::Scratch
            }
            Some((dir, true)) => {
                let git = Tool::new(config.git_bin.clone(), config.command_timeout);
                let base = Base::new(
                    dir,
                    git.clone(),
                    config.base_branch.clone(),
                    config.fetch_debounce,
                );
                Mode::Git {
                    base: Arc::new(base),
                    git,
                    git_crypt: Tool::new(config.git_crypt_bin.clone(), config.command_timeout),
                    key: absolute(&config.git_crypt_key)?,
                }
            }
        };
        Ok(Self {
            inner: Arc::new(Inner { jobs_dir, mode }),
        })
    }

    /// Whether jobs get empty directories because there is no base repository.
    pub fn is_scratch(&self) -> bool {
        matches!(self.inner.mode, Mode::Scratch)
    }

    /// The directory workspaces are created in (absolute).
    pub fn jobs_dir(&self) -> &Path {
        &self.inner.jobs_dir
    }

    /// Counters of the work done so far.
    pub fn stats(&self) -> ProvisionerStats {
        match &self.inner.mode {
            Mode::Scratch => ProvisionerStats::default(),
            Mode::Git { base, .. } => ProvisionerStats {
                fetches: base.fetches(),
                failed_refreshes: base.failed_refreshes(),
            },
        }
    }

    /// Creates a workspace, like [`Provision::provision`] but with the typed error.
    ///
    /// Dropping the future part-way kills the running git command and removes the partial
    /// directory.
    ///
    /// # Errors
    /// When the clone, setting its origin, or `git-crypt unlock` fails; a failed refresh of
    /// the base is not an error (the job uses the last good base).
    pub async fn provision_workspace(&self) -> Result<PathBuf, WorkspaceError> {
        self.inner.provision().await
    }
}

impl Inner {
    async fn provision(&self) -> Result<PathBuf, WorkspaceError> {
        let started = Instant::now();
        let pending = PendingDir::new(self.jobs_dir.join(name::fresh()));
        match &self.mode {
            Mode::Scratch => scratch::create(pending.path()).await?,
            Mode::Git {
                base,
                git,
                git_crypt,
                key,
            } => {
                base.ensure_fresh().await;
                {
                    let _reading = base.read().await;
                    clone::clone_local(git, base.dir(), pending.path()).await?;
                }
                match base.origin_url().await {
                    Some(url) => clone::set_origin(git, pending.path(), &url).await?,
                    None => {
                        tracing::debug!(base = %base.dir().display(), "base has no origin; workspace keeps the base as origin")
                    }
                }
                if git_crypt::key_present(key).await {
                    git_crypt::unlock(git_crypt, pending.path(), key).await?;
                }
            }
        }
        let path = pending.keep();
        tracing::debug!(path = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "workspace provisioned");
        Ok(path)
    }

    /// Only directories this provisioner hands out are removed, whatever path it is given.
    fn owns(&self, path: &Path) -> bool {
        path.parent() == Some(self.jobs_dir.as_path())
            && path.file_name().is_some_and(name::is_workspace)
    }
}

impl Provision for GitProvisioner {
    fn provision(&self) -> ProvisionFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.provision().await.map_err(Into::into) })
    }

    fn release(&self, path: PathBuf) {
        if self.inner.owns(&path) {
            remove_detached(path);
        } else {
            tracing::warn!(path = %path.display(), "refusing to remove a path that is not a workspace of this provisioner");
        }
    }
}

/// `path` made absolute against the current directory, so clones and `git-crypt` (which run
/// in other directories) see the same files.
fn absolute(path: &Path) -> Result<PathBuf, WorkspaceError> {
    std::path::absolute(path)
        .map_err(|e| WorkspaceError::new(format!("invalid path {}", path.display()), e))
}

/// Removes the workspaces left in `jobs_dir` by an earlier process. Runs before the provisioner
/// exists, so it can never remove a workspace of this process.
async fn sweep_leftovers(jobs_dir: &Path) -> Result<(), WorkspaceError> {
    let leftovers = sweep::find_leftovers(jobs_dir).await.map_err(|e| {
        WorkspaceError::new(
            format!("could not read jobs directory {}", jobs_dir.display()),
            e,
        )
    })?;
    if !leftovers.is_empty() {
        let found = leftovers.len();
        let removed = sweep::remove_all(leftovers).await;
        tracing::info!(found, removed, jobs_dir = %jobs_dir.display(), "removed leftover workspaces of an earlier run");
    }
    Ok(())
}
