//! The gateway's [`Provision`] strategy: a fresh clone of the warm base per job, or an empty
//! scratch directory when there is no base.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gateway_layers::workspace::{Provision, ProvisionFuture};

use crate::contain::{tmpdir_of, Cells, Containment, Mode as ContainMode, RunCell};
use crate::metrics::{Checkout, Metrics, Take};

use super::base::Base;
use super::checkout::{hand_to, Source};
use super::cleanup::{self, fresh_name, home_for, is_workspace_name, remove_detached, PendingDir};
use super::error::WorkspaceError;
use super::git::Tool;
use super::pool::{recordable, usable, Lent, Pool};

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
    /// Checkouts made ahead of time; `None` when the pool size is 0 or there is no base.
    pool: Option<Arc<Pool>>,
    /// Where takes and timings are recorded (the gateway's own metrics).
    metrics: Option<Metrics>,
    /// The recyclable checkouts out with runs, by workspace: they go back to the pool at release.
    lent: Mutex<HashMap<PathBuf, Lent>>,
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
    Git(Arc<Source>),
}

/// Counters of the provisioner's work, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvisionerStats {
    /// `git fetch` runs of the base started (successful or not).
    pub fetches: u64,
    /// Refreshes that failed, after which jobs used the base as it was.
    pub failed_refreshes: u64,
    /// Checkouts ready in the warm pool now.
    pub pool_ready: usize,
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
        Self::with_containment(config, None, None).await
    }

    /// [`new`](Self::new), giving each run a cell from `contained`: the workspace and a private
    /// HOME beside it are the run's (its uid's, in uid mode), and releasing the workspace first
    /// kills everything the run started. In uid mode `jobs_dir` is made traversable but not
    /// listable (0711), so a run reaches its own directories by name and no one else's.
    ///
    /// With a base and a pool size above 0, starts filling the warm pool (see [`super::pool`]);
    /// `metrics` then shows it.
    pub(crate) async fn with_containment(
        config: WorkspaceConfig,
        contained: Option<Contained>,
        metrics: Option<Metrics>,
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
                Mode::Git(Arc::new(Source {
                    base: Arc::new(base),
                    git,
                    git_crypt: Tool::new(config.git_crypt_bin.clone(), config.command_timeout),
                    key: absolute(&config.git_crypt_key)?,
                }))
            }
        };
        let pool = match &mode {
            Mode::Git(source) if config.pool_size > 0 => {
                let pool = Arc::new(Pool::new(
                    &jobs_dir,
                    config.pool_size,
                    config.pool_min_free_bytes,
                    config.pool_recycle,
                )?);
                let containment = contained.as_ref().map(|c| Arc::clone(&c.containment));
                pool.start(
                    Arc::clone(source),
                    jobs_dir.clone(),
                    containment,
                    metrics.clone(),
                );
                if let Some(metrics) = &metrics {
                    metrics.watch_pool(pool.clone());
                }
                Some(pool)
            }
            _ => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                jobs_dir,
                mode,
                contained,
                pool,
                metrics,
                lent: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// What takes runs' changes from this provisioner's checkouts (and delivers them); `None`
    /// in scratch mode, where there is no repository to take them from.
    pub(crate) fn harvester(&self, settings: super::HarvestSettings) -> Option<super::Harvester> {
        match &self.inner.mode {
            Mode::Scratch => None,
            Mode::Git(source) => Some(super::Harvester::new(
                Arc::clone(source),
                self.inner.jobs_dir.clone(),
                self.inner.contained.as_ref().map(|c| Arc::clone(&c.cells)),
                settings,
            )),
        }
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
        let pool_ready = self.inner.pool.as_ref().map_or(0, |pool| {
            crate::metrics::PoolGauges::snapshot(&**pool).ready
        });
        match &self.inner.mode {
            Mode::Scratch => ProvisionerStats::default(),
            Mode::Git(source) => ProvisionerStats {
                fetches: source.base.fetches(),
                failed_refreshes: source.base.failed_refreshes(),
                pool_ready,
            },
        }
    }
}

