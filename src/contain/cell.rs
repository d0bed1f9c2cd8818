//! The containment itself: one per gateway process, handing out one cell per run.
//!
//! A [`RunCell`] is everything that makes one run separable from the others and from the gateway:
//! in uid mode a uid of its own (locked in the pool), in both modes a marker every process of the
//! run inherits and, where the gateway may make cgroups, a cgroup of its own. Everything the run
//! starts is made through the cell, and killing the run means killing its cgroup (atomically,
//! see [`super::cgroup`]), else the cell's uid (atomically) or its marker (best effort).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::cgroup::{RunGroup, RunGroups};
use super::dirs;
use super::mode::{self, Mode, Unavailable};
use super::pool::{self, LockDir, UidLock};
use super::reap::{self, GatewayLiveness, KillError, KILL_DEADLINE, MARKER_VAR};
use super::settings::{ContainSettings, RunUidRange};
use super::spawn::RunCommand;
use super::sys;

/// How this gateway process contains its runs. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub(crate) struct Containment {
    /// Shared with every cell, which outlives no borrow.
    shared: Arc<Shared>,
}

/// What the containment and its cells share.
#[derive(Debug)]
struct Shared {
    /// The mode decided at start-up.
    mode: Mode,
    /// The uids runs take (uid mode).
    uid_range: RunUidRange,
    /// The lock directory (uid mode only).
    locks: Option<LockDir>,
    /// Where run cgroups are made, when the gateway may make them.
    groups: Option<RunGroups>,
    /// The instance key of the markers, from the jobs directory.
    instance_key: String,
    /// This gateway process, as `<pid>-<start time>`; part of every marker.
    tag: String,
    /// Where the next uid search starts, so uids are used round-robin rather than the lowest
    /// always; only a hint, the lock decides.
    cursor: AtomicU32,
}

impl Containment {
    /// Decides the mode from the settings and what this process may do, and prepares it: the lock
    /// directory in uid mode, a pidfd check in process mode.
    pub(crate) fn new(settings: &ContainSettings) -> Result<Self, Unavailable> {
        let mode = mode::decide(settings.isolation, &mode::privilege())?;
        Self::with_mode(mode, settings, reap::own_tag())
    }

