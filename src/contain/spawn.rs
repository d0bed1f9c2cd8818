//! Starting a run's processes: [`RunCommand`], built by [`super::RunCell::command`], and the
//! [`RunChild`] it spawns.
//!
//! Where the run has a cgroup, the child is *born* in it (`clone3` with `CLONE_INTO_CGROUP`, see
//! [`sys::clone_into_cgroup`]) instead of being forked and then moved there: a move waits for the
//! kernel's cgroup lock, an RCU grace period of several milliseconds on every run's start, while a
//! birth costs what a fork costs. Elsewhere (no cgroup, or a command with no cell) it is std's
//! spawn through tokio, with the run's uid and `PR_SET_NO_NEW_PRIVS` set before exec.
//!
//! Either way the child leads a process group of its own, starts from an empty environment plus
//! what the caller adds, and is killed if its handle is dropped before it was reaped.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::unix::AsyncFd;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::sys;

/// Where one of a child's standard streams goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Io {
    /// A pipe to the gateway, taken from the child's `stdin`/`stdout`/`stderr`.
    Piped,
    /// `/dev/null`.
    #[default]
    Null,
}

impl Io {
    fn stdio(self) -> Stdio {
        match self {
            Self::Piped => Stdio::piped(),
            Self::Null => Stdio::null(),
        }
    }
}

/// A command for a process of a run: program, arguments, environment (empty to start with),
/// working directory and stdio; spawned into the run's cell.
#[derive(Debug)]
pub(crate) struct RunCommand {
    /// Program, arguments, environment and directory; also the spawner when the child is not
    /// born in a cgroup.
    inner: Command,
    /// stdin, stdout, stderr: kept here because a std command cannot be asked for them.
    stdio: [Io; 3],
    /// The cgroup the child is born in, when the run has one.
    cgroup: Option<PathBuf>,
    /// The uid (and gid) the child runs as.
    uid: Option<u32>,
}

impl RunCommand {
    /// A command of no run: the caller's uid, no cgroup, still an empty environment, its own
    /// process group and no new privileges.
    pub(crate) fn plain(program: impl AsRef<OsStr>) -> Self {
        Self::new(program, None, None)
    }

    /// A command whose child is born in `cgroup` (when given) and runs as `uid` (when given).
    pub(super) fn new(
        program: impl AsRef<OsStr>,
        cgroup: Option<PathBuf>,
        uid: Option<u32>,
    ) -> Self {
        let mut inner = Command::new(program);
        inner.env_clear().process_group(0).kill_on_drop(true);
        if cgroup.is_none() {
            if let Some(uid) = uid {
                // std drops the supplementary groups itself when it switches uid and none are set.
                inner.uid(uid).gid(uid);
            }
            sys::forbid_new_privileges(&mut inner);
        }
        let stdio = [Io::Null; 3];
        for (io, set) in stdio
            .iter()
            .zip([Command::stdin, Command::stdout, Command::stderr])
        {
            set(&mut inner, io.stdio());
        }
        Self {
            inner,
            stdio,
            cgroup,
            uid,
        }
    }

