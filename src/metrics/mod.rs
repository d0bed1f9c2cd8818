//! Prometheus metrics: what `GET /metrics` shows operators.
//!
//! Recording goes through the [`metrics`] facade into a recorder from
//! `metrics-exporter-prometheus`, built with `PrometheusBuilder::build_recorder` (no listener of
//! its own: [`crate::routes::metrics`] renders it).
//!
//! # One recorder per gateway, not a global one
//!
//! Several gateways can run in one process (the tests start several), so each [`App`] owns its
//! own [`Metrics`]: a recorder, the handle that renders it, and nothing global. Every recording
//! site calls [`metrics::with_local_recorder`] around the facade's macros, which points them at
//! this gateway's recorder for that synchronous call only, so one gateway's `/metrics` never
//! shows another's requests, and nothing has to be installed once per process. Gauges that mirror state (`runs_active`, `jobs_stored`, …) are read from that state
//! at scrape time, so nothing is counted twice.
//!
//! # What is recorded where
//!
//! - [`http`]: a middleware below the router counts every answer by matched route template.
//! - [`runs`]: chat and jobs report how each run ended through a [`RunTimer`].
//! - [`scrape`]: the gauges read at scrape time, and the rendering.
//! - [`names`]: every metric's name, help text and histogram buckets.
//! - [`cost`]: the one counter the facade cannot hold (it counts in whole numbers; cost is in
//!   fractions of a dollar).
//!
//! [`App`]: crate::app::App

pub mod cost;
pub mod http;
pub mod names;
pub mod runs;
pub mod scrape;
mod upkeep;

use std::fmt;
use std::sync::Arc;

use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

pub use runs::{Entry, RunEnd, RunTimer};
pub use scrape::Scrape;

use cost::FloatCounter;

/// One gateway's metrics. Cheap to clone: an `Arc` inside.
///
/// Dropping the last clone stops its upkeep task.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the facade's macros record, while [`Metrics::record`] points them here.
    recorder: PrometheusRecorder,
    /// Renders the recorder's metrics, and drains its histograms between scrapes.
    handle: PrometheusHandle,
    /// `claude_gateway_agent_cost_usd_total`, kept beside the recorder (see [`cost`]).
    cost_usd: FloatCounter,
}

impl Metrics {
    /// A fresh set of metrics, every counter at zero. Inside a tokio runtime it also starts the
    /// task that drains histogram samples every few seconds; outside one they are drained at
    /// each scrape only.
    pub fn new() -> Self {
        let recorder = names::builder().build_recorder();
        let handle = recorder.handle();
        let inner = Arc::new(Inner {
            recorder,
            handle,
            cost_usd: FloatCounter::default(),
        });
        let metrics = Self { inner };
        metrics.record(names::describe);
        upkeep::spawn(&metrics.inner);
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