    /// [`new`](Self::new) with the mode and gateway tag given: the tag lets tests play a gateway
    /// that has since died.
    pub(super) fn with_mode(
        mode: Mode,
        settings: &ContainSettings,
        tag: String,
    ) -> Result<Self, Unavailable> {
        let locks = match mode {
            Mode::Uid => Some(LockDir::open(&settings.lock_dir)?),
            Mode::Process => None,
        };
        let groups = RunGroups::discover(&settings.cgroup)?;
        // Both modes kill through pidfds (Linux 5.3); find out now rather than at the first kill.
        sys::pidfd_open(std::process::id() as i32).map_err(|e| Unavailable::Kernel {
            reason: format!("pidfd_open (Linux 5.3) failed: {e}"),
        })?;
        // The key is a path segment of the marker: keep it to characters that cannot split it.
        let instance_key: String = settings
            .instance_key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                mode,
                uid_range: settings.uid_range,
                locks,
                groups,
                instance_key,
                tag,
                cursor: AtomicU32::new(0),
            }),
        })
    }

    /// The mode runs are contained in.
    pub(crate) fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The mode's stable lowercase name, for `/health`: `"uid"` or `"process"`.
    pub(crate) fn mode_name(&self) -> &'static str {
        self.shared.mode.as_str()
    }

    /// The cgroup v2 directory the runs' cgroups are made in, if runs get cgroups.
    pub(crate) fn cgroup_parent(&self) -> Option<&Path> {
        self.shared.groups.as_ref().map(RunGroups::parent)
    }

    /// A cell for one run. In uid mode: the next free uid of the range (not locked by any gateway
    /// process, not an account or group of the host), after killing whatever an earlier, crashed
    /// holder left running under it; a uid whose leftovers survive is skipped.
    pub(crate) async fn lease(&self) -> Result<RunCell, LeaseError> {
        let uid = match self.shared.mode {
            Mode::Process => None,
            Mode::Uid => {
                let shared = Arc::clone(&self.shared);
                let taken = tokio::task::spawn_blocking(move || take_uid(&shared))
                    .await
                    .map_err(|e| LeaseError::Io(io::Error::other(e)))??;
                Some(taken)
            }
        };
        let (marker, group) = self.new_run()?;
        Ok(RunCell {
            marker,
            uid,
            group,
            released: false,
        })
    }

    /// A new run's marker and, where runs get cgroups, its cgroup.
    fn new_run(&self) -> Result<(String, Option<RunGroup>), LeaseError> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let marker = format!("{}/{}/{run}", self.shared.instance_key, self.shared.tag);
        let group = match &self.shared.groups {
            Some(groups) => Some(
                groups
                    .make(&self.shared.instance_key, &self.shared.tag, &run)
                    .map_err(LeaseError::Io)?,
            ),
            None => None,
        };
        Ok((marker, group))
    }

    /// A cell for a new run under a uid a finished run kept (see [`KeptUid`]): a new marker and,
    /// where runs get cgroups, a new cgroup.
    pub(crate) fn lease_again(&self, kept: KeptUid) -> Result<RunCell, LeaseError> {
        let (marker, group) = self.new_run()?;
        let mut kept = kept;
        Ok(RunCell {
            marker,
            // Taken out, so the kept uid's drop does not mark it clean: it is held again.
            uid: kept.lock.take(),
            group,
            released: false,
        })
    }

    /// Start-up crash recovery: kills what the runs of a gateway process that is gone left behind.
    ///
    /// Run cgroups first: each one whose gateway process no longer runs is killed and removed.
    /// Then, uid mode: every uid of the range that has live processes, whose lock nobody holds (so no
    /// live gateway process owns it) and that is no account's, is killed. Process mode: every
    /// process of our uid whose marker names this instance (the same jobs directory) and a gateway
    /// process that no longer runs. After `kill -9` of the gateway, the next start stops whatever
    /// the previous process's runs left.
    pub(crate) async fn recover(&self) -> Recovery {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let groups = recover_groups(&shared);
            let mut recovery = match shared.mode {
                Mode::Uid => recover_uids(&shared),
                Mode::Process => recover_marked(&shared),
            };
            recovery.killed += groups.killed;
            recovery.failures.extend(groups.failures);
            recovery
        })
        .await
        .unwrap_or_else(|e| Recovery {
            failures: vec![KillError::Io {
                run: "recovery".into(),
                source: io::Error::other(e),
            }],
            ..Recovery::default()
        })
    }
}

/// Finds and locks a uid for a new run (blocking).
fn take_uid(shared: &Shared) -> Result<UidLock, LeaseError> {
    let Some(locks) = &shared.locks else {
        return Err(LeaseError::Io(io::Error::other(
            "uid mode without a lock directory",
        )));
    };
    let range = shared.uid_range;
    let start = shared.cursor.fetch_add(1, Ordering::Relaxed);
    let mut exhausted = Exhausted {
        range,
        ..Exhausted::default()
    };
    for offset in 0..range.count() {
        let index = start.wrapping_add(offset);
        let uid = range.nth_wrapping(index);
        let Some(lock) = locks.try_lock(uid).map_err(LeaseError::Io)? else {
            exhausted.busy += 1;
            continue;
        };
        if let Some(why) = pool::taken_by_account(uid) {
            tracing::debug!(uid, %why, "skipping a uid of the run range");
            exhausted.accounts += 1;
            continue;
        }
        // Only a holder that did not end cleanly (a crash) can have left something running.
        let leftovers = if lock.left_clean() {
            Ok(false)
        } else {
            reap::kill_uid(uid, KILL_DEADLINE)
        };
        match leftovers {
            Ok(false) => {}
            Ok(true) => tracing::warn!(
                uid,
                "killed processes an earlier run left under the uid it was given"
            ),
            Err(error) => {
                tracing::error!(uid, %error, "skipping a uid whose leftovers cannot be killed");
                exhausted.stubborn += 1;
                continue;
            }
        }
        lock.mark_held().map_err(LeaseError::Io)?;
        shared
            .cursor
            .store(index.wrapping_add(1), Ordering::Relaxed);
        return Ok(lock);
    }
    Err(LeaseError::Exhausted(exhausted))
}

