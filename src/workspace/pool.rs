//! The warm pool: checkouts of the base made ahead of time, in the background, so a run takes
//! one at once instead of cloning on its request path.
//!
//! - **Where.** Checkouts wait in `JOBS_DIR/.pool/`, a directory only the gateway can open (0700).
//!   A run takes one by renaming it to its `ws-<id>` name (same filesystem: one `rename`).
//! - **Handed over ahead of time.** When runs are contained, each checkout is made for a run
//!   identity leased with it: the git-crypt key copy is removed and the tree given to the
//!   identity's uid in the background, so the walk over every file (most of a run's start on a
//!   large base) is off the request path. The run that takes the checkout takes its identity too;
//!   nothing can run as that uid meanwhile (the lease is held, and the tree is unreachable inside
//!   the 0700 pool directory). A checkout dropped untaken gives its identity back.
//! - **Never stale.** Each checkout remembers the base commit it was cloned at and whether it
//!   was unlocked with the git-crypt key. A run first refreshes the base as ever (debounced), then
//!   takes only a checkout of the commit the base is at now, with the key state of now; the
//!   others are removed and replaced in the background.
//! - **Never shared.** A checkout leaves the queue under its lock, to one caller; it is never
//!   put back. Used workspaces are not recycled: release removes them, as without a pool.
//! - **Disk.** While free space on `JOBS_DIR` is below the pool's reserve, the pool makes no
//!   checkouts and removes the ready ones, oldest first; runs still clone their own.
//! - **Refill.** A task keeps the pool at its size, making every missing checkout at once (a
//!   clone mostly waits on the filesystem: eight clones at once made four times as many a second
//!   as two at once on a 2-core machine), bounded by the pool's size,
//!   woken by each take, once runs have stopped arriving for a moment (a burst starts on idle
//!   cores). It holds the pool weakly and ends with it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::contain::{remove_tree_async, Containment, RunCell};
use crate::metrics::{Metrics, PoolGauges, PoolSnapshot};

use super::checkout::{hand_to, Made, Source};
use super::cleanup::{fresh_name, PendingDir, POOL_DIR};
use super::error::WorkspaceError;

/// How often the refill task looks again at free space and the pool's size when nothing woke it.
const RECHECK: Duration = Duration::from_secs(5);

/// How long after a take the refill waits before it starts making checkouts, once per wake-up.
/// Runs that come in a burst start while nothing else competes for the cores: a clone and its
/// hand-over are the heaviest work the gateway does, and started at the first take they would
/// slow every other run of the burst. Only once per wake-up, so steady traffic (a take every few
/// milliseconds) delays the refill by this much at most and never starves it; a checkout takes
/// far longer than this to make.
const QUIET_AFTER_TAKE: Duration = Duration::from_millis(100);

/// Pause after a failed checkout, so a broken base costs one clone attempt per missing checkout
/// per pause.
const FAILURE_PAUSE: Duration = Duration::from_secs(2);

/// Checkouts made ahead of time.
#[derive(Debug)]
pub(crate) struct Pool {
    /// `JOBS_DIR/.pool`: where ready checkouts wait.
    dir: PathBuf,
    /// Checkouts kept ready.
    size: usize,
    /// Free bytes on `JOBS_DIR` below which the pool shrinks instead of filling.
    min_free_bytes: u64,
    /// Ready checkouts, oldest first.
    ready: Mutex<VecDeque<Pooled>>,
    /// Checkouts being made now.
    making: AtomicUsize,
    /// When a run last took (or asked for) a checkout.
    last_take: Mutex<Option<Instant>>,
    /// Wakes the refill task: a take, a finished checkout. Shared with that task, which holds
    /// the pool itself only weakly.
    wake: Arc<Notify>,
}

/// A ready checkout: removed (in the background) when dropped unless taken.
#[derive(Debug)]
pub(crate) struct Pooled {
    /// Its directory under the pool directory.
    dir: PendingDir,
    /// What it was made from.
    made: Made,
    /// The run identity it was handed over to; `None` when runs are not contained. Declared after
    /// `dir`, so an untaken checkout's removal is under way before its identity is given back.
    cell: Option<RunCell>,
}

