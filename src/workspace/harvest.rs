//! Taking what a run changed before its checkout is removed, and delivering it on request.
//!
//! After the agent's call returns, everything of the run is killed first, so nothing of the run
//! is left to change the tree while the gateway reads it. Then git runs **as the gateway**, but
//! never in the agent's repository as the agent left it: the checkout is hostile ground (hooks,
//! `core.fsmonitor`, filter and diff drivers, `core.hooksPath` in its `.git/config`, symlinks).
//! Every command runs against a private bare repository the gateway makes in `JOBS_DIR` (a
//! `ws-<uuid>` directory, so a crash leaves nothing the start-up sweep misses), which borrows the
//! checkout's objects through `objects/info/alternates` and reads its working tree through
//! `GIT_WORK_TREE`. Its configuration is the gateway's own: no system or global file, hooks off,
//! fsmonitor off, no external diff or textconv. Only `HEAD` is read from the checkout's own
//! repository, with `rev-parse`, which runs no program.
//!
//! git-crypt: a file whose path the base commit or the final tree marks `filter=git-crypt` is
//! listed as changed with `encrypted: true` but left out of the patch. When delivering, the
//! gateway's key (a copy in the private repository, removed with it) re-encrypts such files
//! through git-crypt's clean filter, and the pushed commit is checked to hold ciphertext only.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use gateway_layers::workspace::WorkspacePath;
use gateway_layers::BoxError;
use http::Request;
use tower::{Layer, Service};

use crate::agent::{AgentOutcome, AgentRequest};
use crate::contain::Cells;

use super::changes::{check_branch, ChangedFile, Changes, DeliverRequest, Delivery};
use super::checkout::Source;
use super::cleanup::{fresh_name, PendingDir};
use super::git::Tool;

/// Files listed in `changes` at most.
const MAX_FILES: usize = 1000;
/// Commits listed in `changes` at most.
const MAX_COMMITS: usize = 100;
/// Bytes of a file list or of other git answers read at most.
const LIST_CAP: usize = 8 * 1024 * 1024;
/// What every git-crypt encrypted blob starts with.
const GIT_CRYPT_HEADER: &[u8] = b"\0GITCRYPT\0";
/// Longest delivery error kept.
const ERROR_CHARS: usize = 600;

/// The options every git command of a harvest runs with: nothing in the checkout may make git
/// run a program.
const SAFE: [&str; 12] = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "safe.directory=*",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "diff.external=",
    "-c",
    "core.splitIndex=false",
];

/// What the operator decided about harvests (`MAX_DIFF_BYTES`, `DELIVERY_*`).
#[derive(Debug, Clone)]
pub struct HarvestSettings {
    /// Bytes of patch kept per job.
    pub max_diff_bytes: usize,
    /// The author (and committer) name of delivery commits.
    pub author_name: String,
    /// Their e-mail address.
    pub author_email: String,
    /// Whether a delivery may push to the base branch.
    pub allow_base_branch: bool,
}

/// Request extension: take the run's changes when its agent ends (and deliver them, when asked);
/// what was taken is left in the slot.
#[derive(Debug, Clone)]
pub(crate) struct Harvesting {
    /// The job, named in the default commit message.
    pub(crate) job_id: String,
    /// Delivery asked for.
    pub(crate) deliver: Option<DeliverRequest>,
    /// Where the harvest is left for the job.
    pub(crate) slot: Arc<Mutex<Option<Harvest>>>,
}

/// What a harvest took.
#[derive(Debug, Default, Clone)]
pub(crate) struct Harvest {
    /// The changes; `None` when they could not be read.
    pub(crate) changes: Option<Changes>,
    /// The patch (bounded), when there are changes.
    pub(crate) patch: Option<Vec<u8>>,
    /// What delivery did, when asked.
    pub(crate) delivery: Option<Delivery>,
}

/// Takes runs' changes: the base the checkouts come from, where private repositories go, and
/// the runs' cells (to kill a run whole before its tree is read).
#[derive(Clone)]
pub(crate) struct Harvester {
    source: Arc<Source>,
    jobs_dir: PathBuf,
    cells: Option<Arc<Cells>>,
    settings: Arc<HarvestSettings>,
}

impl fmt::Debug for Harvester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harvester")
            .field("jobs_dir", &self.jobs_dir)
            .finish_non_exhaustive()
    }
}

impl Harvester {
    pub(crate) fn new(
        source: Arc<Source>,
        jobs_dir: PathBuf,
        cells: Option<Arc<Cells>>,
        settings: HarvestSettings,
    ) -> Self {
        Self {
            source,
            jobs_dir,
            cells,
            settings: Arc::new(settings),
        }
    }

