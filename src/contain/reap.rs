//! Killing everything of a run, and making sure it is gone.
//!
//! A run's processes are not a tree the gateway can follow: the agent's Bash tool starts every
//! command under `setsid`, tools daemonise (`nohup … &`, double forks) and get re-parented to init.
//! Process groups and parent links therefore miss them. What every such process keeps is its uid
//! (uid mode) or, in the fallback, its inherited environment (process mode); both are used here.
//!
//! "Gone" means no live process is left: a zombie (exited, waiting for its parent to reap it)
//! runs nothing, holds no files open, and counts as dead.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::procfs;
use super::sys;

/// How long a kill-all waits for the processes to be gone before it reports survivors. SIGKILL
/// takes effect within microseconds unless a process sleeps uninterruptibly (a hung NFS read);
/// two seconds covers a loaded machine without holding a job slot for long.
pub(crate) const KILL_DEADLINE: Duration = Duration::from_secs(2);

/// How often uid mode repeats its kill while something lives: only a process that was half-way
/// through becoming the run's uid (forked by root, not yet `setuid`) can escape one sweep.
const RESWEEP_EVERY: Duration = Duration::from_millis(50);

/// The environment variable that marks every process of a run: `<instance>/<gateway>/<run>`.
pub(crate) const MARKER_VAR: &str = "CLAUDE_GATEWAY_RUN";

/// A kill-all that did not finish: something of the run may still be running.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum KillError {
    /// These processes were still alive at the deadline.
    Survived {
        /// Which run ("uid 61003", "run k/t/r").
        run: String,
        /// The survivors' pids.
        pids: Vec<i32>,
        /// How long the kill kept trying.
        after: Duration,
    },
    /// `/proc` could not be listed or the kill helper could not run.
    Io {
        /// Which run.
        run: String,
        /// The operating system's answer.
        source: io::Error,
    },
}

impl fmt::Display for KillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Survived { run, pids, after } => {
                write!(
                    f,
                    "{} process(es) of {run} survived SIGKILL for {}ms (pids",
                    pids.len(),
                    after.as_millis()
                )?;
                for pid in pids.iter().take(10) {
                    write!(f, " {pid}")?;
                }
                f.write_str(if pids.len() > 10 { " …)" } else { ")" })
            }
            Self::Io { run, source } => {
                write!(f, "could not kill the processes of {run}: {source}")
            }
        }
    }
}

impl std::error::Error for KillError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Survived { .. } => None,
        }
    }
}

/// Kills every process of `uid` and waits until none is alive. Blocking; returns whether there
/// was anything to kill.
///
/// Each round lists the uid's live processes; if there are any, the atomic `kill(-1)` sweep runs
/// (again every [`RESWEEP_EVERY`]), and the round waits on pidfds of the listed processes, which
/// become readable the moment each exits: the wait ends as soon as the kernel is done, without
/// sleeping in steps.
///
/// The listing comes first because the sweep cannot tell "nothing there": `kill(-1)` answers ESRCH
/// only when the machine has no other process at all, not when none was the caller's to signal.
/// A run that left nothing (the common case) thus costs one read of `/proc` and no fork.
pub(super) fn kill_uid(uid: u32, deadline: Duration) -> Result<bool, KillError> {
    let run = || format!("uid {uid}");
    let started = Instant::now();
    let until = started + deadline;
    let mut last_sweep: Option<Instant> = None;
    loop {
        let live =
            procfs::live_pids_of_uid(uid).map_err(|source| KillError::Io { run: run(), source })?;
        if live.is_empty() {
            return Ok(last_sweep.is_some());
        }
        let now = Instant::now();
        // Sweep before looking at the clock, so that even a zero deadline kills once.
        if last_sweep.is_none_or(|at| now.duration_since(at) >= RESWEEP_EVERY) {
            sys::signal_every_process_of(uid)
                .map_err(|source| KillError::Io { run: run(), source })?;
            last_sweep = Some(now);
        }
        if now >= until {
            return Err(KillError::Survived {
                run: run(),
                pids: live,
                after: started.elapsed(),
            });
        }
        let pidfds: Vec<OwnedFd> = live
            .iter()
            .filter_map(|pid| sys::pidfd_open(*pid).ok())
            .collect();
        wait_exited(pidfds, until.min(Instant::now() + RESWEEP_EVERY));
    }
}

