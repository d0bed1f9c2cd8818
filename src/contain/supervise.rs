//! One owner for a spawned child and its process group, and one reader for its pipes.
//!
//! Today the agent (`agent::process`) and git (`workspace::git`) each spawn, kill and drain on
//! their own; these are the shared versions, for both to move onto.
//!
//! PID reuse: the group id is the leader's pid, and that pid cannot be reused while the leader is
//! unreaped or while any member of the group lives. So the group is signalled only before the
//! leader is reaped, or right after `wait` returns (when surviving members still pin the id; an
//! empty group answers ESRCH, which is ignored). After that, never.
//!
//! A process group is not the whole run: a tool that calls `setsid` leaves it. The run's cell
//! ([`super::RunCell::kill_all`]) reaches those; the group kill here is the quick, precise part.

use std::ffi::OsStr;
use std::io;
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};

use super::spawn::{RunChild, RunCommand};

/// The options every git command on a checkout runs with, the agent's or the gateway's: nothing
/// in the checkout may make git run a program (hooks, an fsmonitor), and a checkout handed to a
/// run's uid is still read.
pub(crate) const GIT_SAFE_OPTIONS: [&str; 6] = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "safe.directory=*",
];

/// A command for the gateway's own helpers (`git fetch`, `git clone`, `git-crypt`): it runs as the
/// gateway's uid, with the gateway's environment, but in its own process group so that a
/// cancelled fetch's `ssh` or remote helper can be killed with it, and the direct child is killed
/// if the handle is dropped. Stdio is left to the caller.
pub(crate) fn gateway_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.process_group(0).kill_on_drop(true);
    command
}

/// A running child and its process group, killed on drop.
#[derive(Debug)]
pub(crate) struct Supervised {
    /// `None` only while being dropped, when it moves to the reaper task.
    child: Option<RunChild>,
    /// The group id, equal to the leader's pid.
    pgid: Pid,
    /// Set once `wait` reaped the leader: from then on the id may be reused, so no more signals.
    reaped: bool,
}

impl Supervised {
    /// Spawns `command` as the leader of a new process group (set here, whatever the caller set).
    pub(crate) fn spawn(command: &mut Command) -> io::Result<Self> {
        command.process_group(0);
        Self::adopt(RunChild::from_tokio(command.spawn()?))
    }

    /// Spawns a run's `command` (which always leads a process group of its own).
    pub(crate) fn spawn_run(command: &mut RunCommand) -> io::Result<Self> {
        Self::adopt(command.spawn()?)
    }

    fn adopt(mut child: RunChild) -> io::Result<Self> {
        let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
            // Only if the child was already reaped, which spawn never does; never leave it behind.
            let _ = child.start_kill();
            return Err(io::Error::other(
                "the child exited before its pid was known",
            ));
        };
        Ok(Self {
            child: Some(child),
            pgid: Pid::from_raw(pid),
            reaped: false,
        })
    }

    /// The group id (the leader's pid).
    pub(crate) fn pgid(&self) -> Pid {
        self.pgid
    }

    /// Takes the child's stdin, if it was piped and not taken yet.
    pub(crate) fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut()?.stdin.take()
    }

    /// Takes the child's stdout, if it was piped and not taken yet.
    pub(crate) fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// Takes the child's stderr, if it was piped and not taken yet.
    pub(crate) fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.as_mut()?.stderr.take()
    }

    /// Waits for the leader to exit, then kills what is left of its group. Cancel safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other("the child was already released"));
        };
        let status = child.wait().await?;
        self.reaped = true;
        // Right after the reap: surviving members still pin the group id, so this cannot hit a
        // stranger; an empty group answers ESRCH.
        kill_group(self.pgid);
        Ok(status)
    }

    /// Kills the whole group now (timeout, cancel), unless the leader was already reaped. The
    /// leader still has to be waited for (or dropped, which reaps it in the background).
    #[cfg(test)]
    pub(crate) fn kill(&mut self) {
        if !self.reaped {
            kill_group(self.pgid);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // The leader is not reaped, so the id is still ours.
        kill_group(self.pgid);
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // Drop cannot await: reap in the background. Without a runtime (or if it is shutting down)
        // dropping the Child hands it to tokio's orphan queue, which reaps it later.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// SIGKILL to every member of the group; an already empty group is fine.
///
/// EPERM is expected, not a fault: an agent's group runs as its run's uid, which a gateway
/// without `CAP_KILL` (the container's least privilege) may not signal. Those processes are the
/// run cell's to kill (as the run's uid, see [`super::RunCell::kill_all`]), which every run does
/// after its agent, so nothing is left behind.
fn kill_group(pgid: Pid) {
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(Errno::EPERM) => tracing::debug!(
            pgid = pgid.as_raw(),
            "a child's process group belongs to a run's uid; its cell kills it"
        ),
        Err(err) => {
            tracing::warn!(pgid = pgid.as_raw(), %err, "could not kill a child's process group")
        }
    }
}

/// The first bytes of a stream, up to a cap, and how many it carried: what [`read_capped`] keeps
/// of a pipe, and what the agent's run keeps of its stderr while it reads it chunk by chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capped {
    /// The first bytes, at most the cap.
    pub(super) kept: Vec<u8>,
    /// How many bytes may be kept.
    cap: usize,
    /// How many bytes the stream carried in all.
    pub(super) total: u64,
}

impl Capped {
    /// Nothing kept yet, at most `cap` bytes to keep.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            kept: Vec::new(),
            cap,
            total: 0,
        }
    }

    /// Keeps what fits under the cap and counts the rest as dropped.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.total = self.total.saturating_add(chunk.len() as u64);
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Whether bytes were dropped.
    pub(crate) fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    /// The kept bytes.
    pub(crate) fn into_kept(self) -> Vec<u8> {
        self.kept
    }

    /// The kept bytes as text, invalid UTF-8 replaced (a character cut at the cap included).
    pub(crate) fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// Reads `reader` to its end, keeping at most `cap` bytes.
///
/// Reading goes on past the cap (discarding) so that the writer never blocks on a full pipe: a
/// chatty child that cannot write would never exit. Memory stays at `cap` plus one chunk.
pub(crate) async fn read_capped<R: AsyncRead + Unpin>(
    mut reader: R,
    cap: usize,
) -> io::Result<Capped> {
    let mut capped = Capped::new(cap);
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(capped);
        }
        capped.push(&chunk[..n]);
    }
}