    /// The branch the base follows (refused as a delivery branch unless allowed); `None` when
    /// it cannot be told.
    pub(crate) async fn base_branch(&self) -> Option<String> {
        self.source.base.remote_branch().await
    }

    /// Whether pushing to the base branch is allowed.
    pub(crate) fn allows_base_branch(&self) -> bool {
        self.settings.allow_base_branch
    }

    /// The commit the checkout in `workspace` stands at, read before the agent starts.
    async fn start_commit(&self, workspace: &Path) -> Option<String> {
        read_head(&self.source.git, workspace).await
    }

    /// Kills what is left of the run, then takes its changes since `base` and delivers them
    /// when asked.
    async fn harvest(&self, workspace: &Path, base: &str, asked: &Harvesting) -> Harvest {
        if let Some(placed) = self.cells.as_ref().and_then(|cells| cells.get(workspace)) {
            if let Err(error) = placed.cell.kill_all().await {
                tracing::warn!(%error, "the run's processes could not all be stopped; its changes are not taken");
                return Harvest {
                    delivery: asked
                        .deliver
                        .as_ref()
                        .map(|d| failed(d, None, "the run's processes could not be stopped")),
                    ..Harvest::default()
                };
            }
        }
        // Removed however the harvest ends, a deadline dropping it midway included (and by the
        // start-up sweep after a crash: it is named like a workspace).
        let scratch = PendingDir::new(self.jobs_dir.join(fresh_name()));
        let result = self
            .harvest_in(scratch.path(), workspace, base, asked)
            .await;
        drop(scratch);
        match result {
            Ok(harvest) => harvest,
            Err(why) => {
                tracing::warn!(reason = %why, "could not take a run's changes");
                Harvest {
                    delivery: asked.deliver.as_ref().map(|d| {
                        failed(d, None, &format!("could not read the run's changes: {why}"))
                    }),
                    ..Harvest::default()
                }
            }
        }
    }

    async fn harvest_in(
        &self,
        scratch: &Path,
        workspace: &Path,
        base: &str,
        asked: &Harvesting,
    ) -> Result<Harvest, String> {
        let repo = Repo::make(&self.source, scratch, workspace).await?;
        let head = read_head(&self.source.git, workspace).await;
        let start = head.as_deref().unwrap_or(base);
        repo.git(&["read-tree", start], &repo.index).await?;
        // The clean filter re-encrypts git-crypt files with the gateway's key, so the tree the
        // gateway may push holds ciphertext; without the key there is no filter, and that tree
        // is never pushed.
        let filter = self.key_filter(scratch).await?;
        let mut add: Vec<String> = filter.clone();
        add.extend(["add", "--all", "--", "."].map(String::from));
        repo.git_owned(&add, &repo.index).await?;
        let tree = repo.line(&["write-tree"], &repo.index).await?;

        let mut files = repo.changed_files(base, &tree).await?;
        let encrypted = repo.encrypted(base, &files).await?;
        for file in &mut files {
            if encrypted.contains(&file.path) {
                file.encrypted = true;
                file.additions = None;
                file.deletions = None;
            }
        }
        let public = if encrypted.is_empty() {
            tree.clone()
        } else {
            repo.without(base, &tree, &encrypted).await?
        };
        let (patch, patch_cut) = repo
            .patch(base, &public, self.settings.max_diff_bytes)
            .await?;
        let commits = match &head {
            Some(head) if head != base => repo.commits(base, head).await?,
            _ => Vec::new(),
        };
        let truncated = patch_cut || files.len() > MAX_FILES;
        files.truncate(MAX_FILES);
        let changes = Changes {
            base_commit: base.to_owned(),
            head_commit: head.clone(),
            commits,
            files,
            truncated,
        };
        let delivery = match &asked.deliver {
            Some(deliver) => Some(
                self.deliver(
                    &repo,
                    deliver,
                    asked,
                    base,
                    head.as_deref(),
                    &tree,
                    &encrypted,
                    filter.is_empty(),
                )
                .await,
            ),
            None => None,
        };
        Ok(Harvest {
            changes: Some(changes),
            patch: Some(patch),
            delivery,
        })
    }

