//! The process-group guard: the agent and everything it started die with the run.
//!
//! A timed-out run's `claude` must not keep running and spending. The guard owns the
//! child; dropping it (timeout, cancel, client disconnect, shutdown) sends SIGKILL to the whole
//! process group and reaps the leader. A normal exit kills the group too, so background jobs the
//! agent's Bash tool left behind do not outlive the run.
//!
//! PID reuse: the group id is the leader's pid, and that pid cannot be reused while the leader is
//! unreaped or while any member of the group lives. So the group is signalled only before the
//! leader is reaped, or right after `wait` returns (when surviving members still pin the id;
//! an empty group answers ESRCH, which is ignored).

use std::io;
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// A running agent and its process group, killed on drop.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    /// `None` only while being dropped, when it moves to the reaper task.
    child: Option<Child>,
    /// The group id, equal to the leader's pid (`process_group(0)`).
    pgid: Pid,
    /// Set once `wait` reaped the leader: from then on the id may be reused, so no more signals.
    reaped: bool,
}

/// The pipes of a freshly spawned agent.
#[derive(Debug)]
pub(crate) struct Pipes {
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
}

impl ProcessGroup {
    /// Spawns `cmd`, which must have been built with `process_group(0)` and piped stdio.
    pub(crate) fn spawn(cmd: &mut Command) -> io::Result<(Self, Pipes)> {
        let mut child = cmd.spawn()?;
        let pipes = match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(stdin), Some(stdout), Some(stderr)) => Pipes {
                stdin,
                stdout,
                stderr,
            },
            _ => {
                // Built by build_command, so unreachable; still, never leave the child behind.
                let _ = child.start_kill();
                return Err(io::Error::other("the agent's stdio was not piped"));
            }
        };
        let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
            return Err(io::Error::other(
                "the agent exited before its pid was known",
            ));
        };
        let group = Self {
            child: Some(child),
            pgid: Pid::from_raw(pid),
            reaped: false,
        };
        Ok((group, pipes))
    }

    /// The group id (the leader's pid).
    pub(crate) fn pgid(&self) -> Pid {
        self.pgid
    }

    /// Waits for the leader to exit, then kills what is left of its group. Cancel safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other("the agent was already released"));
        };
        let status = child.wait().await?;
        self.reaped = true;
        // Right after the reap: surviving members still pin the group id, so this cannot hit a
        // stranger; an empty group answers ESRCH.
        signal_group(self.pgid);
        Ok(status)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // The leader is not reaped, so the id is still ours.
        signal_group(self.pgid);
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
fn signal_group(pgid: Pid) {
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(err) => {
            tracing::warn!(pgid = pgid.as_raw(), %err, "could not kill the agent's process group")
        }
    }
}
