//! A run's session kept for a next turn, and given back to the run that continues it.
//!
//! The CLI resumes a session (`--resume <id>`) only from the working directory it ran in, with
//! its transcript at `$HOME/.claude/projects/<slug of the cwd>/<id>.jsonl`. Every run has a fresh
//! checkout and a HOME of its own, so a kept session is two things, taken when the run ends:
//!
//! - the transcript, read back as the gateway (bounded in size);
//! - the run's changes to its workspace: a binary `git diff` of every file (tracked or not, git
//!   ignores honoured) against the commit the checkout started at, or against nothing in a
//!   scratch directory.
//!
//! The run that continues it gets the changes applied (`git apply`) on its own fresh checkout,
//! which is of the base as it is now, and the transcript placed under its own checkout's project
//! folder with the old working directory rewritten to the new one. Git runs as the run (its uid in
//! uid mode), with hooks, fsmonitor and external diff tools off, because the workspace is the
//! agent's.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::contain::{read_capped, Capped, Io, PlacedCell, RunCommand, GIT_SAFE_OPTIONS};

use super::home::project_slug;

/// How long one git command of a session's capture or restore may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of a failing git's stderr kept for its error.
const STDERR_KEPT: usize = 8 * 1024;

/// The empty tree's id: what a scratch directory's changes are a diff against.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// What a run left for its next turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// The CLI's session id.
    pub session_id: String,
    /// The working directory the run had, as written in the transcript.
    pub cwd: String,
    /// The transcript (JSON lines), as the CLI wrote it.
    #[serde(with = "base64_bytes")]
    pub transcript: Vec<u8>,
    /// The run's changes to its workspace: a binary git diff, empty when there were none.
    #[serde(with = "base64_bytes")]
    pub changes: Vec<u8>,
}

impl SavedSession {
    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads back what [`to_bytes`](Self::to_bytes) made.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("the stored session is unreadable: {e}"))
    }

    /// Bytes it holds.
    pub fn len(&self) -> usize {
        self.transcript.len() + self.changes.len()
    }

    /// Whether it holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Request extension: keep the run's session (transcript and changes) when it ends, up to
/// `max_bytes` of both together; the outcome then carries it.
#[derive(Debug, Clone, Copy)]
pub struct KeepSession {
    /// Bytes of transcript and changes kept at most; past it the session is not kept.
    pub max_bytes: usize,
}

/// Request extension: continue this session (restore it, then `--resume` it).
#[derive(Debug, Clone)]
pub struct ResumeSession(pub SavedSession);

/// What a run does with sessions, as far as the CLI's arguments go.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionArgs {
    /// Let the CLI write its transcript (otherwise `--no-session-persistence`).
    pub(crate) persist: bool,
    /// `--resume` this session id.
    pub(crate) resume: Option<String>,
}

/// Puts `saved` in place for a run in `workspace` whose HOME is `placed.home`: its changes applied
/// to the workspace, its transcript under the workspace's project folder.
pub(crate) async fn restore(
    saved: &SavedSession,
    workspace: &Path,
    placed: &PlacedCell,
    env: &[(OsString, OsString)],
) -> Result<(), String> {
    let git = Git {
        workspace,
        placed,
        env,
    };
    if !saved.changes.is_empty() {
        // Outside a repository (a scratch directory) `git apply` patches the directory as
        // `patch` would.
        let args = ["apply", "--binary", "--whitespace=nowarn", "-"];
        git.run(&[], &args, Some(&saved.changes), 0)
            .await
            .map_err(|e| {
                format!("the earlier run's changes do not apply to the new checkout: {e}")
            })?;
    }
    let new_cwd = workspace.to_string_lossy();
    let transcript = rewrite_cwd(&saved.transcript, &saved.cwd, &new_cwd);
    let folder = placed
        .home
        .join(".claude")
        .join("projects")
        .join(project_slug(workspace));
    let file = folder.join(format!("{}.jsonl", saved.session_id));
    let claude = placed.home.join(".claude");
    // A handful of small files: written in place.
    let written = std::fs::create_dir_all(&folder)
        .and_then(|()| std::fs::write(&file, &transcript))
        .and_then(|()| placed.cell.hand_over(&claude));
    written.map_err(|e| format!("cannot place the transcript in the run's HOME: {e}"))
}

