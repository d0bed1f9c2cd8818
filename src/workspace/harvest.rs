//! Taking what a run changed before its checkout is removed, and delivering it on request.
//!
//! After the agent's call returns, everything of the run is killed first, so nothing of the run
//! is left to change the tree while the gateway reads it. Then git runs **as the gateway**, but
//! never in the agent's repository as the agent left it: the checkout is hostile ground (hooks,
//! `core.fsmonitor`, filter and diff drivers, `core.hooksPath` in its `.git/config`, symlinks).
//! Every command runs against a private bare repository the gateway makes in `JOBS_DIR` (see
//! [`super::private_repo`]; a `ws-<uuid>` directory, so a crash leaves nothing the start-up sweep
//! misses), which borrows the checkout's objects and reads its working tree, with the gateway's
//! own configuration only. Only `HEAD` is read from the checkout's own repository, with
//! `rev-parse`, which runs no program.
//!
//! git-crypt: a file whose path the base commit or the final tree marks `filter=git-crypt` is
//! listed as changed with `encrypted: true` but left out of the patch. When delivering, the
//! gateway's key (a copy in the private repository, removed with it) re-encrypts such files
//! through git-crypt's clean filter, and the pushed commit is checked to hold ciphertext only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gateway_layers::workspace::WorkspacePath;
use gateway_layers::BoxError;
use http::Request;
use tower::Service;

use crate::agent::{one_line, AgentRequest, Below, RunFuture, RunStep};
use crate::contain::Cells;

use super::changes::{check_branch, Changes, DeliverRequest, Delivery};
use super::checkout::Source;
use super::cleanup::{fresh_name, PendingDir};
use super::private_repo::{read_head, Repo};

/// Files listed in `changes` at most.
const MAX_FILES: usize = 1000;
/// Longest delivery error kept.
const ERROR_CHARS: usize = 600;

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
        let known = self
            .cells
            .as_ref()
            .and_then(|cells| cells.get(workspace))
            .and_then(|placed| placed.start_commit.as_deref().map(str::to_owned));
        if known.is_some() {
            return known;
        }
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
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let encrypted = repo.encrypted(base, &paths).await?;
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
        if let Err(why) = repo.check_ciphertext(base, &commit).await {
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
        error: Some(one_line(why, ERROR_CHARS)),
    }
}

/// The step that takes what a run changed, and delivers it when asked: see the module docs.
/// `None` harvests nothing (no base repository).
#[derive(Clone, Debug)]
pub(crate) struct HarvestStep(pub(crate) Option<Harvester>);

impl RunStep for HarvestStep {
    type Error = BoxError;

    fn not_ready(error: BoxError) -> BoxError {
        error
    }

    fn run(&self, mut below: Below, request: Request<AgentRequest>) -> RunFuture<BoxError> {
        let asked = request.extensions().get::<Harvesting>().cloned();
        let workspace = request.extensions().get::<WorkspacePath>().cloned();
        let harvester = self.0.clone();
        let run = below.call(request);
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
