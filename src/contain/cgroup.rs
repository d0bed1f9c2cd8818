//! Per-run cgroups (v2): the kernel's own list of every process of a run, and its own kill.
//!
//! Where the gateway may make cgroups (its cgroup v2 directory is writable: root on a host, or a
//! subtree delegated to it), each run gets a child cgroup of its own. Every process of the run is
//! born in it (`clone3` with `CLONE_INTO_CGROUP`, before it drops to the run's uid, see
//! [`super::RunCommand`]), and no process of the run can leave it: moving a process needs write
//! access to a `cgroup.procs` file, and those belong to the gateway. Descendants inherit the
//! cgroup whatever they do (`setsid`, double forks, daemons).
//!
//! So "is anything of the run still running?" is one read of `cgroup.events` (`populated 0|1`,
//! cleared when the last process exits, before it is reaped), and "kill all of it" is one write to
//! `cgroup.kill` (Linux 5.14), atomic against forks like `kill(-1)`, without a helper process and
//! without reading `/proc`: the fallback reads every process's `status`, whose reads queue behind
//! busy processes' memory-map locks on a loaded machine, and that was most of a run's
//! containment cost.
//!
//! No controller is enabled: the cgroups only group, they limit nothing, so the "no internal
//! processes" rule of cgroup v2 never applies and the gateway's own cgroup can hold both the
//! gateway and its runs' cgroups.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::mode::Unavailable;
use super::reap::KillError;
use super::settings::CgroupSetting;

/// Every run cgroup's name is this, then the instance key, the gateway process's tag and the run's
/// id, dot-separated: a restarted gateway removes only its own instance's leftovers, and only
/// those of gateway processes that no longer run.
const PREFIX: &str = "claude-gateway.";

/// The first wait before `cgroup.events` is read again after a kill; each next one doubles, up
/// to [`LAST_REREAD`] (see [`RunGroup::kill`] for why it is read at all).
const FIRST_REREAD: Duration = Duration::from_millis(1);

/// The longest wait between two reads of `cgroup.events` while a kill completes.
const LAST_REREAD: Duration = Duration::from_millis(50);

/// The directory the run cgroups are made in.
#[derive(Debug)]
pub(super) struct RunGroups {
    /// A writable cgroup v2 directory.
    parent: PathBuf,
}

impl RunGroups {
    /// Applies the setting: `None` when runs are to be contained without cgroups. An explicit
    /// directory that does not work is an error; `auto` falls back quietly (with a debug line).
    pub(super) fn discover(setting: &CgroupSetting) -> Result<Option<Self>, Unavailable> {
        match setting {
            CgroupSetting::Off => Ok(None),
            CgroupSetting::Dir(dir) => match probe(dir) {
                Ok(()) => Ok(Some(Self {
                    parent: dir.clone(),
                })),
                Err(e) => Err(Unavailable::Cgroup {
                    path: dir.clone(),
                    reason: e.to_string(),
                }),
            },
            CgroupSetting::Auto => {
                let found = own_cgroup_dir().and_then(|dir| probe(&dir).map(|()| dir));
                match found {
                    Ok(parent) => Ok(Some(Self { parent })),
                    Err(e) => {
                        tracing::debug!(error = %e, "no writable cgroup v2 for runs; using /proc");
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The directory run cgroups are made in.
    pub(super) fn parent(&self) -> &Path {
        &self.parent
    }

    /// Makes the cgroup of run `run` of the gateway process `tag` of instance `instance`. A
    /// leftover of the same name (which would need a reused tag and run id) is killed and reused.
    pub(super) fn make(&self, instance: &str, tag: &str, run: &str) -> io::Result<RunGroup> {
        let instance = field(instance);
        let group = RunGroup {
            dir: self.parent.join(format!("{PREFIX}{instance}.{tag}.{run}")),
        };
        match fs::create_dir(&group.dir) {
            Ok(()) => Ok(group),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                group
                    .kill(super::KILL_DEADLINE)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Ok(group)
            }
            Err(e) => Err(e),
        }
    }

    /// The run cgroups of instance `instance` made by gateway processes for which
    /// `orphaned(tag)` holds.
    pub(super) fn orphans(
        &self,
        instance: &str,
        orphaned: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Vec<RunGroup> {
        let Ok(entries) = fs::read_dir(&self.parent) else {
            return Vec::new();
        };
        let own = format!("{PREFIX}{}.", field(instance));
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|entry| {
                let name = entry.file_name();
                name.as_bytes()
                    .strip_prefix(own.as_bytes())
                    .and_then(|rest| rest.split(|b| *b == b'.').next())
                    .is_some_and(&mut *orphaned)
            })
            .map(|entry| RunGroup { dir: entry.path() })
            .collect()
    }
}

/// `value` as one dot-separated field of a cgroup name: dots become underscores.
fn field(value: &str) -> String {
    value.replace('.', "_")
}

/// The cgroup v2 directory this process is in: its `0::` line of `/proc/self/cgroup` under the
/// cgroup2 mount of `/proc/self/mountinfo`.
fn own_cgroup_dir() -> io::Result<PathBuf> {
    let cgroups = fs::read_to_string("/proc/self/cgroup")?;
    let own = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("this process is in no cgroup v2 hierarchy"))?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    mounts
        .lines()
        .find_map(|line| cgroup2_dir(line, own))
        .ok_or_else(|| io::Error::other(format!("no cgroup2 mount shows the cgroup {own}")))
}

/// The directory of cgroup `own` under the mount of this `mountinfo` line, if it is a cgroup2
/// mount that shows it. Fields: id, parent, dev, root, mount point, options…, `-`, type, ….
fn cgroup2_dir(line: &str, own: &str) -> Option<PathBuf> {
    let (before, after) = line.split_once(" - ")?;
    if after.split_whitespace().next()? != "cgroup2" {
        return None;
    }
    let mut fields = before.split_whitespace();
    let root = fields.nth(3)?;
    let mount_point = fields.next()?;
    let inside = Path::new(own).strip_prefix(root).ok()?;
    Some(Path::new(mount_point).join(inside))
}

/// Checks that run cgroups can be made in `dir` and killed: makes one, looks for `cgroup.kill`
/// (Linux 5.14), removes it.
fn probe(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!("{PREFIX}probe-{}", std::process::id()));
    fs::create_dir(&probe).or_else(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Ok(()),
        _ => Err(e),
    })?;
    let killable = probe.join("cgroup.kill").exists() && probe.join("cgroup.events").exists();
    // Runs' processes are born in their cgroup (see `super::RunCommand`): that must work too.
    let born = fs::File::open(&probe).and_then(|dir| super::sys::probe_birth(dir.as_fd()));
    fs::remove_dir(&probe)?;
    if !killable {
        return Err(io::Error::other(
            "the cgroup has no cgroup.kill (Linux 5.14 or later is needed)",
        ));
    }
    born.map_err(|e| {
        io::Error::other(format!(
            "processes cannot be started in a cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7, \
             not refused by a seccomp filter): {e}"
        ))
    })
}

/// One run's cgroup.
#[derive(Debug, Clone)]
pub(super) struct RunGroup {
    /// Its directory.
    dir: PathBuf,
}

impl RunGroup {
    /// Its directory.
    #[cfg(test)]
    pub(super) fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Its directory, for a child to be born in (see [`super::RunCommand`]).
    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// Its name, for messages.
    pub(super) fn name(&self) -> &OsStr {
        self.dir.file_name().unwrap_or_default()
    }