/// Uid-mode recovery (blocking): one look at `/proc`, then each unlocked uid of the range found
/// there is killed under its lock.
fn recover_uids(shared: &Shared) -> Recovery {
    let mut recovery = Recovery::default();
    let Some(locks) = &shared.locks else {
        return recovery;
    };
    let processes = match super::procfs::processes() {
        Ok(processes) => processes,
        Err(source) => {
            recovery.failures.push(KillError::Io {
                run: "recovery".into(),
                source,
            });
            return recovery;
        }
    };
    // Live processes per uid of the range, counted once for the report.
    let mut uids: BTreeMap<u32, usize> = BTreeMap::new();
    for process in processes.iter().filter(|p| !p.dead) {
        let mut own: Vec<u32> = process
            .uids
            .into_iter()
            .filter(|uid| shared.uid_range.contains(*uid))
            .collect();
        own.dedup();
        for uid in own {
            *uids.entry(uid).or_default() += 1;
        }
    }
    for (uid, count) in uids {
        match locks.try_lock(uid) {
            Ok(Some(_lock)) => {
                if let Some(why) = pool::taken_by_account(uid) {
                    tracing::warn!(uid, %why, "not touching processes of an account in the run range");
                    continue;
                }
                match reap::kill_uid(uid, KILL_DEADLINE) {
                    Ok(true) => recovery.killed += count,
                    // Gone on their own since the look at /proc.
                    Ok(false) => {}
                    Err(error) => recovery.failures.push(error),
                }
            }
            Ok(None) => recovery.busy += 1,
            Err(source) => recovery.failures.push(KillError::Io {
                run: format!("uid {uid}"),
                source,
            }),
        }
    }
    recovery
}

/// Cgroup recovery (blocking): kills and removes the run cgroups of gateway processes that no
/// longer run (never this process's, never a live sibling's).
fn recover_groups(shared: &Shared) -> Recovery {
    let mut recovery = Recovery::default();
    let Some(groups) = &shared.groups else {
        return recovery;
    };
    let mut liveness = GatewayLiveness::default();
    let mut orphaned = |tag: &[u8]| tag != shared.tag.as_bytes() && !liveness.alive(tag);
    for group in groups.orphans(&shared.instance_key, &mut orphaned) {
        let found = group.pids().len();
        match group.kill(KILL_DEADLINE) {
            Ok(_) => {
                recovery.killed += found;
                if let Err(error) = group.remove() {
                    tracing::warn!(cgroup = %group, %error, "could not remove a leftover run cgroup");
                }
            }
            Err(error) => recovery.failures.push(error),
        }
    }
    recovery
}

/// Process-mode recovery (blocking): kills marked processes of this instance whose gateway died.
fn recover_marked(shared: &Shared) -> Recovery {
    let mut recovery = Recovery::default();
    let prefix = format!("{}/", shared.instance_key);
    let mut liveness = GatewayLiveness::default();
    let mut orphaned = |marker: &[u8]| {
        let Some(rest) = marker.strip_prefix(prefix.as_bytes()) else {
            return false;
        };
        let tag = rest.split(|b| *b == b'/').next().unwrap_or_default();
        tag != shared.tag.as_bytes() && !liveness.alive(tag)
    };
    match reap::kill_marked(
        "runs of a previous gateway process",
        &mut orphaned,
        KILL_DEADLINE,
    ) {
        Ok(killed) => recovery.killed = killed,
        Err(error) => recovery.failures.push(error),
    }
    recovery
}

