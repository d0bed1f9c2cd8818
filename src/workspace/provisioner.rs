//! The gateway's [`Provision`] strategy: a fresh clone of the warm base per job, or an empty
//! scratch directory when there is no base.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_layers::workspace::{Provision, ProvisionFuture};
use gateway_layers::BoxError;

use crate::contain::{remove_tree, tmpdir_of, Cells, Containment, Mode as ContainMode, RunCell};

use super::base::Base;
use super::cleanup::{self, fresh_name, home_for, is_workspace_name, remove_detached, PendingDir};
use super::git::Tool;

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
    /// Who each run is, when runs are contained (the gateway always contains them; an embedder
    /// using the provisioner alone gets plain directories).
    contained: Option<Contained>,
}

/// What the provisioner needs to give each run its own identity, workspace and HOME.
#[derive(Debug, Clone)]
pub(crate) struct Contained {
    /// Leases each run its cell (a uid, or a marker).
    pub(crate) containment: Arc<Containment>,
    /// Where each run's cell is filed for the agent to find, by workspace.
    pub(crate) cells: Arc<Cells>,
    /// The operator's CLI login, copied into each run's HOME when it exists.
    pub(crate) credentials: Option<PathBuf>,
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
        Self::with_containment(config, None).await
    }

    /// [`new`](Self::new), giving each run a cell from `contained`: the workspace and a private
    /// HOME beside it are the run's (its uid's, in uid mode), and releasing the workspace first
    /// kills everything the run started. In uid mode `jobs_dir` is made traversable but not
    /// listable (0711), so a run reaches its own directories by name and no one else's.
    pub(crate) async fn with_containment(
        config: WorkspaceConfig,
        contained: Option<Contained>,
    ) -> Result<Self, WorkspaceError> {
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
        if let Some(contained) = &contained {
            if contained.containment.mode() == ContainMode::Uid {
                open_to_runs(&jobs_dir)?;
            }
        }
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
            inner: Arc::new(Inner {
                jobs_dir,
                mode,
                contained,
            }),
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
}

impl Inner {
    async fn provision(&self) -> Result<PathBuf, WorkspaceError> {
        let started = Instant::now();
        // First, so a run that cannot have an identity costs no clone.
        let cell = match &self.contained {
            Some(contained) => Some(
                contained
                    .containment
                    .lease()
                    .await
                    .map_err(|e| WorkspaceError::new("no identity for the run", e))?,
            ),
            None => None,
        };
        let pending = PendingDir::new(self.jobs_dir.join(fresh_name()));
        match &self.mode {
            Mode::Scratch => create_scratch(pending.path()).await?,
            Mode::Git {
                base,
                git,
                git_crypt,
                key,
            } => {
                base.ensure_fresh().await;
                {
                    let _reading = base.read().await;
                    clone_local(git, base.dir(), pending.path()).await?;
                }
                match base.origin_url().await {
                    Some(url) => set_origin(git, pending.path(), &url).await?,
                    None => {
                        tracing::debug!(base = %base.dir().display(), "base has no origin; workspace keeps the base as origin")
                    }
                }
                if key_present(key).await {
                    git_crypt_unlock(git_crypt, pending.path(), key).await?;
                }
            }
        }
        if let (Some(cell), Some(contained)) = (cell, &self.contained) {
            let home = PendingDir::new(home_for(pending.path()));
            let workspace = pending.path().to_path_buf();
            let home_dir = home.path().to_path_buf();
            let credentials = contained.credentials.clone();
            // Walks the tree and makes directories: blocking work, off the runtime's threads.
            let cell = tokio::task::spawn_blocking(move || {
                give_to_run(&cell, &workspace, &home_dir, credentials.as_deref()).map(|()| cell)
            })
            .await
            .map_err(|e| WorkspaceError::new("preparing the run's directories failed", e))??;
            contained
                .cells
                .insert(pending.path().to_path_buf(), cell, home.keep());
        }
        let path = pending.keep();
        tracing::debug!(path = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "workspace provisioned");
        Ok(path)
    }

