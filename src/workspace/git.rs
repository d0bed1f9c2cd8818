//! Running `git` and `git-crypt`: no shell, bounded in time, output captured and capped.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncRead;

use crate::contain::{gateway_command, read_capped, Capped, Supervised};

/// How much of a command's stdout and stderr is kept. Git's answers to the commands the
/// provisioner runs are a line or two; a misbehaving remote helper must not grow memory.
const OUTPUT_CAP: usize = 16 * 1024;

/// Variables dropped from the child's environment: inherited from a parent that runs inside a
/// repository (a git hook, say), they would point every command at the wrong repository.
const REPOSITORY_OVERRIDES: [&str; 4] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
];

/// One external program (`git` or `git-crypt`) and the time any one run of it may take.
#[derive(Debug, Clone)]
pub(crate) struct Tool {
    /// The executable, looked up on `PATH` when it has no slash.
    program: PathBuf,
    /// Upper bound of one run; a fetch from a hung remote must not hold a job forever.
    timeout: Duration,
}

/// What a successful run printed, capped at [`OUTPUT_CAP`] bytes per stream.
#[derive(Debug)]
pub(crate) struct Output {
    /// Standard output, lossily decoded.
    pub(crate) stdout: String,
}

impl Tool {
    pub(crate) fn new(program: PathBuf, timeout: Duration) -> Self {
        Self { program, timeout }
    }

    /// The executable.
    pub(crate) fn program(&self) -> &Path {
        &self.program
    }

    /// Runs the program in `cwd` with `args` and returns its output when it exits with 0.
    ///
    /// The child runs in its own process group with stdin closed and `GIT_TERMINAL_PROMPT=0`,
    /// so it can never wait on a password prompt. If the timeout fires or the returned future is
    /// dropped, the whole group is killed: a fetch's `ssh` or remote helper dies with it.
    pub(crate) async fn run<I, S>(&self, cwd: &Path, args: I) -> Result<Output, CommandError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.output(cwd, args, &[], OUTPUT_CAP).await?;
        Ok(Output {
            stdout: out.lossy(),
        })
    }

    /// [`run`](Self::run) with `env` added to the child's environment (after the repository
    /// overrides are dropped, so `GIT_DIR` and friends can be set here), keeping at most `cap`
    /// bytes of stdout; [`Capped::truncated`] says whether more came.
    pub(crate) async fn output<I, S>(
        &self,
        cwd: &Path,
        args: I,
        env: &[(&str, &OsStr)],
        cap: usize,
    ) -> Result<Capped, CommandError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let mut command = gateway_command(&self.program);
        command
            .args(&args)
            .current_dir(cwd)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in REPOSITORY_OVERRIDES {
            command.env_remove(var);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let describe = || Invocation {
            program: self.program.clone(),
            args: args.clone(),
        };

        // Dropped on any way out (timeout, error, the caller's future dropped): the whole process
        // group dies with it, a fetch's `ssh` or remote helper included.
        let mut child = Supervised::spawn(&mut command).map_err(|source| CommandError::Spawn {
            invocation: describe(),
            source,
        })?;
        let stdout = child.take_stdout();
        let stderr = child.take_stderr();
        let run = async {
            // Both pipes are drained while waiting, so a chatty child cannot fill one and stall.
            tokio::join!(child.wait(), drain(stdout, cap), drain(stderr, OUTPUT_CAP))
        };
        let (status, stdout, stderr) = match tokio::time::timeout(self.timeout, run).await {
            Ok(done) => done,
            Err(_) => {
                return Err(CommandError::TimedOut {
                    invocation: describe(),
                    after: self.timeout,
                })
            }
        };
        let status = status.map_err(|source| CommandError::Spawn {
            invocation: describe(),
            source,
        })?;
        if status.success() {
            Ok(stdout)
        } else {
            Err(CommandError::Failed {
                invocation: describe(),
                status,
                stderr: stderr.lossy(),
            })
        }
    }
}

/// Reads a child's pipe to its end, keeping at most `cap` bytes (see [`read_capped`]).
async fn drain<R: AsyncRead + Unpin>(reader: Option<R>, cap: usize) -> Capped {
    match reader {
        Some(reader) => read_capped(reader, cap)
            .await
            .unwrap_or_else(|_| Capped::new(cap)),
        None => Capped::new(cap),
    }
}

