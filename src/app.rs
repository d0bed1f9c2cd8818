//! The assembled gateway: configuration, the shared gauge, the runs and the job registry, and
//! what happens to them at shutdown. The composition root: the only module that builds the
//! stacks.

use std::sync::Arc;

use gateway_layers::admission::Gauge;
use gateway_layers::workspace::Provision;
use gateway_layers::BoxError;

use crate::agent::{ClaudeConfig, ClaudeService};
use crate::bounds::Intake;
use crate::bounds::ResponseBudget;
use crate::config::{self, Config};
use crate::contain::{
    instance_key_for, Cells, ContainSettings, Containment, IsolationSetting, Mode, Recovery,
};
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::quota::Quota;
use crate::run::Runs;
use crate::stack;
pub use crate::state::AppState;
use crate::workspace::{Contained, GitProvisioner, HarvestSettings, HarvestStep, WorkspaceConfig};

/// Decides how runs are contained, and stops whatever runs of an earlier gateway on the same
/// `JOBS_DIR` left behind (a crash, kill -9) before anything sweeps their workspaces.
///
/// Uid isolation when the process may switch uids; otherwise the process fallback, with one
/// warning saying what is missing. `ISOLATION=uid` without the privilege refuses to start.
async fn contain_runs(config: &Config) -> Result<(Arc<Containment>, Recovery), BoxError> {
    // The instance key is taken from the canonical path, so the directory must exist first.
    tokio::fs::create_dir_all(&config.jobs_dir)
        .await
        .map_err(|e| {
            format!(
                "could not create JOBS_DIR {}: {e}",
                config.jobs_dir.display()
            )
        })?;
    let containment = Containment::new(&ContainSettings {
        isolation: config.isolation,
        uid_range: config.run_uid_range,
        lock_dir: config.run_lock_dir.clone(),
        cgroup: config.run_cgroup.clone(),
        instance_key: instance_key_for(&config.jobs_dir),
    })?;
    match containment.cgroup_parent() {
        Some(parent) => tracing::info!(
            parent = %parent.display(),
            "each run gets a cgroup of its own: its processes are listed and killed by the kernel"
        ),
        None => tracing::info!(
            "runs get no cgroup (RUN_CGROUP); their processes are found through /proc"
        ),
    }
    match containment.mode() {
        Mode::Uid => {
            tracing::info!(range = %config.run_uid_range, "runs are isolated: each has a uid of its own");
            for secret in secret_files(config) {
                if readable_by_others(&secret) {
                    let what = format!(
                        "{} can be read by any user, so by every run; make it 0600 (Kubernetes: defaultMode 0400)",
                        secret.display()
                    );
                    if config.isolation == IsolationSetting::Uid {
                        return Err(what.into());
                    }
                    tracing::warn!("{what}");
                }
            }
        }
        Mode::Process => tracing::warn!(
            "runs share the gateway's uid: an agent can read the gateway's environment and files \
             and other runs' workspaces, and signal the gateway; its processes are still stopped \
             with its run. Run the gateway as root (or with CAP_SETUID, CAP_SETGID and CAP_CHOWN) \
             for a uid per run"
        ),
    }
    let recovery = containment.recover().await;
    if recovery.killed > 0 || !recovery.failures.is_empty() {
        tracing::warn!(
            killed = recovery.killed,
            failures = recovery.failures.len(),
            "stopped what runs of an earlier gateway left running"
        );
    }
    Ok((Arc::new(containment), recovery))
}

/// The files holding the gateway's secrets.
fn secret_files(config: &Config) -> Vec<std::path::PathBuf> {
    config
        .tokens_file
        .iter()
        .cloned()
        .chain(std::iter::once(config.git_crypt_key.clone()))
        .filter(|path| path.is_file())
        .collect()
}