    /// Only directories this provisioner hands out are removed, whatever path it is given.
    fn owns(&self, path: &Path) -> bool {
        path.parent() == Some(self.jobs_dir.as_path())
            && path.file_name().is_some_and(is_workspace_name)
    }
}

impl Provision for GitProvisioner {
    fn provision(&self) -> ProvisionFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.provision().await.map_err(Into::into) })
    }

    fn release(&self, path: PathBuf) {
        if self.inner.owns(&path) {
            // Everything the run started dies before its directories go, and before the run's
            // slot is given back (this runs while the run still holds it).
            if let Some(contained) = &self.inner.contained {
                if let Some(home) = contained.cells.release(&path) {
                    remove_detached(home);
                }
            }
            remove_detached(path);
        } else {
            tracing::warn!(path = %path.display(), "refusing to remove a path that is not a workspace of this provisioner");
        }
    }
}

/// Hands a freshly made workspace to its run, and makes the run's HOME (with a private TMPDIR
/// inside, and the operator's CLI login when there is one).
fn give_to_run(
    cell: &RunCell,
    workspace: &Path,
    home: &Path,
    credentials: Option<&Path>,
) -> Result<(), WorkspaceError> {
    let step = |what: &str, path: &Path| format!("{what} {}", path.display());
    // `git-crypt unlock` leaves a copy of the key in the clone: a run must never hold it. Its
    // files stay decrypted; git-crypt's filters cannot re-encrypt without the key, so the run's
    // own git commands on encrypted paths fail instead of leaking it.
    let keys = workspace.join(".git/git-crypt/keys");
    remove_tree(&keys).map_err(|e| {
        WorkspaceError::new(
            step("could not remove the git-crypt key from", workspace),
            e,
        )
    })?;
    cell.hand_over(workspace).map_err(|e| {
        WorkspaceError::new(step("could not hand over the workspace", workspace), e)
    })?;
    cell.make_home(home)
        .map_err(|e| WorkspaceError::new(step("could not make the run's HOME", home), e))?;
    let tmp = tmpdir_of(home);
    cell.make_home(&tmp)
        .map_err(|e| WorkspaceError::new(step("could not make the run's TMPDIR", &tmp), e))?;
    if let Some(source) = credentials {
        cell.install_credentials(source, home)
            .map_err(|e| WorkspaceError::new(step("could not copy the CLI login into", home), e))?;
    }
    Ok(())
}