/// What [`Containment::recover`] did.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Processes found and killed.
    pub(crate) killed: usize,
    /// Uids with processes that a live gateway process holds (left alone).
    pub(crate) busy: usize,
    /// Runs whose leftovers could not all be killed.
    pub(crate) failures: Vec<KillError>,
}

/// Why no cell could be leased.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum LeaseError {
    /// Every uid of the range is in use or unusable.
    Exhausted(Exhausted),
    /// The lock directory failed.
    Io(io::Error),
}

/// The count behind [`LeaseError::Exhausted`], to tell "too many runs" from "bad range".
#[derive(Debug, Default)]
pub(crate) struct Exhausted {
    /// The range searched.
    pub(crate) range: RunUidRange,
    /// Uids held by live runs (of any gateway process).
    pub(crate) busy: u32,
    /// Uids refused because they belong to an account or group.
    pub(crate) accounts: u32,
    /// Uids whose leftover processes survived SIGKILL.
    pub(crate) stubborn: u32,
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exhausted(e) => write!(
                f,
                "no free run uid in {}: {} in use, {} belong to accounts or groups, {} have \
                 unkillable leftovers",
                e.range, e.busy, e.accounts, e.stubborn
            ),
            Self::Io(e) => write!(f, "cannot lease a run uid: {e}"),
        }
    }
}

impl std::error::Error for LeaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Exhausted(_) => None,
        }
    }
}

/// One run's containment: its uid (uid mode) and its marker.
///
/// End it with [`release`](Self::release), which kills everything of the run and waits for it.
/// Dropping it instead (a cancelled future) kills in the background: on the blocking pool when a
/// runtime is there, holding the uid until its processes are gone; without one, a single sweep.
#[derive(Debug)]
pub(crate) struct RunCell {
    /// `<instance key>/<gateway tag>/<run id>`, the value of [`MARKER_VAR`].
    marker: String,
    /// The locked uid (uid mode).
    uid: Option<UidLock>,
    /// The run's cgroup, when runs get cgroups: then every process of the run is in it.
    group: Option<RunGroup>,
    /// Set by `release`, which did the killing already.
    released: bool,
}

impl RunCell {
    /// The run's uid (and gid) in uid mode.
    pub(crate) fn uid(&self) -> Option<u32> {
        self.uid.as_ref().map(UidLock::uid)
    }

    /// The marker variable's name and this run's value.
    #[cfg(test)]
    pub(crate) fn marker_env(&self) -> (&'static str, &str) {
        (MARKER_VAR, &self.marker)
    }

    /// A command for a process of this run (the agent, or anything it runs on the run's behalf).
    ///
    /// It starts from an empty environment holding only the marker: add what the program needs
    /// with `env`/`envs`. With a cgroup, the child is born in it (see [`RunCommand`]). It leads its own process group (for
    /// [`Supervised`](super::Supervised)), is killed if the handle is dropped, and cannot gain
    /// privileges by exec (`PR_SET_NO_NEW_PRIVS`: setuid bits and file capabilities are ignored).
    /// In uid mode it runs as the run's uid and gid with no supplementary groups. Stdio and the
    /// working directory are the caller's; in uid mode the directory must be the run's (see
    /// [`hand_over`](Self::hand_over)).
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> RunCommand {
        let cgroup = self.group.as_ref().map(|group| group.path().to_path_buf());
        let mut command = RunCommand::new(program, cgroup, self.uid());
        command.env(MARKER_VAR, &self.marker);
        command
    }

