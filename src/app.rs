//! The assembled gateway: configuration, the shared gauge, the runs and the job registry, and
//! what happens to them at shutdown. The composition root: the only module that builds the
//! stacks.

use std::sync::Arc;

use gateway_layers::admission::Gauge;
use gateway_layers::workspace::Provision;
use gateway_layers::BoxError;

use crate::agent::{ClaudeConfig, ClaudeService};
use crate::config::{self, Config};
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::run::Runs;
use crate::stack;
pub use crate::state::AppState;
use crate::workspace::{GitProvisioner, WorkspaceConfig};

/// A built gateway, ready to serve.
#[derive(Debug)]
pub struct App {
    state: AppState,
}

impl App {
    /// Builds every part from `config`: the workspace provisioner (which sweeps leftovers of an
    /// earlier process and checks `JOBS_DIR` is usable), the claude service, the gauge, the
    /// stacks and the job registry, whose store is opened (and migrated) and whose unfinished
    /// jobs are picked up: queued ones run again in their order, running ones are recorded as
    /// interrupted or queued again.
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        let provisioner = GitProvisioner::new(WorkspaceConfig {
            base_dir: config.base_dir.clone(),
            jobs_dir: config.jobs_dir.clone(),
            git_crypt_key: config.git_crypt_key.clone(),
            fetch_debounce: config.fetch_debounce,
            base_branch: config.base_branch.clone(),
            ..WorkspaceConfig::default()
        })
        .await?;
        let provisioner: Arc<dyn Provision> = Arc::new(provisioner);
        let mut env_source: Vec<_> = std::env::vars_os().collect();
        env_source.extend(
            config
                .agent_env_overrides
                .iter()
                .map(|(name, value)| (name.into(), value.into())),
        );
        let claude = ClaudeService::new(ClaudeConfig {
            bin: config.claude_bin.clone(),
            env_source,
            extra_env: config.agent_env_passthrough.clone(),
            withheld_env: config::setting_names(),
            inactivity_timeout: config.agent_inactivity_timeout,
            ..ClaudeConfig::default()
        });
        let gauge = Gauge::new(config.max_concurrency, config.max_queue_depth);
        let metrics = Metrics::new();
        let runs = Runs::new(
            gauge.clone(),
            provisioner,
            claude,
            config.chat_timeout,
            metrics.clone(),
        );
        // After the provisioner, which makes `JOBS_DIR` (the default store lives there) and
        // sweeps the workspaces an earlier process left; before serving, so the jobs it left
        // queued run before any new one.
        let jobs = Jobs::open(&config, runs.clone(), gauge.clone()).await?;
        jobs.recover().await?;
        let config = Arc::new(config);
        Ok(Self {
            state: AppState {
                config,
                gauge,
                runs,
                jobs,
                metrics,
                started_at: chrono::Utc::now().timestamp(),
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
        self.state
            .jobs
            .abort_all("the gateway shut down before the job finished")
            .await;
        self.state.jobs.close().await;
    }
}