/// In uid mode: `jobs_dir` becomes 0711 (runs reach their own directories by name, list
/// nothing), and every directory above it must let others through, or no run could reach its
/// workspace; that is refused at start-up with the directory to fix.
fn open_to_runs(jobs_dir: &Path) -> Result<(), WorkspaceError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(jobs_dir, std::fs::Permissions::from_mode(0o711)).map_err(|e| {
        WorkspaceError::new(
            format!("could not make {} traversable for runs", jobs_dir.display()),
            e,
        )
    })?;
    for dir in jobs_dir.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .map_err(|e| WorkspaceError::new(format!("could not read {}", dir.display()), e))?;
        if mode & 0o001 == 0 {
            return Err(WorkspaceError::new(
                format!("JOBS_DIR {} is out of the runs' reach", jobs_dir.display()),
                format!(
                    "{} (mode {:o}) does not let other users through; give it o+x or move JOBS_DIR",
                    dir.display(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
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
    let leftovers = cleanup::find_leftovers(jobs_dir).await.map_err(|e| {
        WorkspaceError::new(
            format!("could not read jobs directory {}", jobs_dir.display()),
            e,
        )
    })?;
    if !leftovers.is_empty() {
        let found = leftovers.len();
        let removed = cleanup::remove_all(leftovers).await;
        tracing::info!(found, removed, jobs_dir = %jobs_dir.display(), "removed leftover workspaces of an earlier run");
    }
    Ok(())
}

// Settings of the git provisioner.

/// Where workspaces come from and where they go.
///
/// [`Default`] gives the contract's values (`WORKSPACE_DIR=/workspace/infra`,
/// `JOBS_DIR=/workspace/jobs`, `GIT_CRYPT_KEY=/secrets/git-crypt/key`,
/// `FETCH_DEBOUNCE_SECONDS=15`).
#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    /// The warm base clone every workspace is cloned from (`WORKSPACE_DIR`). `None`, or a
    /// directory missing at start-up, means scratch mode: each job gets an empty directory.
    pub base_dir: Option<PathBuf>,
    /// Where per-job workspaces are created (`JOBS_DIR`); created at start-up if missing.
    pub jobs_dir: PathBuf,
    /// When this file exists, each workspace runs `git-crypt unlock` with it (`GIT_CRYPT_KEY`).
    /// Checked at every provision, so a secret mounted late is still picked up.
    pub git_crypt_key: PathBuf,
    /// A burst of jobs shares one refresh of the base: it is refreshed at most once per window
    /// (`FETCH_DEBOUNCE_SECONDS`). Zero refreshes before every job.
    pub fetch_debounce: Duration,
    /// The remote branch the base is reset to. `None` follows the remote's default branch
    /// (`origin/HEAD`, else what the remote advertises, else the base branch's upstream).
    pub base_branch: Option<String>,
    /// The `git` executable.
    pub git_bin: PathBuf,
    /// The `git-crypt` executable.
    pub git_crypt_bin: PathBuf,
    /// Upper bound of any one git or git-crypt command; past it the command is killed.
    pub command_timeout: Duration,
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        Self {
            base_dir: Some(PathBuf::from("/workspace/infra")),
            jobs_dir: PathBuf::from("/workspace/jobs"),
            git_crypt_key: PathBuf::from("/secrets/git-crypt/key"),
            fetch_debounce: Duration::from_secs(15),
            base_branch: None,
            git_bin: PathBuf::from("git"),
            git_crypt_bin: PathBuf::from("git-crypt"),
            command_timeout: Duration::from_secs(120),
        }
    }
}

// The error a failed provision or start-up reports.

/// A workspace could not be set up: says which step, on which paths, and why.
///
/// The message carries the cause (`clone of /base into /jobs/ws-… failed: `git clone …` failed
/// (exit status: 128): fatal: …`); the cause is also available through
/// [`source`](std::error::Error::source), typically a [`CommandError`](super::CommandError) or
/// an [`io::Error`](std::io::Error).
#[derive(Debug)]
pub struct WorkspaceError {
    /// The step that failed, with its paths.
    step: String,
    /// Why it failed.
    cause: BoxError,
}

impl WorkspaceError {
    pub(crate) fn new(step: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        Self {
            step: step.into(),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for WorkspaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.cause)
    }
}

impl std::error::Error for WorkspaceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

// Scratch mode: without a base repository, a workspace is an empty directory.

/// Creates the empty directory `dest`; fails if anything already exists there, so two jobs can
/// never share one.
async fn create_scratch(dest: &Path) -> Result<(), WorkspaceError> {
    tokio::fs::create_dir(dest).await.map_err(|e| {
        WorkspaceError::new(
            format!("could not create scratch workspace {}", dest.display()),
            e,
        )
    })
}

// Cloning a workspace from the warm base.

/// `git clone --local <base> <dest>`: the object store is hardlinked, so the cost is the
/// checkout of the working tree, not a copy of history. The clone checks out the base's
/// current branch, which a refresh has just reset to the remote branch.
async fn clone_local(git: &Tool, base: &Path, dest: &Path) -> Result<(), WorkspaceError> {
    let cwd = dest.parent().unwrap_or(Path::new("/"));
    let args: [&OsStr; 6] = [
        OsStr::new("clone"),
        OsStr::new("--local"),
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

/// Whether the key file is present. Asked at every provision, so a key mounted after start-up
/// is used, and one removed is no longer tried.
async fn key_present(key: &Path) -> bool {
    tokio::fs::metadata(key).await.is_ok_and(|m| m.is_file())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_an_empty_directory_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let dest = root.path().join("ws");
        create_scratch(&dest).await.expect("created");
        assert_eq!(std::fs::read_dir(&dest).expect("dir").count(), 0);

        let err = create_scratch(&dest).await.expect_err("already exists");
        assert!(
            err.to_string()
                .starts_with("could not create scratch workspace"),
            "{err}"
        );
    }
}
