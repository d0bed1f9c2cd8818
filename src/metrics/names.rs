//! Every metric the gateway exports: its name, its help text, and the buckets of its histogram.
//!
//! Names carry the `claude_gateway_` prefix and Prometheus's unit and `_total` suffixes as
//! written, so the exporter is left to add none.

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Counter `{method, route, status}`: answered requests.
pub(crate) const HTTP_REQUESTS: &str = "claude_gateway_http_requests_total";
/// Histogram `{method, route}`: seconds until the response head was ready.
pub(crate) const HTTP_REQUEST_DURATION: &str = "claude_gateway_http_request_duration_seconds";
/// Gauge: runs holding a slot.
pub(crate) const RUNS_ACTIVE: &str = "claude_gateway_runs_active";
/// Gauge: runs waiting for a slot.
pub(crate) const RUNS_QUEUED: &str = "claude_gateway_runs_queued";
/// Gauge: runs allowed at once.
pub(crate) const RUN_CAPACITY: &str = "claude_gateway_run_capacity";
/// Counter `{entry, outcome}`: runs by how they ended.
pub(crate) const RUNS: &str = "claude_gateway_runs_total";
/// Histogram `{entry}`: seconds from a run's submission (queue wait included) to its end.
pub(crate) const RUN_DURATION: &str = "claude_gateway_run_duration_seconds";
/// Counter: dollars the agents reported spending.
pub(crate) const AGENT_COST_USD: &str = "claude_gateway_agent_cost_usd_total";
/// Counter `{kind}`: tokens the agents reported.
pub(crate) const AGENT_TOKENS: &str = "claude_gateway_agent_tokens_total";
/// Gauge: jobs this gateway holds, queued, running or finished and not yet forgotten.
pub(crate) const JOBS_STORED: &str = "claude_gateway_jobs_stored";

/// Counter `{key}`: dollars the runs of each key reported (rendered by hand: see `keys`).
pub(crate) const KEY_COST_USD: &str = "claude_gateway_key_cost_usd_total";
/// Counter `{key}`: input plus output tokens the runs of each key reported.
pub(crate) const KEY_TOKENS: &str = "claude_gateway_key_tokens_total";
/// Counter `{key}`: submissions refused because the key's budget was spent.
pub(crate) const KEY_BUDGET_REFUSALS: &str = "claude_gateway_key_budget_refusals_total";
/// Gauge `{key}`: the key's runs waiting for a slot on this gateway.
pub(crate) const KEY_RUNS_QUEUED: &str = "claude_gateway_key_runs_queued";
/// Gauge `{key}`: the key's runs holding a slot on this gateway.
pub(crate) const KEY_RUNS_RUNNING: &str = "claude_gateway_key_runs_running";
/// Gauge: 1 while dispatch is paused because the account behind the CLI is rate-limited.
pub(crate) const DISPATCH_PAUSED: &str = "claude_gateway_dispatch_paused";

/// Gauge: checkouts the warm pool keeps ready (`WORKSPACE_POOL_SIZE`).
pub(crate) const POOL_SIZE: &str = "claude_gateway_workspace_pool_size";
/// Gauge: checkouts ready in the pool now.
pub(crate) const POOL_READY: &str = "claude_gateway_workspace_pool_ready";
/// Counter `{result}`: runs that took a ready checkout (`hit`) or cloned their own (`miss`).
pub(crate) const POOL_TAKES: &str = "claude_gateway_workspace_pool_takes_total";
/// Histogram `{by}`: seconds to make one checkout of the base (`pool` ahead of time, `run` on a
/// miss).
pub(crate) const WORKSPACE_CHECKOUT: &str = "claude_gateway_workspace_checkout_seconds";
/// Histogram: seconds to hand a workspace to its run (its uid, its HOME).
pub(crate) const WORKSPACE_HANDOVER: &str = "claude_gateway_workspace_handover_seconds";

/// Gauge `{mode}`: 1 for the isolation mode in force (`uid` or `process`).
pub(crate) const ISOLATION: &str = "claude_gateway_isolation";

