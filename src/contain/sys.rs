//! Every `unsafe` of the module, and nothing else: the code that runs between `fork` and `exec`,
//! and the two pidfd system calls the `libc` crate has no safe wrapper for.
//!
//! Code between fork and exec runs in a copy of a multi-threaded process in which only one thread
//! survived; another thread may have held the allocator's or stdio's lock at the fork. So each
//! closure here makes plain system calls only: no allocation, no locks, no panics.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd as _, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
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

/// What the child of [`clone_into_cgroup`] does before it execs, all prepared by the parent: the
/// child of a multi-threaded process may not allocate, so every string and pointer array is built
/// before the clone and only read after it.
pub(super) struct Birth<'a> {
    /// The program's path (already searched in `PATH` when it was a bare name).
    pub(super) program: &'a CStr,
    /// `argv`, ending in a null pointer.
    pub(super) argv: &'a [*const libc::c_char],
    /// `envp`, ending in a null pointer.
    pub(super) envp: &'a [*const libc::c_char],
    /// The working directory, if it changes.
    pub(super) cwd: Option<&'a CStr>,
    /// The descriptors that become the child's stdin, stdout and stderr.
    pub(super) stdio: [BorrowedFd<'a>; 3],
    /// The uid (and gid) to become, with no supplementary groups.
    pub(super) uid: Option<u32>,
    /// The cgroup v2 directory the child is born in.
    pub(super) cgroup: BorrowedFd<'a>,
    /// The write end of a close-on-exec pipe: a child that cannot exec writes its errno there.
    pub(super) report: BorrowedFd<'a>,
}

/// `struct clone_args` of `clone3(2)`, the version with `cgroup` (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_PIDFD`: the kernel hands back a pidfd for the child (Linux 5.2).
const CLONE_PIDFD: u64 = 0x1000;
/// `CLONE_INTO_CGROUP`: the child starts in the cgroup `cgroup` names (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Starts a process that is born in the cgroup `birth.cgroup` and execs `birth.program`; returns
/// its pid and a pidfd for it. Whether the exec worked is reported on `birth.report`: the caller
/// reads it to its end (nothing: the exec happened) once its own copy of the write end is closed.
///
/// Born there, rather than forked and then moved by a write to `cgroup.procs`: a move takes the
/// kernel's cgroup threadgroup lock for writing, which waits for an RCU grace period, several
/// milliseconds on every run's start (measured 5 to 21 ms here), while a child born in the cgroup
/// takes nothing more than any fork does. No process of the run is ever outside its cgroup.
pub(super) fn clone_into_cgroup(birth: &Birth<'_>) -> io::Result<(i32, OwnedFd)> {
    // An empty signal set, made before the clone, for the child to reset its mask with.
    // SAFETY: sigemptyset only writes the set we own.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::sigemptyset(&mut empty) };
    match clone3_into(birth.cgroup)? {
        // SAFETY: this is the new child, a copy of the parent with one thread.
        Cloned::Child => unsafe { be_born(birth, &empty) },
        Cloned::Parent { pid, pidfd } => Ok((pid, pidfd)),
    }
}

/// Which side of [`clone3_into`] this is.
enum Cloned {
    /// The new child: it must exec or `_exit`, making raw system calls only.
    Child,
    /// The caller, with the child's pid and a pidfd for it.
    Parent { pid: i32, pidfd: OwnedFd },
}

/// `clone3(CLONE_PIDFD | CLONE_INTO_CGROUP)`: a copy of this process, as `fork` makes, born in
/// the cgroup directory `cgroup`.
fn clone3_into(cgroup: BorrowedFd<'_>) -> io::Result<Cloned> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM duplicates this process as fork does; `args` and `pidfd`
    // live across the call. The callers' child side only makes raw system calls.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        return Ok(Cloned::Child);
    }
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("clone3 returned a bad pid"))?;
    // SAFETY: CLONE_PIDFD made the kernel write a new descriptor that only we hold.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Cloned::Parent { pid, pidfd })
}