    /// Adds an argument.
    #[cfg(test)]
    pub(crate) fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.inner.arg(arg);
        self
    }

    /// Adds arguments.
    pub(crate) fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Sets one environment variable.
    pub(crate) fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.inner.env(key, value);
        self
    }

    /// Sets environment variables.
    pub(crate) fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.inner.envs(vars);
        self
    }

    /// Sets the working directory.
    pub(crate) fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.inner.current_dir(dir);
        self
    }

    /// Where stdin comes from (`/dev/null` unless set).
    pub(crate) fn stdin(&mut self, io: Io) -> &mut Self {
        self.stdio[0] = io;
        self.inner.stdin(io.stdio());
        self
    }

    /// Where stdout goes (`/dev/null` unless set).
    pub(crate) fn stdout(&mut self, io: Io) -> &mut Self {
        self.stdio[1] = io;
        self.inner.stdout(io.stdio());
        self
    }

    /// Where stderr goes (`/dev/null` unless set).
    pub(crate) fn stderr(&mut self, io: Io) -> &mut Self {
        self.stdio[2] = io;
        self.inner.stderr(io.stdio());
        self
    }

    /// The std command, to read back what was set.
    #[cfg(test)]
    pub(crate) fn as_std(&self) -> &std::process::Command {
        self.inner.as_std()
    }

    /// Starts the child.
    pub(crate) fn spawn(&mut self) -> io::Result<RunChild> {
        match &self.cgroup {
            Some(cgroup) => self.born_in(cgroup),
            None => Ok(RunChild::from_tokio(self.inner.spawn()?)),
        }
    }

    /// Runs the child to its end and collects its piped stdout and stderr.
    #[cfg(test)]
    pub(crate) async fn output(&mut self) -> io::Result<std::process::Output> {
        let mut child = self.spawn()?;
        let (stdout, stderr) =
            tokio::try_join!(read_all(child.stdout.take()), read_all(child.stderr.take()))?;
        let status = child.wait().await?;
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Runs the child to its end (its output as set, `/dev/null` by default).
    pub(crate) async fn status(&mut self) -> io::Result<ExitStatus> {
        self.spawn()?.wait().await
    }

    /// Spawns with `clone3` into `cgroup` (see the module's docs).
    fn born_in(&self, cgroup: &Path) -> io::Result<RunChild> {
        let std = self.inner.as_std();
        let env: Vec<(&OsStr, &OsStr)> = std
            .get_envs()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        let program = resolve(std.get_program(), &env)?;
        let argv = std::iter::once(std.get_program())
            .chain(std.get_args())
            .map(c_string)
            .collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .iter()
            .map(|(key, value)| {
                let mut pair = OsString::from(key);
                pair.push("=");
                pair.push(value);
                c_string(&pair)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let cwd = std.get_current_dir().map(c_string).transpose()?;
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);

        let group = std::fs::File::open(cgroup)?;
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        // (the child's end, the gateway's end) of each stream; `None` for /dev/null.
        let mut pipes: [Option<(OwnedFd, OwnedFd)>; 3] = [None, None, None];
        for (slot, io) in pipes.iter_mut().zip(self.stdio) {
            if io == Io::Piped {
                *slot = Some(pipe()?);
            }
        }
        // stdin's pipe is read by the child; stdout's and stderr's are written by it.
        let child_ends: [BorrowedFd<'_>; 3] = std::array::from_fn(|i| match &pipes[i] {
            Some((read, _)) if i == 0 => read.as_fd(),
            Some((_, write)) => write.as_fd(),
            None => null.as_fd(),
        });
        let (report_read, report_write) = pipe()?;
        let birth = sys::Birth {
            program: &program,
            argv: &argv_ptrs,
            envp: &envp_ptrs,
            cwd: cwd.as_deref(),
            stdio: child_ends,
            uid: self.uid,
            cgroup: group.as_fd(),
            report: report_write.as_fd(),
        };
        let (pid, pidfd) = sys::clone_into_cgroup(&birth)?;
        drop(report_write);
        let mut child = RunChild {
            stdin: None,
            stdout: None,
            stderr: None,
            process: Process::Born(Born {
                pid,
                pidfd: Some(sys::watch_pidfd(pidfd)?),
            }),
        };
        // The child's ends close here, so the gateway sees EOF when the child is done with them.
        let [stdin, stdout, stderr] = pipes;
        child.stdin = stdin
            .map(|(_, write)| ChildStdin::from_std(std::process::ChildStdin::from(write)))
            .transpose()?;
        child.stdout = stdout
            .map(|(read, _)| ChildStdout::from_std(std::process::ChildStdout::from(read)))
            .transpose()?;
        child.stderr = stderr
            .map(|(read, _)| ChildStderr::from_std(std::process::ChildStderr::from(read)))
            .transpose()?;
        // Nothing to read: the exec closed the pipe. An errno: the child could not start, and
        // exits 127 at once; dropping `child` reaps it.
        let mut errno = [0u8; 4];
        let read = read_full(&mut std::fs::File::from(report_read), &mut errno)?;
        if read == errno.len() {
            return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
        }
        Ok(child)
    }
}

/// Everything `pipe` carries, or nothing when there is no pipe.
#[cfg(test)]
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut bytes).await?;
    }
    Ok(bytes)
}

/// Reads until `buf` is full or the end; how many bytes came.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