    /// Kills every process of the run and waits until none is alive (at most
    /// [`KILL_DEADLINE`]); returns whether anything of the run was still running.
    ///
    /// With a cgroup: atomic and complete, one write and one read when nothing is left. Else, uid
    /// mode: atomic, complete, and nothing of another uid is touched; process mode: every process
    /// that carries the run's marker (see [`reap::kill_marked`] for what escapes).
    pub(crate) async fn kill_all(&self) -> Result<bool, KillError> {
        let target = self.target();
        tokio::task::spawn_blocking(move || target.kill(KILL_DEADLINE))
            .await
            .map_err(|e| KillError::Io {
                run: "a run".into(),
                source: io::Error::other(e),
            })?
    }

    /// Kills everything of the run, waits until it is gone, and returns the uid to the pool. If
    /// something survives, the error says so and the uid is returned anyway: the next lease of it
    /// kills again first (and skips it if that fails too). (The gateway releases cells through
    /// [`Cells::release`], on the blocking path of a workspace's release.)
    #[cfg(test)]
    pub(crate) async fn release(mut self) -> Result<(), KillError> {
        let killed = self.kill_all().await;
        self.released = true;
        self.ended(killed.is_ok());
        killed.map(drop)
    }

    /// [`release`](Self::release), on this thread, keeping the uid for another run (see
    /// [`KeptUid`]; dropping it gives the uid back as a clean end) when nothing of this one is
    /// left; `None` when there is no uid (process mode). For a caller that must not return before
    /// the run's processes are gone and cannot await (the release of a workspace, which happens
    /// while the run still holds its slot). Blocks for as long as the kill takes: a few system
    /// calls when nothing is left, at most [`KILL_DEADLINE`].
    fn retire(mut self) -> Result<Option<KeptUid>, KillError> {
        let killed = self.target().kill(KILL_DEADLINE);
        self.released = true;
        // On failure the lock still says held: the uid's next lease looks for leftovers.
        killed?;
        end_clean(None, self.group.take().as_ref());
        let kept = self.uid.take().map(|lock| {
            let uid = lock.uid();
            sweep_shared(uid);
            KeptUid {
                lock: Some(lock),
                uid,
            }
        });
        Ok(kept)
    }

    /// After the last kill: when nothing is left (`clean`), records it in the uid's lock and
    /// removes the cgroup. Otherwise both stay as they are, so the uid's next lease looks for
    /// leftovers and the cgroup stays for the recovery of a later start.
    #[cfg(test)]
    fn ended(&self, clean: bool) {
        if !clean {
            return;
        }
        end_clean(self.uid.as_ref(), self.group.as_ref());
    }

    /// Creates the run's HOME at `path`: a fresh directory, mode 0700, owned by the run's uid in uid
    /// mode. Blocking (a few system calls).
    pub(crate) fn make_home(&self, path: &Path) -> io::Result<()> {
        dirs::make_private_dir(path, self.uid())
    }

    /// Gives the tree at `path` (a fresh workspace) to the run: in uid mode every entry is chowned
    /// to the run's uid without following symlinks and the top directory becomes 0700; in process
    /// mode there is nothing to do, the run already is the gateway's uid. Blocking: walks the tree.
    pub(crate) fn hand_over(&self, path: &Path) -> io::Result<()> {
        match self.uid() {
            Some(uid) => dirs::chown_tree(path, uid),
            None => Ok(()),
        }
    }

    /// Copies the operator's CLI credentials `source` into the run's `home` (see
    /// [`make_home`](Self::make_home)), mode 0600, owned by the run's uid in uid mode. Returns
    /// whether `source` existed.
    pub(crate) fn install_credentials(&self, source: &Path, home: &Path) -> io::Result<bool> {
        dirs::install_credentials(source, home, self.uid())
    }

    /// What a kill of this run needs, detached from the cell so it can move to another thread.
    fn target(&self) -> Target {
        match (&self.group, self.uid()) {
            (Some(group), _) => Target::Group(group.clone()),
            (None, Some(uid)) => Target::Uid(uid),
            (None, None) => Target::Marker(self.marker.clone()),
        }
    }

