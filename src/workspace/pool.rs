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
//! - **Never shared.** A checkout leaves the queue under its lock, to one caller, and a used one
//!   comes back only through [`Pool::take_back`], proven as it was handed over.
//! - **Recycled.** When runs have their own uids, a checkout is recorded as handed over
//!   ([`Manifest`]), and once its run has ended and every process of it is gone, it is rebuilt
//!   from what is proven untouched plus copies from a pristine template of the same commit, and
//!   filed as ready again, still owned by the same uid (see [`crate::contain`]'s `reuse` for the
//!   proof). A run that finds nothing ready while checkouts are being recycled waits for one
//!   (bounded) rather than clone: a recycle costs what the run changed, a clone the whole tree.
//!   Checkouts out with runs count towards the pool's size, so the refill clones only what will
//!   not come back. Without per-run uids (process mode) nothing proves a run could not have kept
//!   a way into its tree, and used checkouts are removed.
//! - **Disk.** While free space on `JOBS_DIR` is below the pool's reserve, the pool makes no
//!   checkouts and removes the ready ones, oldest first, then its template; runs still clone
//!   their own, and a used checkout is removed rather than recycled.
//! - **Refill.** A task keeps the pool at its size, making every missing checkout at once (a
//!   clone mostly waits on the filesystem: eight clones at once made four times as many a second
//!   as two at once on a 2-core machine), bounded by the pool's size,
//!   woken by each take, once runs have stopped arriving for a moment (a burst starts on idle
//!   cores). It holds the pool weakly and ends with it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::contain::{remove_tree_async, Containment, KeptUid, Manifest, RunCell};
use crate::metrics::{Checkout, Metrics, PoolGauges, PoolSnapshot};

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

/// How long a run that finds nothing ready waits for a checkout being recycled before it clones
/// its own. A recycle costs what the run before changed, usually milliseconds; this bounds the
/// wait behind one that copies a great deal.
const RECYCLE_WAIT: Duration = Duration::from_secs(5);

/// The longest a run waits for a recycled checkout's newest change time to be a kernel tick old
/// (see [`Manifest::usable_after`]); later than that (a clock stepped back), the checkout is used
/// but not recycled after.
const STAMP_WAIT: Duration = Duration::from_millis(50);

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
    /// Whether used checkouts are recycled (where runs have uids of their own).
    recycle: bool,
    /// Ready checkouts, oldest first.
    ready: Mutex<VecDeque<Pooled>>,
    /// Checkouts being made now.
    making: AtomicUsize,
    /// Used checkouts being recycled now.
    recycling: AtomicUsize,
    /// Recyclable checkouts out with runs: they come back, so the refill does not replace them.
    out: AtomicUsize,
    /// Wakes runs waiting for a recycled checkout (see [`RECYCLE_WAIT`]).
    returned: Notify,
    /// The pristine checkout recycles copy from, for the base as the newest checkout saw it.
    template: tokio::sync::Mutex<Option<Arc<Template>>>,
    /// The base as the last take saw it: a used checkout of anything else is not recycled.
    latest: Mutex<Option<Made>>,
    /// What checkouts are made with, once the pool is started.
    maker: OnceLock<Arc<Maker>>,
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
    /// Its record as handed over, when it can be recycled after its run (per-run uids).
    manifest: Option<Manifest>,
    /// Set when a run takes a recyclable checkout: from then on it counts as out with a run.
    out: Option<Out>,
}

/// One recyclable checkout counted as out with a run (it comes back, so the refill does not
/// replace it); uncounted when dropped.
#[derive(Debug)]
struct Out {
    /// The pool it counts in.
    pool: Arc<Pool>,
}

impl Drop for Out {
    fn drop(&mut self) {
        self.pool.out.fetch_sub(1, Ordering::AcqRel);
        self.pool.wake.notify_one();
    }
}

/// A pristine checkout of one commit, never handed out: what a recycle copies changed files from.
#[derive(Debug)]
struct Template {
    /// What it was made from.
    made: Made,
    /// Where it is, in the pool directory; removed when the last recycle using it is done.
    dir: PendingDir,
}

