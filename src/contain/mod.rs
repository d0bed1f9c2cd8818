//! Containment of runs: who a run's processes are, and how to stop all of them.
//!
//! The agent's Bash tool starts each command under `setsid`, so killing the agent's process group
//! misses it; `nohup … &`, double-forked daemons and loops writing into the workspace outlive the
//! run. And a run that shares the gateway's uid can read the gateway's `/proc/<pid>/environ`, its
//! token file and other runs' workspaces, and can signal the gateway.
//!
//! Two modes, decided once at start-up ([`Containment::new`]):
//!
//! * **uid** (the gateway may switch uids, i.e. runs as root): each run leases a uid of its own
//!   from a configured range ([`RunUidRange`], gid = uid, no supplementary groups,
//!   `PR_SET_NO_NEW_PRIVS`). The kernel then keeps runs from the gateway and from each other, and
//!   "kill the run" is `kill(-1, SIGKILL)` as that uid: atomic, complete, and never anyone else.
//!   Leases are `flock`s in a root-owned directory, so gateway processes on one host never share a
//!   uid, and a crashed process's uids are found, cleaned and reused.
//! * **process** (fallback without root): runs share the gateway's uid; each process inherits a
//!   marker variable, and killing the run kills every process carrying its marker, through pidfds.
//!   This contains cleanup, not access, and a process that scrubs its environment escapes.
//!
//! In both modes, where the gateway may make cgroups (v2, writable), each run also gets a cgroup
//! of its own ([`cgroup`]): every process of the run is in it and cannot leave it, so ending the
//! run is one write to `cgroup.kill` and checking that nothing is left one read, with no look
//! through `/proc` on the run's path; the modes' own kills are the fallback.
//!
//! Also here, for both the agent and git to share: [`Supervised`] (a child whose process group
//! dies with it), [`read_capped`], [`gateway_command`] for the gateway's own helpers, per-run
//! directories ([`RunCell::make_home`], [`RunCell::hand_over`], [`RunCell::install_credentials`])
//! and [`remove_tree`].
//!
//! The module imports nothing from the rest of the crate.

/// The containment and its per-run cells: lease, spawn, kill-all, release, recovery.
mod cell;
/// Per-run cgroups: the kernel's list of a run's processes and its atomic kill.
mod cgroup;
/// Per-run HOME, workspace hand-over, credentials, tree removal.
mod dirs;
/// Mode detection from the setting and the process's capabilities.
mod mode;
/// The uid lock directory and account checks.
mod pool;
/// Reading `/proc`.
mod procfs;
/// Kill-all by uid and by marker, and waiting until it is done.
mod reap;
/// Recycling a used workspace: the record of it as handed over, and the proof it is back.
mod reuse;
/// The operator's settings and their parsing.
mod settings;
/// Starting a run's processes: born in its cgroup where it has one.
mod spawn;
/// The supervised child, the capped pipe reader, the gateway's own commands.
mod supervise;
/// The only unsafe code: pre-exec hooks and pidfd system calls.
#[allow(unsafe_code)]
mod sys;

/// Contained processes checked for real (uid-mode tests need root).
#[cfg(test)]
mod tests;

// What the rest of the crate uses.
pub(crate) use cell::{tmpdir_of, Cells, Containment, KeptUid, PlacedCell, Recovery, RunCell};
pub(crate) use dirs::{remove_tree, remove_tree_async};
pub(crate) use mode::Mode;
pub(crate) use reap::KILL_DEADLINE;
pub(crate) use reuse::{recycle, Manifest};
pub(crate) use settings::{
    instance_key_for, CgroupSetting, ContainSettings, IsolationSetting, RunUidRange, SettingError,
    DEFAULT_LOCK_DIR,
};
pub(crate) use spawn::{Io, RunCommand};
pub(crate) use supervise::{gateway_command, read_capped, Capped, Supervised, GIT_SAFE_OPTIONS};
