//! Prometheus metrics: what `GET /metrics` shows operators.
//!
//! Recording goes through the [`metrics`] facade into a recorder from
//! `metrics-exporter-prometheus`, built with `PrometheusBuilder::build_recorder` (no listener of
//! its own: the `/metrics` route renders it).
//!
//! # One recorder per gateway, not a global one
//!
//! Several gateways can run in one process (the tests start several), so each `App` owns its
//! own [`Metrics`]: a recorder, the handle that renders it, and nothing global. Every recording
//! site calls [`metrics::with_local_recorder`] around the facade's macros, which points them at
//! this gateway's recorder for that synchronous call only, so one gateway's `/metrics` never
//! shows another's requests, and nothing has to be installed once per process. Gauges that mirror state (`runs_active`, `jobs_stored`, …) are read from that state
//! at scrape time, so nothing is counted twice.
//!
//! # What is recorded where
//!
//! - [`http`]: a middleware below the router counts every answer by matched route template.
//! - [`runs`]: the top of the run stack reports how each run ended through a [`RunTimer`].
//! - [`scrape`]: the gauges read at scrape time, and the rendering.
//! - [`pool`]: the warm pool of checkouts: takes, checkout and hand-over times, its gauges.
//! - [`names`]: every metric's name, help text and histogram buckets.
//! - [`cost`]: the one counter the facade cannot hold (it counts in whole numbers; cost is in
//!   fractions of a dollar).

pub(crate) mod cost;
pub(crate) mod http;
pub(crate) mod keys;
pub(crate) mod names;
pub(crate) mod pool;
pub(crate) mod runs;
pub(crate) mod scrape;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use tokio::time::MissedTickBehavior;

pub(crate) use pool::{Checkout, PoolGauges, PoolSnapshot, Take};
pub(crate) use runs::{Entry, RunEnd};
pub(crate) use scrape::Scrape;

use cost::FloatCounter;

/// One gateway's metrics. Cheap to clone: an `Arc` inside.
///
/// Dropping the last clone stops its upkeep task.
#[derive(Clone)]
pub(crate) struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the facade's macros record, while [`Metrics::record`] points them here.
    recorder: PrometheusRecorder,
    /// Renders the recorder's metrics, and drains its histograms between scrapes.
    handle: PrometheusHandle,
    /// `claude_gateway_agent_cost_usd_total`, kept beside the recorder (see [`cost`]).
    cost_usd: FloatCounter,
    /// `claude_gateway_key_cost_usd_total`, per key.
    key_costs: keys::KeyCosts,
    /// The warm pool of checkouts, once the provisioner has one: read at each scrape.
    pool: std::sync::OnceLock<Arc<dyn PoolGauges>>,
}

impl Metrics {
    /// A fresh set of metrics, every counter at zero. Inside a tokio runtime it also starts the
    /// task that drains histogram samples every few seconds; outside one they are drained at
    /// each scrape only.
    pub(crate) fn new() -> Self {
        let recorder = names::builder().build_recorder();
        let handle = recorder.handle();
        let inner = Arc::new(Inner {
            recorder,
            handle,
            cost_usd: FloatCounter::default(),
            key_costs: keys::KeyCosts::default(),
            pool: std::sync::OnceLock::new(),
        });
        let metrics = Self { inner };
        metrics.record(names::describe);
        spawn_upkeep(&metrics.inner);
        metrics
    }

    /// Runs `f` with this gateway's recorder as the one the facade's macros use.
    ///
    /// `f` must be synchronous: the local recorder applies to this thread, for this call only.
    pub(crate) fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        ::metrics::with_local_recorder(&self.inner.recorder, f)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("cost_usd", &self.inner.cost_usd.get())
            .finish_non_exhaustive()
    }
}

// The exporter keeps histogram samples in a buffer until they are drained into the histograms;
// with no listener of its own it leaves that to us. A scrape drains them too, but a gateway
// nobody scrapes would grow the buffer for ever, so a task drains it on a timer.

/// How often samples are drained: the exporter's own default.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Starts the task on the current tokio runtime, if there is one. It holds the metrics weakly
/// and ends once they are dropped.
fn spawn_upkeep(inner: &Arc<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let inner: Weak<Inner> = Arc::downgrade(inner);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate, and there is nothing to drain yet.
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            inner.handle.run_upkeep();
        }
    });
}