    /// The `-c` options of git-crypt's clean filter with the gateway's key, copied into the
    /// private repository where git-crypt looks for it; empty when there is no key.
    async fn key_filter(&self, scratch: &Path) -> Result<Vec<String>, String> {
        let key = &self.source.key;
        if !tokio::fs::metadata(key).await.is_ok_and(|m| m.is_file()) {
            return Ok(Vec::new());
        }
        let dir = scratch.join("git-crypt/keys");
        tokio::fs::create_dir_all(&dir)
            .await
            .and(tokio::fs::copy(key, dir.join("default")).await.map(drop))
            .map_err(|e| format!("cannot place the git-crypt key: {e}"))?;
        let program = self
            .source
            .git_crypt
            .program()
            .to_string_lossy()
            .replace('\'', "'\\''");
        Ok(vec![
            "-c".into(),
            format!("filter.git-crypt.clean='{program}' clean"),
            "-c".into(),
            "filter.git-crypt.required=true".into(),
        ])
    }

    /// Commits what the run left uncommitted and pushes the result to the base's origin.
    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &self,
        repo: &Repo<'_>,
        deliver: &DeliverRequest,
        asked: &Harvesting,
        base: &str,
        head: Option<&str>,
        tree: &str,
        encrypted: &[String],
        no_key: bool,
    ) -> Delivery {
        if let Err(why) = check_branch(&deliver.branch) {
            return failed(deliver, None, &why);
        }
        if !self.settings.allow_base_branch {
            match self.base_branch().await {
                Some(branch) if branch == deliver.branch => {
                    return failed(
                        deliver,
                        None,
                        "pushing to the base branch is not allowed (DELIVERY_ALLOW_BASE_BRANCH)",
                    )
                }
                None => {
                    return failed(
                        deliver,
                        None,
                        "the base branch cannot be told, so no branch can be checked against it",
                    )
                }
                Some(_) => {}
            }
        }
        if !encrypted.is_empty() && no_key {
            return failed(
                deliver,
                None,
                "the run changed git-crypt files and the gateway has no key to encrypt them",
            );
        }
        let parent = head.unwrap_or(base);
        let parent_tree = match repo
            .line(&["rev-parse", &format!("{parent}^{{tree}}")], &repo.index)
            .await
        {
            Ok(t) => t,
            Err(why) => return failed(deliver, None, &why),
        };
        let commit = if parent_tree == tree {
            if parent == base {
                return failed(
                    deliver,
                    None,
                    "the run changed nothing, so there is nothing to deliver",
                );
            }
            parent.to_owned()
        } else {
            let message = deliver
                .commit_message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| format!("Changes of job {}", asked.job_id));
            match repo.commit(tree, parent, &message, &self.settings).await {
                Ok(commit) => commit,
                Err(why) => return failed(deliver, None, &why),
            }
        };
        if let Err(why) = repo.check_ciphertext(&commit, encrypted).await {
            return failed(deliver, Some(commit), &why);
        }
        let Some(origin) = self.source.base.origin_url().await else {
            return failed(deliver, Some(commit), "the base has no origin to push to");
        };
        match repo.push(&origin, &commit, &deliver.branch).await {
            Ok(()) => Delivery {
                branch: deliver.branch.clone(),
                commit: Some(commit),
                pushed_at: Some(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                ),
                error: None,
            },
            Err(why) => failed(deliver, Some(commit), &why),
        }
    }
}

/// A delivery that did not happen, and why.
fn failed(deliver: &DeliverRequest, commit: Option<String>, why: &str) -> Delivery {
    Delivery {
        branch: deliver.branch.clone(),
        commit,
        pushed_at: None,
        error: Some(one_line(why)),
    }
}

/// `why` on one line, bounded.
fn one_line(why: &str) -> String {
    let flat = why.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(ERROR_CHARS).collect()
}

/// Whether `path` is a directory itself, not a symlink to one.
async fn is_real_dir(path: &Path) -> bool {
    tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_dir())
}