/// Whether the permission bits let any user read `path`.
fn readable_by_others(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// The CLI login each run's HOME gets a copy of: `.claude/.credentials.json` in the HOME the
/// agent would otherwise have had.
fn cli_login(env: &[(std::ffi::OsString, std::ffi::OsString)]) -> Option<std::path::PathBuf> {
    env.iter()
        .rev()
        .find(|(name, _)| name == "HOME")
        .map(|(_, home)| std::path::Path::new(home).join(".claude/.credentials.json"))
}

/// How often the policy file is checked for a change (SIGHUP reloads at once).
const POLICY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A built gateway, ready to serve.
#[derive(Debug)]
pub struct App {
    state: AppState,
    /// Reloads `API_KEY_POLICY_FILE` on SIGHUP and on change for as long as the app lives.
    policy_watch: Option<PolicyWatch>,
}

/// The policy watcher's task, stopped when the app goes (a dropped handle would leave it running).
#[derive(Debug)]
struct PolicyWatch(tokio::task::JoinHandle<()>);

impl Drop for PolicyWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl App {
    /// Builds every part from `config`: the workspace provisioner (which sweeps leftovers of an
    /// earlier process and checks `JOBS_DIR` is usable), the claude service, the gauge, the
    /// stacks and the job registry, whose store is opened (and migrated) and whose unfinished
    /// jobs are picked up: queued ones run again in their order, running ones are recorded as
    /// interrupted or queued again.
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        let mut env_source: Vec<_> = std::env::vars_os().collect();
        env_source.extend(
            config
                .agent_env_overrides
                .iter()
                .map(|(name, value)| (name.into(), value.into())),
        );
        let (containment, recovery) = contain_runs(&config).await?;
        let cells = Arc::new(Cells::default());
        let metrics = Metrics::new();
        let provisioner = GitProvisioner::with_containment(
            WorkspaceConfig {
                base_dir: config.base_dir.clone(),
                jobs_dir: config.jobs_dir.clone(),
                git_crypt_key: config.git_crypt_key.clone(),
                fetch_debounce: config.fetch_debounce,
                base_branch: config.base_branch.clone(),
                pool_size: config.workspace_pool_size,
                pool_min_free_bytes: config.workspace_pool_min_free_bytes,
                pool_recycle: config.workspace_pool_recycle,
                ..WorkspaceConfig::default()
            },
            Some(Contained {
                containment: containment.clone(),
                cells: cells.clone(),
                credentials: cli_login(&env_source),
            }),
            Some(metrics.clone()),
        )
        .await?;
        drop(recovery);
        let harvester = provisioner.harvester(HarvestSettings {
            max_diff_bytes: config.max_diff_bytes,
            author_name: config.delivery_author.0.clone(),
            author_email: config.delivery_author.1.clone(),
            allow_base_branch: config.delivery_allow_base_branch,
        });
        let provisioner: Arc<dyn Provision> = Arc::new(provisioner);
        let claude = ClaudeService::new(ClaudeConfig {
            bin: config.claude_bin.clone(),
            env_source,
            extra_env: config.agent_env_passthrough.clone(),
            withheld_env: config::setting_names(),
            inactivity_timeout: config.agent_inactivity_timeout,
            stdout_cap: config.max_agent_stdout_bytes,
            ..ClaudeConfig::default()
        })
        .with_cells(cells);
        let gauge = Gauge::new(config.max_concurrency, config.max_queue_depth);
        let quota = Quota::new(Arc::clone(&config.policies), gauge.clone());
        let runs = Runs::new(
            gauge.clone(),
            provisioner,
            claude,
            HarvestStep(harvester.clone()),
            config.chat_timeout,
            metrics.clone(),
            quota.clone(),
        );
        // After the provisioner, which makes `JOBS_DIR` (the default store lives there) and
        // sweeps the workspaces an earlier process left; before serving, so the jobs it left
        // queued run before any new one.
        let jobs = Jobs::open(&config, runs.clone(), gauge.clone()).await?;
        quota.attach(jobs.ledger());
        jobs.share_pause(&quota);
        jobs.recover().await?;
        let intake = Intake::new(&config, gauge.clone(), metrics.clone());
        let responses = ResponseBudget::new(config.max_response_bytes_in_flight);
        let policy_watch = config.policies.watch(POLICY_POLL).map(PolicyWatch);
        let config = Arc::new(config);
        Ok(Self {
            policy_watch,
            state: AppState {
                config,
                gauge,
                runs,
                jobs,
                metrics,
                isolation: containment.mode_name(),
                run_cgroups: containment.cgroup_parent().is_some(),
                started_at: chrono::Utc::now().timestamp(),
                intake,
                responses,
                harvester,
                quota,
            },
        })
    }

    /// The validated settings.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// The shared state, for embedding the routes elsewhere.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The HTTP service to serve.
    pub fn http_service(&self) -> axum::Router {
        stack::http_stack(self.state.clone())
    }

    /// Stops admitting runs: new `/execute` and chat requests are turned away from now on.
    pub fn begin_shutdown(&self) {
        self.state.gauge.close();
        self.state.jobs.stop_accepting();
    }

    /// Resolves when every job has finished.
    pub async fn drain(&self) {
        self.state.jobs.drained().await;
    }

    /// Stops whatever is still running and records why (interrupted, or queued again for the
    /// next start when the job allows another attempt), then closes the store.
    pub async fn finish_shutdown(&self) {
        if let Some(watch) = &self.policy_watch {
            watch.0.abort();
        }
        self.state
            .jobs
            .abort_all("the gateway shut down before the job finished")
            .await;
        self.state.jobs.close().await;
    }
}