    /// Whether any process is in it.
    pub(super) fn populated(&self) -> io::Result<bool> {
        let events = fs::read_to_string(self.dir.join("cgroup.events"))?;
        events
            .lines()
            .find_map(|line| line.strip_prefix("populated "))
            .map(|value| value.trim() == "1")
            .ok_or_else(|| io::Error::other("cgroup.events has no populated line"))
    }

    /// Kills every process in it and waits until none is left (at most `deadline`); returns
    /// whether there was anything to kill. Blocking.
    ///
    /// The wait is on an inotify watch of `cgroup.events`, which the kernel modifies when the
    /// cgroup empties, and on short rereads: the kernel sends at most one notification per
    /// cgroup file every 20 ms (`CGROUP_FILE_NOTIFY_MIN_INTV`, delaying the rest), so a run that
    /// ends within 20 ms of its cgroup filling would wait out that timer (14 ms at the median,
    /// measured) while `populated` already reads 0. The rereads start at [`FIRST_REREAD`] and
    /// double, so a kill that frees the cgroup at once costs about a millisecond and a long one
    /// still sleeps on the watch.
    pub(super) fn kill(&self, deadline: Duration) -> Result<bool, KillError> {
        let io_error = |source: io::Error| KillError::Io {
            run: format!("cgroup {}", self.name().to_string_lossy()),
            source,
        };
        if !self.populated().map_err(io_error)? {
            return Ok(false);
        }
        let until = Instant::now() + deadline;
        // Watch first, so the emptying cannot slip between the kill and the watch.
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| io_error(e.into()))?;
        inotify
            .add_watch(&self.dir.join("cgroup.events"), AddWatchFlags::IN_MODIFY)
            .map_err(|e| io_error(e.into()))?;
        fs::write(self.dir.join("cgroup.kill"), b"1").map_err(io_error)?;
        let mut reread = FIRST_REREAD;
        loop {
            if !self.populated().map_err(io_error)? {
                return Ok(true);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KillError::Survived {
                    run: format!("cgroup {}", self.name().to_string_lossy()),
                    pids: self.pids(),
                    after: deadline,
                });
            }
            let wait = left.min(reread);
            reread = (reread * 2).min(LAST_REREAD);
            let millis = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&inotify),
                PollFlags::POLLIN,
            )];
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {
                    // Drained so the next poll waits for the next change; the events say nothing
                    // the populated line does not.
                    let _ = inotify.read_events();
                }
                Err(e) => return Err(io_error(e.into())),
            }
        }
    }

    /// The pids in it (for the report of survivors).
    pub(super) fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|procs| {
                procs
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes it; it must be empty (after a successful [`kill`](Self::kill)). A cgroup already
    /// gone is fine.
    pub(super) fn remove(&self) -> io::Result<()> {
        match fs::remove_dir(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl fmt::Display for RunGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_cgroup_is_found_under_the_cgroup2_mount_that_shows_it() {
        let v1 = "30 25 0:26 / /sys/fs/cgroup/pids rw,relatime shared:10 - cgroup cgroup rw,pids";
        let hybrid = "33 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        let namespaced = "40 35 0:30 /kubepods/pod1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_dir(v1, "/"), None);
        assert_eq!(
            cgroup2_dir(hybrid, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_dir(hybrid, "/system.slice/gw.service"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/gw.service"
            ))
        );
        assert_eq!(
            cgroup2_dir(namespaced, "/kubepods/pod1/c1"),
            Some(PathBuf::from("/sys/fs/cgroup/c1"))
        );
        assert_eq!(cgroup2_dir(namespaced, "/elsewhere"), None);
    }
}