/// A recyclable checkout out with a run, counted towards the pool's size until it comes back
/// ([`Pool::take_back`]) or is given up (dropped).
#[derive(Debug)]
pub(crate) struct Lent {
    /// Its place in the pool's count, held until it is dropped.
    _out: Out,
    /// What it was made from.
    made: Made,
    /// Its record as handed over.
    manifest: Manifest,
}

impl Lent {
    /// Its record as handed over.
    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

impl Pooled {
    /// Moves the checkout to `dest` (a fresh `ws-<id>` path beside the pool directory); the run
    /// identity it was handed over to comes along, and, when it can be recycled, what takes it
    /// back to the pool after the run.
    pub(crate) async fn move_to(
        mut self,
        dest: &Path,
    ) -> Result<(Option<RunCell>, Option<Lent>), WorkspaceError> {
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
        let lent = match (self.manifest.take(), self.out.take()) {
            (Some(manifest), Some(out)) => Some(Lent {
                _out: out,
                made: self.made.clone(),
                manifest,
            }),
            _ => None,
        };
        self.dir.keep();
        Ok((cell, lent))
    }
}

impl Pool {
    /// A pool of `size` checkouts in `jobs_dir/.pool`, created (0700) if missing. Start it with
    /// [`start`](Self::start).
    pub(crate) fn new(
        jobs_dir: &Path,
        size: usize,
        min_free_bytes: u64,
        recycle: bool,
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
            recycle,
            ready: Mutex::new(VecDeque::new()),
            making: AtomicUsize::new(0),
            recycling: AtomicUsize::new(0),
            out: AtomicUsize::new(0),
            returned: Notify::new(),
            template: tokio::sync::Mutex::new(None),
            latest: Mutex::new(None),
            maker: OnceLock::new(),
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
        if self.maker.set(Arc::clone(&maker)).is_err() {
            tracing::warn!("the warm pool was started twice; the second start is ignored");
            return;
        }
        tokio::spawn(refill(pool, maker));
    }

    /// A ready checkout made from `now` (the base's commit and key state at this moment), if
    /// there is one. Those made from anything else are removed; the refill task is woken either
    /// way.
    pub(crate) fn take(self: &Arc<Self>, now: &Made) -> Option<Pooled> {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(now.clone());
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
        // Counted out at once, before the refill can look: it comes back after the run.
        let taken = taken.map(|mut pooled| {
            if pooled.manifest.is_some() {
                pooled.out = Some(self.count_out());
            }
            pooled
        });
        *self
            .last_take
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.wake.notify_one();
        taken
    }

    /// [`take`](Self::take), waiting (at most [`RECYCLE_WAIT`]) for a checkout being recycled
    /// when none is ready; `None` at once when none is being recycled.
    pub(crate) async fn take_waiting(self: &Arc<Self>, now: &Made) -> Option<Pooled> {
        let deadline = tokio::time::Instant::now() + RECYCLE_WAIT;
        loop {
            // Registered before the look, so a checkout filed in between still wakes this one.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(taken) = self.take(now) {
                return Some(taken);
            }
            if self.recycling.load(Ordering::Acquire) == 0 {
                return None;
            }
            if tokio::time::timeout_at(deadline, returned).await.is_err() {
                return None;
            }
        }
    }

    /// Counts a recyclable checkout (`made`, recorded as `manifest`) as out with a run, until it
    /// comes back or the returned token is dropped.
    pub(crate) fn lend(self: &Arc<Self>, made: Made, manifest: Manifest) -> Lent {
        Lent {
            _out: self.count_out(),
            made,
            manifest,
        }
    }

    /// Counts one more checkout as out with a run, until the answer is dropped.
    fn count_out(self: &Arc<Self>) -> Out {
        self.out.fetch_add(1, Ordering::AcqRel);
        Out {
            pool: Arc::clone(self),
        }
    }