    /// Test hook: the run's cgroup directory, if it has one.
    #[cfg(test)]
    pub(crate) fn cgroup_dir(&self) -> Option<PathBuf> {
        self.group.as_ref().map(RunGroup::dir)
    }

    /// Test hook: gives the uid back without killing anything, as a crashed gateway would.
    #[cfg(test)]
    pub(crate) fn abandon(mut self) {
        self.released = true;
    }
}

impl Drop for RunCell {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let target = self.target();
        // The lock moves along, so the uid stays taken until its processes are gone.
        let lock = self.uid.take();
        let group = self.group.take();
        // An empty cgroup (the common case: a pooled checkout's identity, a run that ended) is
        // ended here, in two system calls, rather than on a blocking thread that a runtime
        // shutting down may never run.
        if let Some(empty) = group
            .as_ref()
            .filter(|g| matches!(g.populated(), Ok(false)))
        {
            end_clean(lock.as_ref(), Some(empty));
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || {
                    match target.kill(KILL_DEADLINE) {
                        Ok(_) => end_clean(lock.as_ref(), group.as_ref()),
                        Err(error) => tracing::warn!(%error, "a dropped run left processes behind"),
                    }
                    drop(lock);
                });
            }
            Err(_) => match target.kill(std::time::Duration::ZERO) {
                Ok(_) => end_clean(lock.as_ref(), group.as_ref()),
                Err(error) => {
                    tracing::warn!(%error, "a dropped run may have left processes behind")
                }
            },
        }
    }
}

/// Records a run's clean end: what its uid left in the host's shared writable directories goes,
/// its uid's lock says nothing is left, its cgroup goes.
fn end_clean(lock: Option<&UidLock>, group: Option<&RunGroup>) {
    if let Some(lock) = lock {
        sweep_shared(lock.uid());
        lock.mark_clean();
    }
    if let Some(group) = group {
        if let Err(error) = group.remove() {
            tracing::warn!(cgroup = %group, %error, "could not remove a run's cgroup");
        }
    }
}

/// Removes what `uid` left for a later run of the same uid: files in `/tmp`, `/var/tmp`,
/// `/dev/shm` and `/dev/mqueue` (see [`dirs::sweep_shared`]) and System V shared memory, message
/// queues and semaphores.
fn sweep_shared(uid: u32) {
    let mut removed = dirs::sweep_shared(uid);
    for kind in super::procfs::Ipc::ALL {
        for id in super::procfs::ipc_of_uid(kind, uid) {
            match sys::remove_ipc(kind, id) {
                Ok(()) => removed += 1,
                Err(error) => {
                    tracing::warn!(uid, id, ?kind, %error, "could not remove a run's IPC object")
                }
            }
        }
    }
    if removed > 0 {
        tracing::debug!(
            uid,
            removed,
            "removed what a run left in the host's shared places"
        );
    }
}

/// A run's uid, kept once everything of the run is gone, for the next run of the workspace it
/// owns (a recycled checkout keeps its files' owner, so it is not walked again). Dropped unused,
/// it goes back to the pool as a clean end would.
#[derive(Debug)]
pub(crate) struct KeptUid {
    /// The lock, still held and still marked held; taken by [`Containment::lease_again`].
    lock: Option<UidLock>,
    /// Its uid.
    uid: u32,
}

