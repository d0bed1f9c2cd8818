//! What every handler can reach: the settings, the shared gauge, the runs, the jobs, the metrics.

use std::sync::Arc;

use gateway_layers::admission::Gauge;

use crate::bounds::Intake;
use crate::bounds::ResponseBudget;
use crate::config::Config;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::quota::Quota;
use crate::run::Runs;
use crate::workspace::Harvester;

/// The state the routes share. Cheap to clone: everything is shared.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The validated settings.
    pub(crate) config: Arc<Config>,
    /// Active and queued runs: admission, concurrency and `/health` read this one gauge.
    pub gauge: Gauge,
    /// The stack every run goes down.
    pub(crate) runs: Runs,
    /// The job registry and the tasks that run jobs.
    pub jobs: Jobs,
    /// This gateway's metrics (its own, not process-wide: see [`crate::metrics`]).
    pub(crate) metrics: Metrics,
    /// The isolation mode in force (`uid` or `process`), for `/health` and `/metrics`.
    pub(crate) isolation: &'static str,
    /// Whether each run gets a cgroup of its own (`RUN_CGROUP`), for `/health`.
    pub(crate) run_cgroups: bool,
    /// Unix seconds at start-up, shown as the models' `created`.
    pub(crate) started_at: i64,
    /// Reads, checks and admits the requests that start runs.
    pub(crate) intake: Intake,
    /// The bytes large responses may hold while they are sent.
    pub(crate) responses: ResponseBudget,
    /// What takes runs' changes and delivers them; `None` without a base repository.
    pub(crate) harvester: Option<Harvester>,
    /// Budgets per key and the upstream pause.
    pub(crate) quota: Quota,
}