    /// Takes back the used checkout at `used`, lent as `lent`, whose run has ended with nothing of
    /// it left and kept its uid (`kept`): recycles it in the background and files it as ready, or
    /// removes it when the pool is full, disk is low, the base has moved or the proof fails.
    /// Needs a tokio runtime; without one the checkout is removed.
    pub(crate) fn take_back(self: &Arc<Self>, lent: Lent, used: PathBuf, kept: KeptUid) {
        let used = PendingDir::new(used);
        let (Some(maker), Ok(runtime)) = (
            self.maker.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let Lent {
            _out: out,
            made,
            manifest,
        } = lent;
        let current = self
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|latest| *latest == made);
        let others = self.ready_len()
            + self.making.load(Ordering::Acquire)
            + self.recycling.load(Ordering::Acquire)
            + self.out.load(Ordering::Acquire).saturating_sub(1);
        if !current || others >= self.size || self.low_on_disk(&maker.jobs_dir) {
            return;
        }
        // Counted as recycling before the lend ends, so the refill never sees it missing.
        self.recycling.fetch_add(1, Ordering::AcqRel);
        drop(out);
        let pool = Arc::clone(self);
        runtime.spawn(async move {
            let started = Instant::now();
            match pool.recycle(&maker, used, made, manifest, kept).await {
                Ok(pooled) => {
                    if let Some(metrics) = &maker.metrics {
                        metrics.record_checkout(Checkout::Recycled, started.elapsed());
                    }
                    pool.put(pooled);
                }
                Err(error) => {
                    tracing::info!(%error, "a used checkout could not be recycled; it is removed");
                }
            }
            pool.recycling.fetch_sub(1, Ordering::AcqRel);
            pool.returned.notify_waiters();
            pool.wake.notify_one();
        });
    }

    /// Rebuilds `used` as a fresh ready checkout under the pool directory (see
    /// [`crate::contain::recycle`]); `used`, with whatever was not proven, is removed after.
    async fn recycle(
        &self,
        maker: &Maker,
        used: PendingDir,
        made: Made,
        manifest: Manifest,
        kept: KeptUid,
    ) -> Result<Pooled, WorkspaceError> {
        let containment = maker
            .containment
            .clone()
            .ok_or_else(|| WorkspaceError::new("recycling a checkout", "runs are not contained"))?;
        let template = self.template_for(maker, &made).await.ok_or_else(|| {
            WorkspaceError::new("recycling a checkout", "no template of its commit")
        })?;
        let into = PendingDir::new(self.dir.join(fresh_name()));
        let dest = into.path().to_path_buf();
        let uid = kept.uid();
        let manifest = tokio::task::spawn_blocking(move || {
            let rebuilt =
                crate::contain::recycle(used.path(), &dest, &manifest, template.dir.path(), uid);
            // `used` goes now, in the background, with everything the proof left in it.
            drop(used);
            rebuilt
        })
        .await
        .map_err(|e| WorkspaceError::new("recycling a checkout failed", e))?
        .map_err(|e| WorkspaceError::new("recycling a checkout", e))?;
        // Filed only once a run may take it at once (see [`usable`]).
        if !usable(&manifest).await {
            return Err(WorkspaceError::new(
                "recycling a checkout",
                "its change times are ahead of the clock",
            ));
        }
        let cell = containment
            .lease_again(kept)
            .map_err(|e| WorkspaceError::new("no identity for a recycled checkout", e))?;
        Ok(Pooled {
            dir: into,
            made,
            cell: Some(cell),
            manifest: Some(manifest),
            out: None,
        })
    }

    /// The template of `made`, made now (a clone, without the git-crypt key) when the one there is
    /// of another commit or missing; `None` when it cannot be made or the base has moved meanwhile.
    async fn template_for(&self, maker: &Maker, made: &Made) -> Option<Arc<Template>> {
        let mut current = self.template.lock().await;
        if let Some(template) = current.as_ref().filter(|t| t.made == *made) {
            return Some(Arc::clone(template));
        }
        // Named apart from the checkouts: it is never handed out.
        let name = fresh_name().replacen("ws-", "template-", 1);
        let dir = PendingDir::new(self.dir.join(name));
        let now = match maker.source.checkout(&maker.jobs_dir, dir.path()).await {
            Ok(now) => now,
            Err(error) => {
                tracing::warn!(%error, "could not make the template recycled checkouts copy from");
                return None;
            }
        };
        if now != *made {
            return None;
        }
        if let Err(error) = remove_tree_async(dir.path().join(".git/git-crypt/keys")).await {
            tracing::warn!(%error, "could not remove the git-crypt key from the template");
            return None;
        }
        let template = Arc::new(Template { made: now, dir });
        *current = Some(Arc::clone(&template));
        Some(template)
    }