/// Gauge `{replica}`: 1, labelled with this replica's `REPLICA_ID`.
pub(crate) const REPLICA: &str = "claude_gateway_replica";

/// Bounds of the request-duration buckets, in seconds: from a health check to a long chat run.
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// Bounds of the run-duration buckets, in seconds: up to the default job timeout (45 minutes)
/// and past it.
const RUN_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 2700.0, 3600.0,
];

/// Bounds of the checkout and hand-over buckets, in seconds: from a chown of a small tree to a
/// clone of a large repository on a slow disk.
const WORKSPACE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The exporter's settings: the two histograms as true Prometheus histograms (the exporter's
/// default is a summary, which cannot be aggregated across replicas).
pub(crate) fn builder() -> PrometheusBuilder {
    [
        (HTTP_REQUEST_DURATION, HTTP_BUCKETS),
        (RUN_DURATION, RUN_BUCKETS),
        (WORKSPACE_CHECKOUT, WORKSPACE_BUCKETS),
        (WORKSPACE_HANDOVER, WORKSPACE_BUCKETS),
    ]
    .into_iter()
    .fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
        builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            .expect("the bucket lists are constants and not empty")
    })
}

/// Gives every metric recorded through the facade its help text. Run inside
/// [`Metrics::record`](super::Metrics::record).
pub(crate) fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, matched route and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time until a response's head was ready, by method and matched route (a streamed body goes on after)."
    );
    describe_gauge!(RUNS_ACTIVE, "Agent runs holding a slot.");
    describe_gauge!(RUNS_QUEUED, "Agent runs waiting for a slot.");
    describe_gauge!(
        RUN_CAPACITY,
        "Agent runs allowed at once (MAX_CONCURRENCY)."
    );
    describe_counter!(
        RUNS,
        "Agent runs ended, by entry point (chat, job) and outcome."
    );
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Time from a run's submission (queue wait included) to its end, by entry point."
    );
    describe_counter!(AGENT_TOKENS, "Tokens the agents reported, by kind.");
    describe_counter!(
        KEY_TOKENS,
        "Input plus output tokens the runs of each key (token name) reported."
    );
    describe_counter!(
        KEY_BUDGET_REFUSALS,
        "Submissions refused (429 insufficient_quota) because the key's budget was spent."
    );
    describe_gauge!(
        KEY_RUNS_QUEUED,
        "Runs of each key waiting for a slot on this gateway."
    );
    describe_gauge!(
        KEY_RUNS_RUNNING,
        "Runs of each key holding a slot on this gateway."
    );
    describe_gauge!(
        DISPATCH_PAUSED,
        "1 while dispatch is paused because the account behind the CLI is rate-limited."
    );
    describe_gauge!(
        ISOLATION,
        "1 for the isolation mode in force: uid (a uid per run) or process (shared uid, processes still contained)."
    );
    describe_gauge!(
        REPLICA,
        "1, labelled with this replica's name (REPLICA_ID): which replica of a service these metrics are."
    );
    describe_gauge!(
        POOL_SIZE,
        "Checkouts of the base the warm pool keeps ready (WORKSPACE_POOL_SIZE)."
    );
    describe_gauge!(POOL_READY, "Checkouts ready in the warm pool now.");
    describe_counter!(
        POOL_TAKES,
        "Runs that took a ready checkout (hit) or cloned their own (miss)."
    );
    describe_histogram!(
        WORKSPACE_CHECKOUT,
        Unit::Seconds,
        "Time to make one checkout of the base, by who made it (pool ahead of time, run on a miss, recycle of a used one)."
    );
    describe_histogram!(
        WORKSPACE_HANDOVER,
        Unit::Seconds,
        "Time to hand a workspace to its run: its uid, its HOME."
    );
    describe_gauge!(
        JOBS_STORED,
        "Jobs this gateway holds: queued, running, and finished ones not yet forgotten."
    );
}