impl Pooled {
    /// Moves the checkout to `dest` (a fresh `ws-<id>` path beside the pool directory); the run
    /// identity it was handed over to comes along.
    pub(crate) async fn move_to(mut self, dest: &Path) -> Result<Option<RunCell>, WorkspaceError> {
        tokio::fs::rename(self.dir.path(), dest)
            .await
            .map_err(|e| {
                WorkspaceError::new(
                    format!(
                        "could not move pooled checkout {} to {}",
                        self.dir.path().display(),
                        dest.display()
                    ),
                    e,
                )
            })?;
        // Moved: nothing is left to remove.
        let cell = self.cell.take();
        self.dir.keep();
        Ok(cell)
    }
}

impl Pool {
    /// A pool of `size` checkouts in `jobs_dir/.pool`, created (0700) if missing. Start it with
    /// [`start`](Self::start).
    pub(crate) fn new(
        jobs_dir: &Path,
        size: usize,
        min_free_bytes: u64,
    ) -> Result<Self, WorkspaceError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = jobs_dir.join(POOL_DIR);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| {
                WorkspaceError::new(
                    format!("could not create the pool directory {}", dir.display()),
                    e,
                )
            })?;
        Ok(Self {
            dir,
            size,
            min_free_bytes,
            ready: Mutex::new(VecDeque::new()),
            making: AtomicUsize::new(0),
            last_take: Mutex::new(None),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Starts the task that fills the pool from `source`, handing each checkout to an identity
    /// leased from `containment` when runs are contained.
    pub(crate) fn start(
        self: &Arc<Self>,
        source: Arc<Source>,
        jobs_dir: PathBuf,
        containment: Option<Arc<Containment>>,
        metrics: Option<Metrics>,
    ) {
        let pool = Arc::downgrade(self);
        let maker = Arc::new(Maker {
            source,
            jobs_dir,
            containment,
            metrics,
        });
        tokio::spawn(refill(pool, maker));
    }

    /// A ready checkout made from `now` (the base's commit and key state at this moment), if
    /// there is one. Those made from anything else are removed; the refill task is woken either
    /// way.
    pub(crate) fn take(&self, now: &Made) -> Option<Pooled> {
        let (taken, stale) = {
            let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
            let stale: Vec<Pooled> = if now.head.is_some() {
                let (fresh, stale): (VecDeque<_>, VecDeque<_>) =
                    ready.drain(..).partition(|p| p.made == *now);
                *ready = fresh;
                stale.into()
            } else {
                // The base's commit is unknown: nothing can be shown current.
                ready.drain(..).collect()
            };
            (ready.pop_front(), stale)
        };
        if !stale.is_empty() {
            tracing::debug!(
                stale = stale.len(),
                "the base moved: pooled checkouts of the old base are replaced"
            );
        }
        drop(stale);
        *self
            .last_take
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.wake.notify_one();
        taken
    }

    /// How much longer the refill should wait for runs to stop arriving (see
    /// [`QUIET_AFTER_TAKE`]).
    fn quiet_left(&self) -> Duration {
        self.last_take
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(Duration::ZERO, |at| {
                QUIET_AFTER_TAKE.saturating_sub(at.elapsed())
            })
    }

    fn ready_len(&self) -> usize {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn put(&self, pooled: Pooled) {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(pooled);
    }

    fn pop_oldest(&self) -> Option<Pooled> {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// Whether free space on `jobs_dir` is below the reserve (unknown counts as enough).
    fn low_on_disk(&self, jobs_dir: &Path) -> bool {
        if self.min_free_bytes == 0 {
            return false;
        }
        match nix::sys::statvfs::statvfs(jobs_dir) {
            Ok(stat) => {
                // `fsblkcnt_t` is narrower than u64 on some targets.
                #[allow(clippy::useless_conversion)]
                let free = u64::from(stat.blocks_available()).saturating_mul(stat.fragment_size());
                free < self.min_free_bytes
            }
            Err(error) => {
                tracing::debug!(%error, "could not read free space of JOBS_DIR");
                false
            }
        }
    }
}

impl PoolGauges for Pool {
    fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot {
            size: self.size,
            ready: self.ready_len(),
        }
    }
}

/// What the refill task makes checkouts with.
#[derive(Debug)]
struct Maker {
    source: Arc<Source>,
    jobs_dir: PathBuf,
    containment: Option<Arc<Containment>>,
    metrics: Option<Metrics>,
}

/// Keeps the pool at its size while it lives; shrinks it while disk is low.
async fn refill(pool: Weak<Pool>, maker: Arc<Maker>) {
    let jobs_dir = &maker.jobs_dir;
    // Whether this wake-up already waited for a burst to start (see [`QUIET_AFTER_TAKE`]).
    let mut waited = false;
    loop {
        let Some(this) = pool.upgrade() else {
            return;
        };
        if this.low_on_disk(jobs_dir) {
            if let Some(oldest) = this.pop_oldest() {
                tracing::info!(
                    jobs_dir = %jobs_dir.display(),
                    "JOBS_DIR is low on space: the warm pool gives back a checkout"
                );
                let path = oldest.dir.keep();
                if let Err(error) = remove_tree_async(path.clone()).await {
                    tracing::warn!(path = %path.display(), %error, "could not remove a pooled checkout");
                }
                continue;
            }
        } else {
            let quiet = this.quiet_left();
            if !waited && !quiet.is_zero() {
                waited = true;
                drop(this);
                tokio::time::sleep(quiet).await;
                continue;
            }
            waited = false;
            let making = this.making.load(Ordering::Acquire);
            let missing = this.size.saturating_sub(this.ready_len() + making);
            for _ in 0..missing {
                this.making.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(make_one(Arc::clone(&this), Arc::clone(&maker)));
            }
        }
        let wake = Arc::clone(&this.wake);
        drop(this);
        let _ = tokio::time::timeout(RECHECK, wake.notified()).await;
    }
}

/// Makes one checkout of the base as it is (refreshed first, debounced as for runs), hands it
/// over to a leased identity when runs are contained, and files it as ready.
async fn make_one(pool: Arc<Pool>, maker: Arc<Maker>) {
    maker.source.base.ensure_fresh().await;
    let started = Instant::now();
    let dir = PendingDir::new(pool.dir.join(fresh_name()));
    match made_for_a_run(&maker, dir.path()).await {
        Ok((made, cell)) => {
            if let Some(metrics) = &maker.metrics {
                metrics.record_checkout(true, started.elapsed());
            }
            pool.put(Pooled { dir, made, cell });
        }
        Err(error) => {
            tracing::warn!(%error, "the warm pool could not make a checkout; runs clone their own meanwhile");
            drop(dir);
            tokio::time::sleep(FAILURE_PAUSE).await;
        }
    }
    pool.making.fetch_sub(1, Ordering::AcqRel);
    pool.wake.notify_one();
}

/// A checkout at `dest`, handed over to a freshly leased identity when runs are contained.
async fn made_for_a_run(
    maker: &Maker,
    dest: &Path,
) -> Result<(Made, Option<RunCell>), WorkspaceError> {
    let cell = match &maker.containment {
        Some(containment) => Some(
            containment
                .lease()
                .await
                .map_err(|e| WorkspaceError::new("no identity for a pooled checkout", e))?,
        ),
        None => None,
    };
    let made = maker.source.checkout(&maker.jobs_dir, dest).await?;
    let Some(cell) = cell else {
        return Ok((made, None));
    };
    let dest = dest.to_path_buf();
    let cell = tokio::task::spawn_blocking(move || hand_to(&cell, &dest).map(|()| cell))
        .await
        .map_err(|e| WorkspaceError::new("handing over a pooled checkout failed", e))??;
    Ok((made, Some(cell)))
}