/// Kills, PID-reuse-safely, every live process of the gateway's uid whose marker satisfies
/// `matches`, round after round until a round finds none. Blocking; returns how many it killed.
///
/// Per process: open a pidfd first, then read the marker from `/proc/<pid>/environ`, then signal
/// through the pidfd. If the pid was reused between the listing and the pidfd, the pidfd names
/// the newcomer and so does the environ read: the decision is about the process that gets the
/// signal. If the process dies and its pid is reused after the pidfd was opened, the signal goes
/// to the dead process (ESRCH) and the newcomer is looked at in the next round. So nothing is ever
/// signalled on the strength of another process's marker.
///
/// Limits (process mode is a fallback): a process that starts a program with a scrubbed
/// environment (`env -i`, or any exec with its own `envp`), that overwrites its environment block
/// in memory, or that makes itself non-dumpable (its environ then needs root to read) carries no
/// readable marker and escapes. Uid mode has no such gap.
pub(super) fn kill_marked(
    run: &str,
    matches: &mut dyn FnMut(&[u8]) -> bool,
    deadline: Duration,
) -> Result<usize, KillError> {
    let started = Instant::now();
    let until = started + deadline;
    let me = std::process::id() as i32;
    let uid = nix::unistd::geteuid().as_raw();
    let mut killed = 0;
    loop {
        let candidates = procfs::processes().map_err(|source| KillError::Io {
            run: run.to_owned(),
            source,
        })?;
        let mut hit: Vec<(i32, OwnedFd)> = Vec::new();
        for process in candidates {
            if process.dead || process.pid == me || !process.has_uid(uid) {
                continue;
            }
            let Ok(pidfd) = sys::pidfd_open(process.pid) else {
                continue; // Gone since the listing.
            };
            let marked = matches!(
                procfs::environ_var(process.pid, MARKER_VAR),
                Ok(Some(value)) if matches(&value)
            );
            if !marked {
                continue;
            }
            match sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL) {
                Ok(()) => hit.push((process.pid, pidfd)),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    tracing::warn!(pid = process.pid, error = %e, "cannot kill a process of {run}")
                }
            }
        }
        if hit.is_empty() {
            return Ok(killed);
        }
        killed += hit.len();
        if Instant::now() >= until {
            return Err(KillError::Survived {
                run: run.to_owned(),
                pids: hit.into_iter().map(|(pid, _)| pid).collect(),
                after: started.elapsed(),
            });
        }
        wait_exited(hit.into_iter().map(|(_, fd)| fd).collect(), until);
    }
}

/// Waits until every pidfd is readable (its process exited) or `until` passes.
fn wait_exited(mut pidfds: Vec<OwnedFd>, until: Instant) {
    while !pidfds.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // Rounded up so a sub-millisecond remainder still waits instead of spinning.
        let millis = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
        let mut polled: Vec<PollFd<'_>> = pidfds
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut polled, PollTimeout::from(millis)) {
            Ok(0) => return,
            Ok(_) => {
                let exited: Vec<bool> = polled
                    .iter()
                    .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                    .collect();
                drop(polled);
                let mut index = 0;
                pidfds.retain(|_| {
                    let keep = !exited[index];
                    index += 1;
                    keep
                });
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Answers "is the gateway named by this tag still running?" for recovery, caching each tag.
///
/// A tag is `<pid>-<start time>`: the pair names one process for the life of the machine, so a
/// reused pid does not make a dead gateway look alive.
#[derive(Debug, Default)]
pub(super) struct GatewayLiveness {
    /// Tags already looked up.
    known: HashMap<Vec<u8>, bool>,
}

impl GatewayLiveness {
    /// Whether the gateway process `tag` names is alive.
    pub(super) fn alive(&mut self, tag: &[u8]) -> bool {
        if let Some(alive) = self.known.get(tag) {
            return *alive;
        }
        let alive = std::str::from_utf8(tag)
            .ok()
            .and_then(|tag| tag.split_once('-'))
            .and_then(|(pid, start)| Some((pid.parse::<i32>().ok()?, start.parse::<u64>().ok()?)))
            .is_some_and(|(pid, start)| procfs::start_time(pid) == Some(start));
        self.known.insert(tag.to_vec(), alive);
        alive
    }
}

/// This process's tag: `<pid>-<start time>`.
pub(super) fn own_tag() -> String {
    let pid = std::process::id() as i32;
    let start = procfs::start_time(pid).unwrap_or(0);
    format!("{pid}-{start}")
}
