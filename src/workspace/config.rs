//! Settings of the git provisioner.

use std::path::PathBuf;
use std::time::Duration;

/// Where workspaces come from and where they go.
///
/// [`Default`] gives the seed service's values (`WORKSPACE_DIR=/workspace/infra`,
/// `JOBS_DIR=/workspace/jobs`, `GIT_CRYPT_KEY=/secrets/git-crypt/key`,
/// `FETCH_DEBOUNCE_SECONDS=15`).
#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    /// The warm base clone every workspace is cloned from (`WORKSPACE_DIR`). `None`, or a
    /// directory missing at start-up, means scratch mode: each job gets an empty directory.
    pub base_dir: Option<PathBuf>,
    /// Where per-job workspaces are created (`JOBS_DIR`); created at start-up if missing.
    pub jobs_dir: PathBuf,
    /// When this file exists, each workspace runs `git-crypt unlock` with it (`GIT_CRYPT_KEY`).
    /// Checked at every provision, so a secret mounted late is still picked up.
    pub git_crypt_key: PathBuf,
    /// A burst of jobs shares one refresh of the base: it is refreshed at most once per window
    /// (`FETCH_DEBOUNCE_SECONDS`). Zero refreshes before every job.
    pub fetch_debounce: Duration,
    /// The remote branch the base is reset to. `None` follows the remote's default branch
    /// (`origin/HEAD`, else what the remote advertises, else the base branch's upstream).
    pub base_branch: Option<String>,
    /// The `git` executable.
    pub git_bin: PathBuf,
    /// The `git-crypt` executable.
    pub git_crypt_bin: PathBuf,
    /// Upper bound of any one git or git-crypt command; past it the command is killed.
    pub command_timeout: Duration,
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        Self {
            base_dir: Some(PathBuf::from("/workspace/infra")),
            jobs_dir: PathBuf::from("/workspace/jobs"),
            git_crypt_key: PathBuf::from("/secrets/git-crypt/key"),
            fetch_debounce: Duration::from_secs(15),
            base_branch: None,
            git_bin: PathBuf::from("git"),
            git_crypt_bin: PathBuf::from("git-crypt"),
            command_timeout: Duration::from_secs(120),
        }
    }
}
