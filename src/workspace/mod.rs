//! Per-job workspaces: a fresh git checkout of the warm base for every run.
//!
//! [`GitProvisioner`] is the gateway's [`Provision`](gateway_layers::workspace::Provision)
//! strategy. Each provision
//!
//! 1. refreshes the base (`git fetch origin --prune`, then reset to the remote branch) unless
//!    that was done within the debounce window; a burst of jobs shares one refresh, and a failed
//!    refresh is logged while jobs go on with the last good base;
//! 2. clones it with `git clone --local` (objects hardlinked) into `JOBS_DIR/ws-<uuid>` and
//!    gives the clone the base's `origin` URL. Clones run concurrently; no lock serialises them;
//! 3. runs `git-crypt unlock KEY` in the clone when the key file exists; failing that fails
//!    the provision.
//!
//! With a pool size above 0 (`WORKSPACE_POOL_SIZE`), steps 2 and 3 happen ahead of time: a warm
//! pool of ready checkouts of the current base is kept in the background, and a run takes one
//! at once after step 1 (see the `pool` module); it clones its own only when none is ready.
//! Where runs have uids of their own, a used checkout goes back to the pool once its run has
//! ended, rebuilt from what is proven untouched since it was handed over plus copies from a
//! pristine template (`WORKSPACE_POOL_RECYCLE`; the proof is in the containment module's
//! `reuse`).
//!
//! Without a base directory, a workspace is an empty scratch directory. Release removes the
//! directory in the background. Every git command runs without a shell, with a timeout,
//! `GIT_TERMINAL_PROMPT=0`, and is killed with its process group when the provision is dropped.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use claude_gateway::workspace::{GitProvisioner, WorkspaceConfig};
//! use gateway_layers::workspace::Provision;
//!
//! # async fn run() -> Result<(), gateway_layers::BoxError> {
//! let provisioner = GitProvisioner::new(WorkspaceConfig {
//!     base_dir: Some("/workspace/infra".into()),
//!     jobs_dir: "/workspace/jobs".into(),
//!     fetch_debounce: Duration::from_secs(15),
//!     ..WorkspaceConfig::default()
//! })
//! .await?;
//!
//! let path = provisioner.provision().await?;
//! // ... run the job in `path` ...
//! provisioner.release(path);
//! # Ok(()) }
//! ```

mod base;
mod changes;
mod checkout;
mod cleanup;
mod error;
mod git;
mod harvest;
mod pool;
mod private_repo;
mod provisioner;

pub use changes::{
    check_branch, ChangedFile, Changes, DeliverRequest, Delivery, MAX_COMMIT_MESSAGE,
};
pub use harvest::HarvestSettings;
pub(crate) use harvest::{Harvest, HarvestStep, Harvester, Harvesting};

pub use error::WorkspaceError;
pub use git::{CommandError, Invocation};
pub(crate) use provisioner::Contained;
pub use provisioner::{GitProvisioner, ProvisionerStats, WorkspaceConfig};