fn c_string(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a program, argument, variable or directory holds a NUL byte",
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The program to exec: as given when it holds a `/`, else the first executable file of that
/// name in the child's `PATH` (as `execvp` and std's spawn look for it).
fn resolve(program: &OsStr, env: &[(&OsStr, &OsStr)]) -> io::Result<CString> {
    if program.as_bytes().contains(&b'/') {
        return c_string(program);
    }
    let path = env
        .iter()
        .find(|(key, _)| *key == "PATH")
        .map_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"), |(_, value)| {
            value
        });
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map_or_else(
            || {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found in PATH", program.to_string_lossy()),
                ))
            },
            c_string,
        )
}

/// A spawned process of a run: its pipes, waited for asynchronously, killed if dropped unreaped.
#[derive(Debug)]
pub(crate) struct RunChild {
    /// Its stdin, when piped and not taken yet.
    pub(crate) stdin: Option<ChildStdin>,
    /// Its stdout, when piped and not taken yet.
    pub(crate) stdout: Option<ChildStdout>,
    /// Its stderr, when piped and not taken yet.
    pub(crate) stderr: Option<ChildStderr>,
    /// How it was started, which decides how it is waited for.
    process: Process,
}

#[derive(Debug)]
enum Process {
    /// Spawned by std through tokio.
    Tokio(Child),
    /// Born in its cgroup by `clone3`.
    Born(Born),
}

/// A child born by `clone3`: waited for through its pidfd.
#[derive(Debug)]
struct Born {
    pid: i32,
    /// `None` once reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl RunChild {
    /// Wraps a child tokio spawned, taking its pipes out.
    pub(crate) fn from_tokio(mut child: Child) -> Self {
        Self {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            process: Process::Tokio(child),
        }
    }

    /// Its pid, until it is reaped.
    pub(crate) fn id(&self) -> Option<u32> {
        match &self.process {
            Process::Tokio(child) => child.id(),
            Process::Born(born) => born
                .pidfd
                .as_ref()
                .and_then(|_| u32::try_from(born.pid).ok()),
        }
    }

    /// Waits for it to exit and reaps it. Cancel safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.process {
            Process::Tokio(child) => child.wait().await,
            Process::Born(born) => loop {
                let Some(pidfd) = &born.pidfd else {
                    return Err(io::Error::other("the child was already reaped"));
                };
                let mut ready = pidfd.readable().await?;
                if let Some(status) = sys::reap_pidfd(pidfd.get_ref().as_fd())? {
                    born.pidfd = None;
                    return Ok(status);
                }
                ready.clear_ready();
            },
        }
    }

    /// Reaps it if it has exited.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match &mut self.process {
            Process::Tokio(child) => child.try_wait(),
            Process::Born(born) => {
                let Some(pidfd) = &born.pidfd else {
                    return Err(io::Error::other("the child was already reaped"));
                };
                let status = sys::reap_pidfd(pidfd.get_ref().as_fd())?;
                if status.is_some() {
                    born.pidfd = None;
                }
                Ok(status)
            }
        }
    }

    /// Sends it SIGKILL, unless it was reaped.
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        match &mut self.process {
            Process::Tokio(child) => child.start_kill(),
            Process::Born(born) => match &born.pidfd {
                Some(pidfd) => sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL),
                None => Ok(()),
            },
        }
    }
}

impl Drop for RunChild {
    fn drop(&mut self) {
        // tokio's own child kills and reaps itself on drop (`kill_on_drop`).
        let Process::Born(born) = &mut self.process else {
            return;
        };
        let Some(pidfd) = born.pidfd.take() else {
            return;
        };
        let _ = sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL);
        if let Ok(Some(_)) = sys::reap_pidfd(pidfd.get_ref().as_fd()) {
            return;
        }
        // Killed but not gone yet: reap it once it is, without blocking this thread. A task
        // dropped unfinished (the runtime shutting down) leaves a zombie until the gateway exits.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    while let Ok(mut ready) = pidfd.readable().await {
                        match sys::reap_pidfd(pidfd.get_ref().as_fd()) {
                            Ok(None) => ready.clear_ready(),
                            Ok(Some(_)) | Err(_) => return,
                        }
                    }
                });
            }
            Err(_) => {
                let fd = pidfd.into_inner();
                let _ = std::thread::Builder::new()
                    .name("run-child-reaper".into())
                    .spawn(move || reap_blocking(fd));
            }
        }
    }
}

/// Waits (blocking) until the process behind `pidfd` exits, and reaps it.
fn reap_blocking(pidfd: OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        match sys::reap_pidfd(pidfd.as_fd()) {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {
                let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
        }
    }
}