/// The command line of a failed run, for messages.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The program that was run.
    program: PathBuf,
    /// Its arguments.
    args: Vec<String>,
}

impl fmt::Display for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}", self.program.display())?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        f.write_str("`")
    }
}

/// A `git` or `git-crypt` run that did not succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CommandError {
    /// The program could not be started (not installed, working directory missing) or waited for.
    Spawn {
        /// What was run.
        invocation: Invocation,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The program ran longer than the configured command timeout and was killed.
    TimedOut {
        /// What was run.
        invocation: Invocation,
        /// The timeout that fired.
        after: Duration,
    },
    /// The program exited with a non-zero status.
    Failed {
        /// What was run.
        invocation: Invocation,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr, capped.
        stderr: String,
    },
}

impl CommandError {
    /// Everything the program wrote to stderr (capped), for logs; empty unless it ran and failed.
    pub fn stderr(&self) -> &str {
        match self {
            Self::Failed { stderr, .. } => stderr.trim(),
            _ => "",
        }
    }

    /// Whether the run was killed by the command timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::TimedOut { .. })
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn { invocation, source } => write!(f, "could not run {invocation}: {source}"),
            Self::TimedOut { invocation, after } => {
                write!(f, "{invocation} timed out after {}s", after.as_secs_f64())
            }
            Self::Failed {
                invocation,
                status,
                stderr,
            } => {
                write!(f, "{invocation} failed ({status})")?;
                match headline(stderr) {
                    Some(line) => write!(f, ": {line}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The line of stderr that says what went wrong: git's first `fatal:`/`error:` line (it often
/// prints progress such as "Cloning into ..." first), else the first non-empty line.
fn headline(stderr: &str) -> Option<&str> {
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.clone().next();
    lines
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(timeout: Duration) -> Tool {
        Tool::new(PathBuf::from("sh"), timeout)
    }

    #[tokio::test]
    async fn success_returns_stdout() {
        let out = sh(Duration::from_secs(10))
            .run(Path::new("/"), ["-c", "echo hello; echo noise >&2"])
            .await
            .expect("sh runs");
        assert_eq!(out.stdout, "hello\n");
    }

    #[tokio::test]
    async fn failure_reports_status_and_the_informative_stderr_line() {
        let err = sh(Duration::from_secs(10))
            .run(
                Path::new("/"),
                [
                    "-c",
                    "echo 'Cloning into x...' >&2; echo 'fatal: no such repo' >&2; exit 3",
                ],
            )
            .await
            .expect_err("exit 3 is a failure");
        let message = err.to_string();
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.ends_with(": fatal: no such repo"), "{message}");
        assert!(err.stderr().contains("Cloning into x..."));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let err = sh(Duration::from_millis(300))
            .run(dir.path(), ["-c", &script])
            .await
            .expect_err("the script outlives the timeout");
        assert!(err.is_timeout(), "{err}");
        assert!(err.to_string().contains("timed out after 0.3s"), "{err}");

        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid written")
            .trim()
            .parse()
            .expect("pid is a number");
        // The grandchild was re-parented; it must be dead (gone, or a zombie awaiting init).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let alive = state
                .as_deref()
                .and_then(|s| s.rsplit(')').next())
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'));
            if !alive {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {pid} still running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let tool = Tool::new(PathBuf::from("/nonexistent/git"), Duration::from_secs(1));
        let err = tool
            .run(Path::new("/"), ["--version"])
            .await
            .expect_err("not installed");
        assert!(matches!(err, CommandError::Spawn { .. }));
        assert!(err
            .to_string()
            .starts_with("could not run `/nonexistent/git --version`"));
    }

    #[tokio::test]
    async fn output_is_capped_but_the_child_is_drained() {
        let out = sh(Duration::from_secs(10))
            .run(
                Path::new("/"),
                ["-c", "head -c 1000000 /dev/zero | tr '\\0' a"],
            )
            .await
            .expect("big output does not stall the child");
        assert_eq!(out.stdout.len(), OUTPUT_CAP);
    }
}