/// The commit a checkout starts at, `None` in a scratch directory. Read before the run, so
/// commits the agent makes are part of its changes.
pub(crate) async fn start_commit(
    workspace: &Path,
    placed: &PlacedCell,
    env: &[(OsString, OsString)],
) -> Option<String> {
    if let Some(commit) = &placed.start_commit {
        return Some(commit.to_string());
    }
    // A scratch directory holds no repository (GIT_CEILING_DIRECTORIES keeps git from looking
    // above it): asking git would cost a process per run for nothing.
    if std::fs::symlink_metadata(workspace.join(".git")).is_err() {
        return None;
    }
    let git = Git {
        workspace,
        placed,
        env,
    };
    let out = git
        .run(
            &[],
            &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
            None,
            256,
        )
        .await
        .ok()?;
    let id = String::from_utf8_lossy(&out).trim().to_owned();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// Takes the session `session_id` of the run that just ended in `workspace`: its transcript and
/// its changes since `start` (a commit, or `None` for a scratch directory), at most `max_bytes`
/// together. `Err` says why it cannot be kept.
pub(crate) async fn capture(
    session_id: &str,
    start: Option<&str>,
    workspace: &Path,
    placed: &PlacedCell,
    env: &[(OsString, OsString)],
    max_bytes: usize,
) -> Result<SavedSession, String> {
    if session_id.is_empty()
        || !session_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "the CLI reported an unusable session id {session_id:?}"
        ));
    }
    let file = placed
        .home
        .join(".claude")
        .join("projects")
        .join(project_slug(workspace))
        .join(format!("{session_id}.jsonl"));
    let transcript = read_bounded(&file, max_bytes).await?;
    let room = max_bytes - transcript.len();
    let changes = changes(start, workspace, placed, env, room).await?;
    Ok(SavedSession {
        session_id: session_id.to_owned(),
        cwd: workspace.to_string_lossy().into_owned(),
        transcript,
        changes,
    })
}

/// Every change in `workspace` since `start`, untracked files included, as one binary diff.
async fn changes(
    start: Option<&str>,
    workspace: &Path,
    placed: &PlacedCell,
    env: &[(OsString, OsString)],
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let git = Git {
        workspace,
        placed,
        env,
    };
    // A private index (and, in a scratch directory, a private repository) in the run's TMPDIR:
    // the workspace's own index is left as the agent left it.
    let tmp = placed.tmpdir();
    let index = tmp.join("gateway-session.index");
    let mut extra: Vec<(&str, PathBuf)> = vec![("GIT_INDEX_FILE", index.clone())];
    let against = match start {
        Some(commit) => {
            // The private index starts as a copy of the checkout's own (copied by the run, so a
            // link planted in `.git` reaches nothing the run could not read itself), `-p` keeping
            // its time for git's racy-entry check: `add` then hashes only the files whose size or
            // time changed, not the whole tree. Without a copy it still works, hashing every file.
            let copied = git
                .program("cp", &["-p", ".git/index", &index.to_string_lossy()])
                .await;
            if let Err(why) = copied {
                tracing::debug!(%why, "no copy of the checkout's index; hashing the whole tree");
            }
            commit.to_owned()
        }
        None => {
            let dir = tmp.join("gateway-session.git");
            git.run(
                &[],
                &["init", "--quiet", "--bare", &dir.to_string_lossy()],
                None,
                4096,
            )
            .await?;
            extra.push(("GIT_DIR", dir));
            extra.push(("GIT_WORK_TREE", workspace.to_path_buf()));
            EMPTY_TREE.to_owned()
        }
    };
    git.run(&extra, &["add", "--all", "."], None, 64 * 1024)
        .await?;
    let out = git
        .run(
            &extra,
            &[
                "diff",
                "--cached",
                "--binary",
                "--no-ext-diff",
                "--no-textconv",
                "--no-renames",
                &against,
                "--",
            ],
            None,
            max_bytes,
        )
        .await?;
    Ok(out)
}

/// Reads `file` whole, refusing one over `max_bytes`.
async fn read_bounded(file: &Path, max_bytes: usize) -> Result<Vec<u8>, String> {
    let handle = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("the CLI left no transcript: {e}"))?;
    let mut bytes = Vec::new();
    handle
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read the transcript: {e}"))?;
    if bytes.len() > max_bytes {
        return Err(format!(
            "the transcript is larger than MAX_SESSION_BYTES ({max_bytes} bytes)"
        ));
    }
    Ok(bytes)
}

