//! Every `unsafe` of the module, and nothing else: the code that runs between `fork` and `exec`,
//! and the two pidfd system calls the `libc` crate has no safe wrapper for.
//!
//! Code between fork and exec runs in a copy of a multi-threaded process in which only one thread
//! survived; another thread may have held the allocator's or stdio's lock at the fork. So each
//! closure here makes plain system calls only: no allocation, no locks, no panics.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::os::unix::process::ExitStatusExt as _;

/// Makes the child set `PR_SET_NO_NEW_PRIVS` just before it execs.
///
/// With it, exec never grants privileges: setuid/setgid bits and file capabilities are ignored, so
/// a run cannot climb back out of its uid through `sudo`, `su`, `passwd` or `ping`. The flag is
/// inherited by every descendant and can never be cleared.
pub(super) fn forbid_new_privileges(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec. It makes one `prctl` call and, on
    // failure, builds an `io::Error` from errno, which is a plain integer and does not allocate:
    // both are async-signal-safe, so the single-threaded copy of the parent cannot deadlock.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// Makes the child join its run's cgroup, by writing itself (`0`) into `procs`, and then, when
/// `uid` is given, become that uid and gid with no supplementary groups.
///
/// In that order, and here rather than through std's `uid`/`gid` (which switch before any
/// pre-exec hook runs): only the gateway's identity may move a process into the cgroup. A child
/// that cannot join fails to spawn; it never runs outside its run's cgroup.
pub(super) fn enter_run(command: &mut tokio::process::Command, procs: CString, uid: Option<u32>) {
    // SAFETY: the closure runs in the forked child before exec. It makes plain system calls
    // (open, write, close, setgroups, setresgid, setresuid) on memory prepared before the fork
    // (`procs`, a constant byte) and builds errors from errno, which does not allocate: all
    // async-signal-safe, so the single-threaded copy of the parent cannot deadlock.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let joined = if written == 1 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            };
            libc::close(fd);
            joined?;
            if let Some(uid) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(uid, uid, uid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Kill helper exit code: `kill(-1)` succeeded. ESRCH counts as success too: the kernel answers
/// it only when there is no other process at all, so it never says anything about the uid.
const HELPER_DONE: i32 = 0;
/// Kill helper exit code: `kill(-1)` failed otherwise.
const HELPER_KILL_FAILED: i32 = 1;
/// Kill helper exit code: the helper was not entirely the run's uid and gid, so it did not kill.
const HELPER_WRONG_IDENTITY: i32 = 2;

/// Sends SIGKILL to every process of `uid`, atomically, and to nothing else.
///
/// A helper is forked, std switches it to `uid` and gid `uid` (real, effective and saved, with the
/// supplementary groups dropped), and it calls `kill(-1, SIGKILL)`: POSIX sends that to every
/// process the caller may signal, which for an unprivileged caller is every process whose real or
/// saved uid is the caller's. The kernel walks the process list under the lock that `fork` takes to
/// add a child, so no process of the uid can fork its way out, and no other uid is ever touched.
/// The helper then `_exit`s without exec: there is no program to run.
///
/// Refuses uid 0 outright, and the helper checks its own identity before the kill: `kill(-1)` as
/// root would take down the whole machine.
pub(super) fn signal_every_process_of(uid: u32) -> io::Result<()> {
    if uid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to kill every process of uid 0",
        ));
    }
    // Never exec'd; named so that a helper that somehow returned would do nothing.
    let mut helper = std::process::Command::new("/bin/true");
    helper.uid(uid).gid(uid);
    // SAFETY: the closure runs in the forked child after std has set its gid, dropped its
    // supplementary groups and set its uid. It only calls getresuid, getresgid, kill, reads errno
    // and calls _exit, all async-signal-safe, and it never returns, so no Rust destructor or
    // allocation runs in the child.
    unsafe {
        helper.pre_exec(move || {
            let (mut ruid, mut euid, mut suid) = (0, 0, 0);
            let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
            let identity_ok = libc::getresuid(&mut ruid, &mut euid, &mut suid) == 0
                && libc::getresgid(&mut rgid, &mut egid, &mut sgid) == 0
                && [ruid, euid, suid] == [uid; 3]
                && [rgid, egid, sgid] == [uid; 3];
            if !identity_ok {
                libc::_exit(HELPER_WRONG_IDENTITY);
            }
            if libc::kill(-1, libc::SIGKILL) == 0
                || io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
            {
                libc::_exit(HELPER_DONE);
            }
            libc::_exit(HELPER_KILL_FAILED)
        });
    }
    let status = helper.status()?;
    match status.code() {
        Some(HELPER_DONE) => Ok(()),
        Some(HELPER_WRONG_IDENTITY) => Err(io::Error::other(format!(
            "the kill helper could not become uid {uid}"
        ))),
        Some(HELPER_KILL_FAILED) => Err(io::Error::other(format!(
            "kill(-1, SIGKILL) as uid {uid} failed"
        ))),
        _ => Err(io::Error::other(format!(
            "the kill helper for uid {uid} ended with {status} (signal {:?})",
            status.signal()
        ))),
    }
}

/// A file descriptor for process `pid` (`pidfd_open`, Linux 5.3), close-on-exec.
///
/// It names that very process: once the process is reaped its pid may be reused, but signals
/// sent through the descriptor still go to the old, dead process (and fail with ESRCH), never to
/// the newcomer. It becomes readable when the process exits.
pub(super) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd_open returned a bad fd"))?;
    // SAFETY: the kernel just created this descriptor for us and nothing else refers to it, so
    // the OwnedFd is its only owner and closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` (0 only checks) to the process behind `pidfd` (`pidfd_send_signal`, Linux 5.1).
pub(super) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed, so it stays open for the call; a null siginfo asks the
    // kernel to fill in the defaults (as kill(2) does), and no memory of ours is written.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