    /// Whether used checkouts come back (`WORKSPACE_POOL_RECYCLE`).
    pub(crate) fn recycles(&self) -> bool {
        self.recycle
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
        self.returned.notify_waiters();
    }

    /// One checkout fewer is being made (filed, or given up), and the refill may look again.
    fn made_one(&self) {
        self.making.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
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
            // Nothing ready is left: the template goes too, removed once no recycle copies from
            // it; the next recycle makes it again when there is room.
            if this.template.lock().await.take().is_some() {
                tracing::info!(
                    jobs_dir = %jobs_dir.display(),
                    "JOBS_DIR is low on space: the warm pool gives back its template"
                );
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
            // Checkouts being recycled or out with runs come back: only the rest is cloned.
            let coming = this.making.load(Ordering::Acquire)
                + this.recycling.load(Ordering::Acquire)
                + this.out.load(Ordering::Acquire);
            let missing = this.size.saturating_sub(this.ready_len() + coming);
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
    match made_for_a_run(&pool, &maker, dir.path()).await {
        Ok((made, cell, manifest)) => {
            if let Some(metrics) = &maker.metrics {
                metrics.record_checkout(Checkout::Pool, started.elapsed());
            }
            let recyclable = manifest.is_some().then(|| made.clone());
            pool.put(Pooled {
                dir,
                made,
                cell,
                manifest,
                out: None,
            });
            // Filed, it counts as ready and no longer as being made: counted twice while the
            // template below is made, the pool looked full to a run handing its checkout back,
            // which was then removed instead of recycled.
            pool.made_one();
            // A recyclable checkout needs its commit's template by the time its run ends; made
            // after the checkout is filed, so the pool's first fill waits for no extra clone.
            if let Some(made) = recyclable {
                pool.template_for(&maker, &made).await;
            }
        }
        Err(error) => {
            tracing::warn!(%error, "the warm pool could not make a checkout; runs clone their own meanwhile");
            drop(dir);
            tokio::time::sleep(FAILURE_PAUSE).await;
            pool.made_one();
        }
    }
}

/// A checkout at `dest`, handed over to a freshly leased identity when runs are contained, and
/// recorded for recycling when that identity is a uid of its own.
async fn made_for_a_run(
    pool: &Pool,
    maker: &Maker,
    dest: &Path,
) -> Result<(Made, Option<RunCell>, Option<Manifest>), WorkspaceError> {
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
        return Ok((made, None, None));
    };
    let recycle = pool.recycle;
    let dest = dest.to_path_buf();
    let (cell, manifest) = tokio::task::spawn_blocking(move || {
        hand_to(&cell, &dest)?;
        let manifest = recycle.then(|| recordable(&cell, &dest)).flatten();
        Ok::<_, WorkspaceError>((cell, manifest))
    })
    .await
    .map_err(|e| WorkspaceError::new("handing over a pooled checkout failed", e))??;
    // Filed only once a run may take it at once (see [`usable`]); otherwise not recyclable.
    let manifest = match manifest {
        Some(manifest) if usable(&manifest).await => Some(manifest),
        _ => None,
    };
    Ok((made, Some(cell), manifest))
}

/// The record of the checkout at `dest`, just handed over to `cell`, when it can be recycled: only
/// a uid of the run's own keeps another run out of it (blocking). A checkout that cannot be
/// recorded is used once and removed, as without recycling.
pub(crate) fn recordable(cell: &RunCell, dest: &Path) -> Option<Manifest> {
    cell.uid()?;
    match Manifest::record(dest) {
        Ok(manifest) => Some(manifest),
        Err(error) => {
            tracing::info!(%error, path = %dest.display(), "a checkout is not recorded for recycling; it is removed after its run");
            None
        }
    }
}

/// Waits until `manifest`'s tree may be handed to a run (see [`Manifest::usable_after`]); `false`
/// when that is further off than [`STAMP_WAIT`], and the checkout must not be recycled after.
/// The pool waits before it files a checkout, so a run taking one normally waits not at all; the
/// run checks again all the same.
pub(crate) async fn usable(manifest: &Manifest) -> bool {
    let wait = manifest
        .usable_after()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    if wait > STAMP_WAIT {
        return false;
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    true
}