/// The commit the checkout's `HEAD` names, read as the gateway with the checkout's own
/// configuration unable to run anything; `None` when there is none (or `.git` is not a plain
/// directory of the checkout's own).
async fn read_head(git: &Tool, workspace: &Path) -> Option<String> {
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
    let mut args: Vec<&str> = SAFE.to_vec();
    args.extend(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
    let out = git.output(workspace, &args, &env, 256).await.ok()?;
    let id = out.lossy().trim().to_owned();
    (id.len() >= 40 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// The gateway's private bare repository for one harvest.
struct Repo<'a> {
    git: &'a Tool,
    dir: PathBuf,
    work: PathBuf,
    index: PathBuf,
}

impl<'a> Repo<'a> {
    /// Makes the private repository at `dir`, borrowing the objects of `workspace`'s.
    async fn make(source: &'a Source, dir: &Path, workspace: &Path) -> Result<Repo<'a>, String> {
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
    async fn output(
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
        let mut all: Vec<String> = SAFE.iter().map(|s| (*s).to_owned()).collect();
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

    async fn git(&self, args: &[&str], index: &Path) -> Result<Vec<u8>, String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        self.git_owned(&args, index).await
    }

    async fn git_owned(&self, args: &[String], index: &Path) -> Result<Vec<u8>, String> {
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
    async fn line(&self, args: &[&str], index: &Path) -> Result<String, String> {
        let out = self.git(args, index).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// The files that differ between `base` and `tree`, with their line counts.
    async fn changed_files(&self, base: &str, tree: &str) -> Result<Vec<ChangedFile>, String> {
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
    async fn encrypted(&self, base: &str, files: &[ChangedFile]) -> Result<Vec<String>, String> {
        let mut found = Vec::new();
        if files.is_empty() {
            return Ok(found);
        }
        let base_index = self.dir.join("base.index");
        self.git(&["read-tree", base], &base_index).await?;
        for chunk in files.chunks(256) {
            for index in [&base_index, &self.index] {
                let mut args: Vec<String> =
                    vec!["check-attr".into(), "-z".into(), "--cached".into()];
                args.extend(["filter".into(), "--".into()]);
                args.extend(chunk.iter().map(|f| f.path.clone()));
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
    async fn without(&self, base: &str, tree: &str, paths: &[String]) -> Result<String, String> {
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
    async fn patch(&self, base: &str, tree: &str, cap: usize) -> Result<(Vec<u8>, bool), String> {
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
    async fn commits(&self, base: &str, head: &str) -> Result<Vec<String>, String> {
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
    async fn commit(
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

    /// Refuses a commit whose git-crypt files (any of `paths` it holds) are not ciphertext.
    async fn check_ciphertext(&self, commit: &str, paths: &[String]) -> Result<(), String> {
        for path in paths {
            let spec = format!("{commit}:{path}");
            let Ok(blob) = self
                .line(&["rev-parse", "--verify", "--quiet", &spec], &self.index)
                .await
            else {
                continue; // Deleted: nothing to leak.
            };
            let args: Vec<String> = vec!["cat-file".into(), "blob".into(), blob];
            let (head, _) = self
                .output(&args, &self.index, false, &[], GIT_CRYPT_HEADER.len())
                .await?;
            if head != GIT_CRYPT_HEADER {
                return Err(format!(
                    "{path} is a git-crypt file but the commit holds it unencrypted; nothing was pushed"
                ));
            }
        }
        Ok(())
    }

    /// Pushes `commit` as `branch` to `origin`, never forcing, with the gateway's own
    /// configuration and credentials.
    async fn push(&self, origin: &str, commit: &str, branch: &str) -> Result<(), String> {
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

/// Wraps the agent in a harvest: see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct HarvestLayer {
    harvester: Option<Harvester>,
}

impl HarvestLayer {
    pub(crate) fn new(harvester: Option<Harvester>) -> Self {
        Self { harvester }
    }
}

impl<S> Layer<S> for HarvestLayer {
    type Service = HarvestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HarvestService {
            inner,
            harvester: self.harvester.clone(),
        }
    }
}

/// See [`HarvestLayer`].
#[derive(Clone, Debug)]
pub(crate) struct HarvestService<S> {
    inner: S,
    harvester: Option<Harvester>,
}

impl<S> Service<Request<AgentRequest>> for HarvestService<S>
where
    S: Service<Request<AgentRequest>, Response = AgentOutcome, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = AgentOutcome;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<AgentOutcome, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<AgentRequest>) -> Self::Future {
        let asked = request.extensions().get::<Harvesting>().cloned();
        let workspace = request.extensions().get::<WorkspacePath>().cloned();
        let harvester = self.harvester.clone();
        let run = self.inner.call(request);
        Box::pin(async move {
            let (Some(harvester), Some(asked), Some(WorkspacePath(workspace))) =
                (harvester, asked, workspace)
            else {
                return run.await;
            };
            // Before the agent (whose future has not been polled yet) can touch the checkout.
            let base = harvester.start_commit(&workspace).await;
            let outcome = run.await?;
            let harvest = match base {
                Some(base) => harvester.harvest(&workspace, &base, &asked).await,
                None => Harvest {
                    delivery: asked
                        .deliver
                        .as_ref()
                        .map(|d| failed(d, None, "the checkout had no commit to start from")),
                    ..Harvest::default()
                },
            };
            *asked
                .slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(harvest);
            Ok(outcome)
        })
    }
}