impl KeptUid {
    /// The uid (and gid).
    pub(crate) fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for KeptUid {
    fn drop(&mut self) {
        if let Some(lock) = &self.lock {
            lock.mark_clean();
        }
    }
}

/// Whom a kill is for.
#[derive(Debug, Clone)]
enum Target {
    /// Every process in this cgroup.
    Group(RunGroup),
    /// Every process of this uid.
    Uid(u32),
    /// Every process of our uid carrying exactly this marker.
    Marker(String),
}

impl Target {
    /// Kills and waits up to `deadline` (blocking); whether there was anything to kill.
    fn kill(&self, deadline: std::time::Duration) -> Result<bool, KillError> {
        match self {
            Self::Group(group) => group.kill(deadline),
            Self::Uid(uid) => reap::kill_uid(*uid, deadline),
            Self::Marker(marker) => {
                let run = format!("run {marker}");
                reap::kill_marked(&run, &mut |value| value == marker.as_bytes(), deadline)
                    .map(|killed| killed > 0)
            }
        }
    }
}

/// The cells of the runs in flight, filed by the workspace each run works in: the provisioner
/// files a run's cell and HOME when it makes the workspace, the agent finds them there to start
/// the run's processes, and the workspace's release takes them back out, kills what is left and
/// gives the uid back.
#[derive(Debug, Default)]
pub(crate) struct Cells {
    /// By workspace path; held only to insert, look up or remove.
    by_workspace: Mutex<HashMap<PathBuf, Arc<PlacedCell>>>,
}

/// A run's cell and the private HOME made for it.
#[derive(Debug)]
pub(crate) struct PlacedCell {
    /// Who the run's processes are, and how to stop them.
    pub(crate) cell: RunCell,
    /// The run's own HOME (and, inside it, its TMPDIR).
    pub(crate) home: PathBuf,
    /// The commit the run's checkout was made at, when the provisioner knows it (`None` for a
    /// scratch directory): read before the agent could move it, so nobody has to ask git.
    pub(crate) start_commit: Option<Arc<str>>,
}

impl PlacedCell {
    /// The run's TMPDIR: a folder of its HOME, as private as the HOME.
    pub(crate) fn tmpdir(&self) -> PathBuf {
        tmpdir_of(&self.home)
    }
}

/// The TMPDIR inside the run HOME `home`.
pub(crate) fn tmpdir_of(home: &Path) -> PathBuf {
    home.join("tmp")
}

impl Cells {
    /// Files `cell`, `home` and the checkout's `start_commit` under `workspace`.
    pub(crate) fn insert(
        &self,
        workspace: PathBuf,
        cell: RunCell,
        home: PathBuf,
        start_commit: Option<Arc<str>>,
    ) {
        let placed = PlacedCell {
            cell,
            home,
            start_commit,
        };
        self.lock().insert(workspace, Arc::new(placed));
    }

    /// The cell filed under `workspace`, if any.
    pub(crate) fn get(&self, workspace: &Path) -> Option<Arc<PlacedCell>> {
        self.lock().get(workspace).cloned()
    }

    /// Takes the cell filed under `workspace` out, kills everything of its run and waits until it
    /// is gone (blocking, see [`RunCell::retire`]), and gives its uid back; answers the run's HOME
    /// for removal.
    pub(crate) fn release(&self, workspace: &Path) -> Option<PathBuf> {
        // The kept uid, dropped here, goes back to the pool marked clean.
        self.release_keeping_uid(workspace)
            .map(|(home, _kept)| home)
    }

    /// [`release`](Self::release), keeping the run's uid for a later run of the same workspace
    /// when nothing of the run is left and the cell is no longer shared (see [`KeptUid`]).
    pub(crate) fn release_keeping_uid(
        &self,
        workspace: &Path,
    ) -> Option<(PathBuf, Option<KeptUid>)> {
        let placed = self.lock().remove(workspace)?;
        let home = placed.home.clone();
        let kept = match Arc::try_unwrap(placed) {
            Ok(placed) => placed.cell.retire().unwrap_or_else(|error| {
                tracing::error!(%error, "a run's processes survived its end");
                None
            }),
            // Still held (a run future not yet dropped): kill now; its drop kills again and only
            // then gives the uid back.
            Err(shared) => {
                if let Err(error) = shared.cell.target().kill(KILL_DEADLINE) {
                    tracing::error!(%error, "a run's processes survived its end");
                }
                None
            }
        };
        Some((home, kept))
    }

    /// Map operations cannot leave it inconsistent, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Arc<PlacedCell>>> {
        self.by_workspace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
