//! The gateway's private repository for one harvest: a bare repository in `JOBS_DIR` that
//! borrows the checkout's objects (`objects/info/alternates`) and reads its working tree
//! (`GIT_WORK_TREE`), with the gateway's configuration only, so nothing the agent left in its
//! checkout's `.git` (configuration, hooks, attribute drivers) is ever used. Every git command of
//! a harvest runs here, with [`safe`] options, except reading the checkout's `HEAD`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::contain::GIT_SAFE_OPTIONS;

use super::changes::ChangedFile;
use super::checkout::Source;
use super::git::Tool;
use super::harvest::HarvestSettings;

/// Commits listed in `changes` at most.
const MAX_COMMITS: usize = 100;
/// Bytes of a file list or of other git answers read at most.
const LIST_CAP: usize = 8 * 1024 * 1024;
/// Versions of git-crypt files a delivery checks at most.
const MAX_CHECKED: usize = 1000;
/// What every git-crypt encrypted blob starts with.
const GIT_CRYPT_HEADER: &[u8] = b"\0GITCRYPT\0";
/// The options every git command of a harvest runs with: nothing in the checkout may make git
/// run a program ([`GIT_SAFE_OPTIONS`], and no external diff), nor write to the checkout's index
/// machinery.
fn safe() -> impl Iterator<Item = &'static str> {
    GIT_SAFE_OPTIONS.into_iter().chain([
        "-c",
        "core.untrackedCache=false",
        "-c",
        "diff.external=",
        "-c",
        "core.splitIndex=false",
    ])
}

/// Whether `path` is a directory itself, not a symlink to one.
pub(super) async fn is_real_dir(path: &Path) -> bool {
    tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_dir())
}