/// The child's side of [`clone_into_cgroup`]: stdio, process group, directory, identity, no new
/// privileges, default signal handling, exec; on any failure its errno goes to `birth.report` and
/// the child exits 127.
///
/// # Safety
/// Only in the child of a clone of a multi-threaded process. It makes raw system calls only, on
/// memory prepared before the clone: no allocation, no locks. The identity calls go straight to
/// the kernel (`syscall`), not through libc's wrappers: glibc's `setresuid` would try to switch
/// every thread it believes the process has, and this copy has only one.
unsafe fn be_born(birth: &Birth<'_>, empty: &libc::sigset_t) -> ! {
    let fail = || -> ! {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        let bytes = errno.to_ne_bytes();
        libc::write(birth.report.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    };
    for (target, fd) in (0..).zip(birth.stdio.iter()) {
        let fd = fd.as_raw_fd();
        if fd == target {
            // Already in place: only its close-on-exec flag has to go.
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                fail();
            }
        } else if libc::dup2(fd, target) < 0 {
            fail();
        }
    }
    if libc::setpgid(0, 0) != 0 {
        fail();
    }
    if let Some(cwd) = birth.cwd {
        if libc::chdir(cwd.as_ptr()) != 0 {
            fail();
        }
    }
    if let Some(uid) = birth.uid {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, uid, uid, uid) != 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
        {
            fail();
        }
    }
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        fail();
    }
    // The gateway ignores SIGPIPE (Rust does) and exec keeps ignored signals ignored; a program
    // expects the default, as std's spawn gives it. A blocked mask would be inherited too.
    if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR
        || libc::sigprocmask(libc::SIG_SETMASK, empty, std::ptr::null_mut()) != 0
    {
        fail();
    }
    libc::execve(
        birth.program.as_ptr(),
        birth.argv.as_ptr(),
        birth.envp.as_ptr(),
    );
    fail()
}

/// Reaps the process behind `pidfd` if it has exited (`waitid(P_PIDFD, WNOHANG)`, Linux 5.4):
/// its exit status, or `None` while it runs.
pub(super) fn reap_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<Option<std::process::ExitStatus>> {
    wait_pidfd(pidfd, libc::WEXITED | libc::WNOHANG)
}

/// `waitid(P_PIDFD, pidfd, flags)`: the exit status of the process behind `pidfd`, reaped, or
/// `None` when `WNOHANG` found it running.
fn wait_pidfd(
    pidfd: BorrowedFd<'_>,
    flags: libc::c_int,
) -> io::Result<Option<std::process::ExitStatus>> {
    // SAFETY: siginfo_t is plain data; zeroed, `si_pid` reads 0 when nothing was reaped.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    const P_PIDFD: libc::idtype_t = 3;
    // SAFETY: the descriptor is borrowed and open; `info` is ours to write.
    let result =
        unsafe { libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, flags) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled the SIGCHLD fields of `info`, which these accessors read.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    // The wait(2) status word std's ExitStatus is made from.
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    };
    Ok(Some(std::process::ExitStatus::from_raw(raw)))
}

/// Registers `pidfd` with tokio's reactor, so its exit can be awaited (a pidfd polls readable
/// once its process has exited). When that fails, the process is killed and reaped here: nothing
/// would be left to wait for it.
pub(super) fn watch_pidfd(pidfd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its descriptor open, and always the same one, for as long as it
    // is owned, here by the AsyncFd until it is dropped or `into_inner` gives it back.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    };
    registered.map_err(|failed| {
        let (pidfd, cause) = failed.into_parts();
        let _ = pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = wait_pidfd(pidfd.as_fd(), libc::WEXITED);
        cause
    })
}

/// Checks that processes can be born in the cgroup `cgroup` (kernel support, and no seccomp
/// filter refusing `clone3`, as Docker's default profile does): a child is born there and exits at
/// once, and is reaped before this returns.
pub(super) fn probe_birth(cgroup: BorrowedFd<'_>) -> io::Result<()> {
    match clone3_into(cgroup)? {
        // SAFETY: the child of the clone exits at once, touching nothing.
        Cloned::Child => unsafe { libc::_exit(0) },
        Cloned::Parent { pidfd, .. } => loop {
            // Blocks until the child, which exits at once, is reaped.
            match wait_pidfd(pidfd.as_fd(), libc::WEXITED) {
                Ok(_) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        },
    }
}

/// Whether an open file description other than `file` refers to its inode: anyone's descriptor
/// (read or write), a mapping, or a descriptor in flight in a unix socket. Asked by trying a write
/// lease (`F_SETLEASE` with `F_WRLCK`), which the kernel grants only when `file` is the inode's
/// only open, and released at once. Needs `CAP_LEASE` or ownership of the file.
pub(super) fn opened_elsewhere(file: &OwnedFd) -> io::Result<bool> {
    // SAFETY: `fcntl` on a descriptor the borrow keeps open, with integer arguments only.
    let taken = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
    if taken == -1 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EAGAIN) => Ok(true),
            _ => Err(error),
        };
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    Ok(false)
}

/// Removes the System V IPC object `id` of `kind` (`IPC_RMID`). A shared memory segment still
/// attached somewhere goes once the last process detaches.
pub(super) fn remove_ipc(kind: super::procfs::Ipc, id: i32) -> io::Result<()> {
    use super::procfs::Ipc;
    // SAFETY: `IPC_RMID` reads no buffer: the pointer arguments are null, the rest integers.
    let done = unsafe {
        match kind {
            Ipc::SharedMemory => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            Ipc::MessageQueue => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            Ipc::Semaphores => libc::semctl(id, 0, libc::IPC_RMID),
        }
    };
    if done == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