impl Inner {
    async fn provision(&self) -> Result<PathBuf, WorkspaceError> {
        let started = Instant::now();
        let pending = PendingDir::new(self.jobs_dir.join(fresh_name()));
        // A pooled checkout comes with its cell, already handed over; otherwise the run's cell is
        // leased before anything is made, so a run that cannot have an identity costs no clone.
        // `start`: the commit the checkout is made at, known here so no one has to ask git.
        // `made`: what a run-cloned checkout was made from, so the pool may take it back after
        // the run; `lent`: what takes a recyclable checkout back to the pool.
        let (cell, handed_over, start, made, mut lent) = match &self.mode {
            Mode::Scratch => {
                let cell = self.lease().await?;
                create_scratch(pending.path()).await?;
                (cell, false, None, None, None)
            }
            Mode::Git(source) => {
                source.base.ensure_fresh().await;
                match self.take_pooled(source, pending.path()).await {
                    Some(Taken {
                        cell: Some(cell),
                        made,
                        lent,
                    }) => (Some(cell), true, made.head.clone(), None, lent),
                    Some(Taken { made, .. }) => {
                        (self.lease().await?, false, made.head.clone(), None, None)
                    }
                    None => {
                        let cell = self.lease().await?;
                        let cloning = Instant::now();
                        let made = source.checkout(&self.jobs_dir, pending.path()).await?;
                        if let Some(metrics) = &self.metrics {
                            metrics.record_checkout(Checkout::Run, cloning.elapsed());
                        }
                        (cell, false, made.head.clone(), Some(made), None)
                    }
                }
            }
        };
        // A run-cloned checkout is recorded along with its hand-over, so it can come back too.
        let record = made.is_some() && self.pool.as_ref().is_some_and(|pool| pool.recycles());
        if let (Some(cell), Some(contained)) = (cell, &self.contained) {
            let home = PendingDir::new(home_for(pending.path()));
            let workspace = pending.path().to_path_buf();
            let home_dir = home.path().to_path_buf();
            let credentials = contained.credentials.clone();
            let handing = Instant::now();
            // Walks the tree and makes directories: blocking work, off the runtime's threads.
            let (cell, recorded) = tokio::task::spawn_blocking(move || {
                let mut recorded = None;
                if !handed_over {
                    hand_to(&cell, &workspace)?;
                    if record {
                        recorded = recordable(&cell, &workspace);
                    }
                }
                make_run_home(&cell, &home_dir, credentials.as_deref()).map(|()| (cell, recorded))
            })
            .await
            .map_err(|e| WorkspaceError::new("preparing the run's directories failed", e))??;
            if let (Some(pool), Some(made), Some(manifest)) = (&self.pool, made, recorded) {
                lent = Some(pool.lend(made, manifest));
            }
            if let Some(metrics) = &self.metrics {
                metrics.record_handover(handing.elapsed());
            }
            contained
                .cells
                .insert(pending.path().to_path_buf(), cell, home.keep(), start);
            if let Some(lent) = lent {
                self.lent_checkouts()
                    .insert(pending.path().to_path_buf(), lent);
            }
        }
        let path = pending.keep();
        tracing::debug!(path = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "workspace provisioned");
        Ok(path)
    }

    /// The run's cell when runs are contained.
    async fn lease(&self) -> Result<Option<RunCell>, WorkspaceError> {
        match &self.contained {
            Some(contained) => contained
                .containment
                .lease()
                .await
                .map(Some)
                .map_err(|e| WorkspaceError::new("no identity for the run", e)),
            None => Ok(None),
        }
    }

    /// The recyclable checkouts out with runs.
    fn lent_checkouts(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Lent>> {
        self.lent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves a ready checkout of the base as it is now to `dest`, when the pool has one or one is
    /// being recycled, and returns it; `None` when there was none (the caller clones).
    async fn take_pooled(&self, source: &Source, dest: &Path) -> Option<Taken> {
        let pool = self.pool.as_ref()?;
        let now = source.now().await;
        let taken = match pool.take_waiting(&now).await {
            // Taken only when made at the commit the base is at now.
            Some(pooled) => match pooled.move_to(dest).await {
                Ok((cell, lent)) => {
                    let lent = match lent {
                        Some(lent) if usable(lent.manifest()).await => Some(lent),
                        _ => None,
                    };
                    Some(Taken {
                        cell,
                        made: now,
                        lent,
                    })
                }
                Err(error) => {
                    tracing::warn!(%error, "a pooled checkout could not be used; the run clones its own");
                    None
                }
            },
            None => None,
        };
        if let Some(metrics) = &self.metrics {
            metrics.record_pool_take(if taken.is_some() {
                Take::Hit
            } else {
                Take::Miss
            });
        }
        taken
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
                let lent = self.inner.lent_checkouts().remove(&path);
                match (lent, &self.inner.pool) {
                    (Some(lent), Some(pool)) => match contained.cells.release_keeping_uid(&path) {
                        Some((home, Some(kept))) => {
                            remove_detached(home);
                            // The pool recycles it, or removes it.
                            pool.take_back(lent, path, kept);
                            return;
                        }
                        Some((home, None)) => remove_detached(home),
                        None => {}
                    },
                    _ => {
                        if let Some(home) = contained.cells.release(&path) {
                            remove_detached(home);
                        }
                    }
                }
            }
            remove_detached(path);
        } else {
            tracing::warn!(path = %path.display(), "refusing to remove a path that is not a workspace of this provisioner");
        }
    }
}

/// A checkout taken from the pool.
struct Taken {
    /// The identity it was handed over to (`None` when runs are not contained).
    cell: Option<RunCell>,
    /// What it was made from: the base as it is now.
    made: super::checkout::Made,
    /// What takes it back to the pool after the run, when it may be recycled.
    lent: Option<Lent>,
}

/// Makes the run's HOME, with a private TMPDIR inside and the operator's CLI login when there is
/// one.
fn make_run_home(
    cell: &RunCell,
    home: &Path,
    credentials: Option<&Path>,
) -> Result<(), WorkspaceError> {
    let step = |what: &str, path: &Path| format!("{what} {}", path.display());
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
    /// Checkouts of the base kept ready, made in the background (`WORKSPACE_POOL_SIZE`); 0
    /// clones each run's workspace when it starts.
    pub pool_size: usize,
    /// Free bytes on `jobs_dir` below which the pool makes no checkouts and gives back the ready
    /// ones (`WORKSPACE_POOL_MIN_FREE_MB`); 0 never shrinks it.
    pub pool_min_free_bytes: u64,
    /// Whether a used checkout goes back to the pool, proven back to its handed-over state,
    /// instead of being removed (`WORKSPACE_POOL_RECYCLE`). Only where runs have uids of their
    /// own; elsewhere used checkouts are always removed.
    pub pool_recycle: bool,
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
            pool_size: 0,
            pool_min_free_bytes: 512 * 1024 * 1024,
            pool_recycle: true,
        }
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