/// The commit the checkout's `HEAD` names, read as the gateway with the checkout's own
/// configuration unable to run anything; `None` when there is none (or `.git` is not a plain
/// directory of the checkout's own).
pub(super) async fn read_head(git: &Tool, workspace: &Path) -> Option<String> {
    let dot_git = workspace.join(".git");
    if !is_real_dir(&dot_git).await {
        return None;
    }
    let git_dir = OsString::from(dot_git.as_os_str());
    let env = [
        ("GIT_DIR", git_dir.as_os_str()),
        ("GIT_CONFIG_NOSYSTEM", OsStr::new("1")),
        ("GIT_CONFIG_GLOBAL", OsStr::new("/dev/null")),
    ];
    let mut args: Vec<&str> = safe().collect();
    args.extend(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
    let out = git.output(workspace, &args, &env, 256).await.ok()?;
    let id = out.lossy().trim().to_owned();
    (id.len() >= 40 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// The gateway's private bare repository for one harvest.
pub(super) struct Repo<'a> {
    git: &'a Tool,
    /// The private repository.
    pub(super) dir: PathBuf,
    /// The checkout, its working tree.
    work: PathBuf,
    /// The private index the final tree is built in.
    pub(super) index: PathBuf,
}

impl<'a> Repo<'a> {
    /// Makes the private repository at `dir`, borrowing the objects of `workspace`'s.
    pub(super) async fn make(
        source: &'a Source,
        dir: &Path,
        workspace: &Path,
    ) -> Result<Repo<'a>, String> {
        let objects = workspace.join(".git/objects");
        if !is_real_dir(&workspace.join(".git")).await || !is_real_dir(&objects).await {
            return Err("the checkout's .git is not a plain directory".into());
        }
        let repo = Repo {
            git: &source.git,
            dir: dir.to_path_buf(),
            work: workspace.to_path_buf(),
            index: dir.join("gateway.index"),
        };
        let made = {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new().mode(0o700).create(dir)
        };
        made.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        source
            .git
            .output(
                dir,
                ["init", "--quiet", "--bare", "."],
                &[
                    ("GIT_CONFIG_NOSYSTEM", OsStr::new("1")),
                    ("GIT_CONFIG_GLOBAL", OsStr::new("/dev/null")),
                    ("GIT_TEMPLATE_DIR", OsStr::new("")),
                ],
                4096,
            )
            .await
            .map_err(|e| e.to_string())?;
        let alternates = dir.join("objects/info");
        tokio::fs::create_dir_all(&alternates)
            .await
            .and(
                tokio::fs::write(
                    alternates.join("alternates"),
                    format!("{}\n", objects.display()),
                )
                .await,
            )
            .map_err(|e| format!("cannot borrow the checkout's objects: {e}"))?;
        Ok(repo)
    }

    /// Runs git in the private repository with `index`, answering stdout.
    pub(super) async fn output(
        &self,
        args: &[String],
        index: &Path,
        global: bool,
        extra: &[(&str, &OsStr)],
        cap: usize,
    ) -> Result<(Vec<u8>, bool), String> {
        let mut env: Vec<(&str, &OsStr)> = vec![
            ("GIT_DIR", self.dir.as_os_str()),
            ("GIT_WORK_TREE", self.work.as_os_str()),
            ("GIT_INDEX_FILE", index.as_os_str()),
            ("GIT_CONFIG_NOSYSTEM", OsStr::new("1")),
            ("GIT_LITERAL_PATHSPECS", OsStr::new("1")),
        ];
        // Only a push reads the gateway's own global configuration (its credentials).
        if !global {
            env.push(("GIT_CONFIG_GLOBAL", OsStr::new("/dev/null")));
        }
        env.extend_from_slice(extra);
        let mut all: Vec<String> = safe().map(str::to_owned).collect();
        // The private repository is bare; the checkout is its working tree.
        all.extend(["-c".to_owned(), "core.bare=false".to_owned()]);
        all.extend_from_slice(args);
        let out = self
            .git
            .output(&self.work, &all, &env, cap)
            .await
            .map_err(|e| {
                let stderr = e.stderr();
                if stderr.is_empty() {
                    e.to_string()
                } else {
                    format!(
                        "{e}: {}",
                        stderr.lines().rev().take(4).collect::<Vec<_>>().join(" / ")
                    )
                }
            })?;
        let truncated = out.truncated();
        Ok((out.into_kept(), truncated))
    }

    pub(super) async fn git(&self, args: &[&str], index: &Path) -> Result<Vec<u8>, String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        self.git_owned(&args, index).await
    }

    pub(super) async fn git_owned(&self, args: &[String], index: &Path) -> Result<Vec<u8>, String> {
        let (out, cut) = self.output(args, index, false, &[], LIST_CAP).await?;
        if cut {
            return Err(format!(
                "git {} answered more than {LIST_CAP} bytes",
                args.join(" ")
            ));
        }
        Ok(out)
    }

    /// The first line of a git answer.
    pub(super) async fn line(&self, args: &[&str], index: &Path) -> Result<String, String> {
        let out = self.git(args, index).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// The files that differ between `base` and `tree`, with their line counts.
    pub(super) async fn changed_files(
        &self,
        base: &str,
        tree: &str,
    ) -> Result<Vec<ChangedFile>, String> {
        let status = self
            .git(
                &[
                    "diff-tree",
                    "-r",
                    "-z",
                    "--no-renames",
                    "--name-status",
                    base,
                    tree,
                ],
                &self.index,
            )
            .await?;
        let numstat = self
            .git(
                &[
                    "diff-tree",
                    "-r",
                    "-z",
                    "--no-renames",
                    "--numstat",
                    base,
                    tree,
                ],
                &self.index,
            )
            .await?;
        let mut files = Vec::new();
        let mut fields = status.split(|b| *b == 0).filter(|f| !f.is_empty());
        while let (Some(kind), Some(path)) = (fields.next(), fields.next()) {
            let status = match kind.first() {
                Some(b'A') => "added",
                Some(b'D') => "deleted",
                Some(b'T') => "type_changed",
                _ => "modified",
            };
            files.push(ChangedFile {
                path: String::from_utf8_lossy(path).into_owned(),
                status: status.to_owned(),
                additions: None,
                deletions: None,
                encrypted: false,
            });
        }
        // `-z --numstat`: "<added>\t<deleted>\t<path>\0" per file.
        let counts: std::collections::HashMap<String, (Option<u64>, Option<u64>)> = numstat
            .split(|b| *b == 0)
            .filter_map(|entry| {
                let text = String::from_utf8_lossy(entry);
                let mut parts = text.splitn(3, '\t');
                let added = parts.next()?.parse().ok();
                let deleted = parts.next()?.parse().ok();
                Some((parts.next()?.to_owned(), (added, deleted)))
            })
            .collect();
        for file in &mut files {
            if let Some((added, deleted)) = counts.get(&file.path) {
                file.additions = *added;
                file.deletions = *deleted;
            }
        }
        Ok(files)
    }

    /// The changed paths that are git-crypt files: marked `filter=git-crypt` by the base
    /// commit's attributes or by those of the final tree (the private index). Attributes are
    /// read from an index (`--cached`), never from the checkout's files; the base's from an
    /// index of its own (`check-attr --source` is younger than the git of Debian 12).
    pub(super) async fn encrypted(
        &self,
        base: &str,
        paths: &[String],
    ) -> Result<Vec<String>, String> {
        let mut found = Vec::new();
        if paths.is_empty() {
            return Ok(found);
        }
        let base_index = self.dir.join("base.index");
        self.git(&["read-tree", base], &base_index).await?;
        for chunk in paths.chunks(256) {
            for index in [&base_index, &self.index] {
                let mut args: Vec<String> =
                    vec!["check-attr".into(), "-z".into(), "--cached".into()];
                args.extend(["filter".into(), "--".into()]);
                args.extend(chunk.iter().cloned());
                let out = self.git_owned(&args, index).await?;
                let parts: Vec<&[u8]> = out.split(|b| *b == 0).collect();
                for entry in parts.chunks(3) {
                    if let [path, _, value] = entry {
                        let path = String::from_utf8_lossy(path).into_owned();
                        if *value == b"git-crypt" && !found.contains(&path) {
                            found.push(path);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// `tree` with the `paths` as they were at `base`: what the patch may show.
    pub(super) async fn without(
        &self,
        base: &str,
        tree: &str,
        paths: &[String],
    ) -> Result<String, String> {
        let index = self.dir.join("public.index");
        let list = self.dir.join("public.paths");
        let mut bytes = Vec::new();
        for path in paths {
            bytes.extend_from_slice(path.as_bytes());
            bytes.push(0);
        }
        tokio::fs::write(&list, bytes)
            .await
            .map_err(|e| format!("cannot write {}: {e}", list.display()))?;
        self.git(&["read-tree", tree], &index).await?;
        let from = format!("--pathspec-from-file={}", list.display());
        self.git(
            &["reset", "--quiet", &from, "--pathspec-file-nul", base],
            &index,
        )
        .await?;
        self.line(&["write-tree"], &index).await
    }

    /// The patch from `base` to `tree`, at most `cap` bytes, cut at a file boundary.
    pub(super) async fn patch(
        &self,
        base: &str,
        tree: &str,
        cap: usize,
    ) -> Result<(Vec<u8>, bool), String> {
        let args: Vec<String> = [
            "diff-tree",
            "-p",
            "--binary",
            "--full-index",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
            "--no-color",
            base,
            tree,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (mut patch, cut) = self
            .output(&args, &self.index, false, &[], cap.saturating_add(1))
            .await?;
        if !cut && patch.len() <= cap {
            return Ok((patch, false));
        }
        patch.truncate(cap);
        let end = patch
            .windows(12)
            .rposition(|w| w == b"\ndiff --git ")
            .map_or(0, |at| at + 1);
        patch.truncate(end);
        Ok((patch, true))
    }

    /// The commits from `base` to `head`, oldest first.
    pub(super) async fn commits(&self, base: &str, head: &str) -> Result<Vec<String>, String> {
        let limit = format!("--max-count={MAX_COMMITS}");
        let not_base = format!("^{base}");
        let out = self
            .git(
                &["rev-list", "--reverse", &limit, head, &not_base],
                &self.index,
            )
            .await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// A commit of `tree` on `parent` by the configured author.
    pub(super) async fn commit(
        &self,
        tree: &str,
        parent: &str,
        message: &str,
        settings: &HarvestSettings,
    ) -> Result<String, String> {
        let file = self.dir.join("gateway.message");
        tokio::fs::write(&file, message)
            .await
            .map_err(|e| format!("cannot write the commit message: {e}"))?;
        let name = OsString::from(&settings.author_name);
        let email = OsString::from(&settings.author_email);
        let env = [
            ("GIT_AUTHOR_NAME", name.as_os_str()),
            ("GIT_AUTHOR_EMAIL", email.as_os_str()),
            ("GIT_COMMITTER_NAME", name.as_os_str()),
            ("GIT_COMMITTER_EMAIL", email.as_os_str()),
        ];
        let args: Vec<String> = vec![
            "commit-tree".into(),
            tree.into(),
            "-p".into(),
            parent.into(),
            "-F".into(),
            file.to_string_lossy().into_owned(),
        ];
        let (out, _) = self.output(&args, &self.index, false, &env, 4096).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Refuses `commit` when any commit from `base` to it (the agent's and the gateway's) holds
    /// a git-crypt file that is not ciphertext: every version of every path they touch is
    /// checked, so plaintext committed along the way and reverted later is caught too.
    pub(super) async fn check_ciphertext(&self, base: &str, commit: &str) -> Result<(), String> {
        let range = format!("{base}..{commit}");
        let log = self
            .git(
                &[
                    "log",
                    "--format=",
                    "--raw",
                    "-z",
                    "-m",
                    "--no-abbrev",
                    "--no-renames",
                    &range,
                ],
                &self.index,
            )
            .await?;
        // `-z --raw`: ":<mode> <mode> <old> <new> <status>\0<path>\0" per change.
        let mut versions: Vec<(String, String)> = Vec::new();
        let mut fields = log.split(|b| *b == 0);
        while let Some(field) = fields.next() {
            // Commits are separated by newlines, which stick to the next entry.
            let raw = String::from_utf8_lossy(field);
            let raw = raw.trim_start_matches('\n');
            if !raw.starts_with(':') {
                continue;
            }
            let Some(path) = fields.next() else {
                break;
            };
            let Some(new) = raw.split(' ').nth(3) else {
                continue;
            };
            if new.bytes().all(|b| b == b'0') {
                continue; // Deleted: nothing to leak.
            }
            let version = (String::from_utf8_lossy(path).into_owned(), new.to_owned());
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        let mut paths: Vec<String> = versions.iter().map(|(p, _)| p.clone()).collect();
        paths.sort();
        paths.dedup();
        let encrypted = self.encrypted(base, &paths).await?;
        let checked: Vec<&(String, String)> = versions
            .iter()
            .filter(|(path, _)| encrypted.contains(path))
            .collect();
        if checked.len() > MAX_CHECKED {
            return Err(format!(
                "the commits hold more than {MAX_CHECKED} versions of git-crypt files to check; nothing was pushed"
            ));
        }
        for (path, blob) in checked {
            let args: Vec<String> = vec!["cat-file".into(), "blob".into(), blob.clone()];
            let (head, _) = self
                .output(&args, &self.index, false, &[], GIT_CRYPT_HEADER.len())
                .await?;
            if head != GIT_CRYPT_HEADER {
                return Err(format!(
                    "{path} is a git-crypt file but a commit holds it unencrypted; nothing was pushed"
                ));
            }
        }
        Ok(())
    }

    /// Pushes `commit` as `branch` to `origin`, never forcing, with the gateway's own
    /// configuration and credentials.
    pub(super) async fn push(
        &self,
        origin: &str,
        commit: &str,
        branch: &str,
    ) -> Result<(), String> {
        let args: Vec<String> = vec![
            "push".into(),
            "--quiet".into(),
            "--no-verify".into(),
            "--".into(),
            origin.into(),
            format!("{commit}:refs/heads/{branch}"),
        ];
        self.output(&args, &self.index, true, &[], 4096)
            .await
            .map(drop)
            .map_err(|why| format!("the push was refused: {why}"))
    }
}