/// The transcript with every mention of the old working directory replaced by the new one, as
/// the CLI writes paths inside JSON strings.
fn rewrite_cwd(transcript: &[u8], old: &str, new: &str) -> Vec<u8> {
    let quoted = |path: &str| {
        let json = serde_json::to_string(path).unwrap_or_default();
        json.trim_matches('"').as_bytes().to_vec()
    };
    let (old, new) = (quoted(old), quoted(new));
    if old.is_empty() {
        return transcript.to_vec();
    }
    let mut out = Vec::with_capacity(transcript.len());
    let mut rest = transcript;
    while let Some(at) = rest.windows(old.len()).position(|w| w == old.as_slice()) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(&new);
        rest = &rest[at + old.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Runs git as the run, in its workspace.
struct Git<'a> {
    /// The run's workspace: git's working directory.
    workspace: &'a Path,
    /// The run: who git runs as, and its HOME.
    placed: &'a PlacedCell,
    /// The agent's allow-listed environment (`PATH` among it).
    env: &'a [(OsString, OsString)],
}

impl Git<'_> {
    /// Runs `program args` as the run in its workspace, with no input and its output dropped;
    /// a failure is its exit status.
    async fn program(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let status = self
            .placed
            .cell
            .command(program)
            .envs(self.env.iter().cloned())
            .args(args)
            .current_dir(self.workspace)
            .status()
            .await
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{program} ended with {status}"))
        }
    }

    /// Runs `git args` with `extra_env`, feeding it `stdin`, and answers its stdout, at most
    /// `cap` bytes (more is an error); a failure is git's first line of stderr.
    async fn run(
        &self,
        extra_env: &[(&str, PathBuf)],
        args: &[&str],
        stdin: Option<&[u8]>,
        cap: usize,
    ) -> Result<Vec<u8>, String> {
        let what = args.first().copied().unwrap_or("git");
        let mut cmd: RunCommand = self.placed.cell.command("git");
        cmd.envs(self.env.iter().cloned())
            .env("HOME", &self.placed.home)
            .env("TMPDIR", self.placed.tmpdir())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            // A scratch directory is not a repository, whatever encloses JOBS_DIR.
            .env(
                "GIT_CEILING_DIRECTORIES",
                self.workspace.parent().unwrap_or(self.workspace),
            )
            .envs(extra_env.iter().map(|(k, v)| (*k, v.as_os_str())))
            // The workspace is the agent's: nothing in it may make git run a program.
            .args(GIT_SAFE_OPTIONS)
            .args([
                // The checkout was handed to the run (chowned) after its index was written, which
                // changes every file's owner and ctime: compared on those, every entry of the
                // copied index would look changed and be hashed again. Size, mode and mtime (and
                // git's check of entries as new as the index) still catch every edit.
                "-c",
                "core.checkStat=minimal",
                "-c",
                "core.trustctime=false",
            ])
            .args(args)
            .current_dir(self.workspace)
            .stdin(if stdin.is_some() { Io::Piped } else { Io::Null })
            .stdout(Io::Piped)
            .stderr(Io::Piped);
        let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
        let (input, out, err) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let work = async {
            let feed = async {
                if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
                    // A git that stops reading says why on stderr.
                    let _ = pipe.write_all(bytes).await;
                }
            };
            // Both pipes are read to their end, so git never blocks on a full one.
            let read_out = async {
                match out {
                    Some(pipe) => read_capped(pipe, cap.saturating_add(1)).await,
                    None => Ok(Capped::new(0)),
                }
            };
            let read_err = async {
                match err {
                    Some(pipe) => read_capped(pipe, STDERR_KEPT).await,
                    None => Ok(Capped::new(0)),
                }
            };
            let ((), out, err) = tokio::join!(feed, read_out, read_err);
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out?, err?))
        };
        let (status, out, err) = tokio::time::timeout(GIT_TIMEOUT, work)
            .await
            .map_err(|_| format!("git {what} took longer than {}s", GIT_TIMEOUT.as_secs()))?
            .map_err(|e| format!("git {what}: {e}"))?;
        if !status.success() {
            let text = err.lossy();
            let line = text.lines().next().unwrap_or("").trim();
            return Err(format!("git {what} failed ({status}): {line}"));
        }
        let out = out.into_kept();
        if out.len() > cap {
            return Err(format!(
                "the workspace's changes are larger than MAX_SESSION_BYTES allows ({cap} bytes left)"
            ));
        }
        Ok(out)
    }
}

/// Serde for bytes as base64 text.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_working_directory_is_rewritten_everywhere() {
        let transcript = br#"{"cwd":"/jobs/ws-1","x":"/jobs/ws-1/a.txt"}"#;
        let out = rewrite_cwd(transcript, "/jobs/ws-1", "/jobs/ws-22");
        assert_eq!(out, br#"{"cwd":"/jobs/ws-22","x":"/jobs/ws-22/a.txt"}"#);
    }

    #[test]
    fn a_saved_session_reads_back() {
        let saved = SavedSession {
            session_id: "abc".into(),
            cwd: "/w".into(),
            transcript: b"{}\n".to_vec(),
            changes: vec![0, 255, 10],
        };
        assert_eq!(SavedSession::from_bytes(&saved.to_bytes()), Ok(saved));
        assert!(SavedSession::from_bytes(b"nope").is_err());
    }
}
