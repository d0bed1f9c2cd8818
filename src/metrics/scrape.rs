//! A scrape: the gauges that mirror live state are read from that state now, then everything is
//! rendered in Prometheus's text format.

use ::metrics::gauge;
use gateway_layers::admission::GaugeSnapshot;

use super::names::{
    DISPATCH_PAUSED, ISOLATION, JOBS_STORED, POOL_READY, POOL_SIZE, REPLICA, RUNS_ACTIVE,
    RUNS_QUEUED, RUN_CAPACITY,
};
use super::Metrics;

/// The content type of [`Metrics::render`]'s text: the exposition format, version 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a scrape reads from the gateway's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scrape<'a> {
    /// The shared gauge `/health` reads too.
    pub gauge: GaugeSnapshot,
    /// Jobs the registry holds.
    pub jobs_stored: usize,
    /// The isolation mode in force (`uid` or `process`), fixed at start-up.
    pub isolation: &'static str,
    /// This replica's name (`REPLICA_ID`), so the metrics of replicas sharing a store tell apart.
    pub replica: &'a str,
    /// Whether dispatch is paused by the upstream rate limit.
    pub dispatch_paused: bool,
}

impl Metrics {
    /// Every metric in the text exposition format, the gauges set from `scrape`.
    pub(crate) fn render(&self, scrape: Scrape<'_>) -> String {
        self.record(|| {
            gauge!(RUNS_ACTIVE).set(scrape.gauge.active as f64);
            gauge!(RUNS_QUEUED).set(scrape.gauge.queued as f64);
            gauge!(RUN_CAPACITY).set(scrape.gauge.capacity as f64);
            gauge!(JOBS_STORED).set(scrape.jobs_stored as f64);
            gauge!(ISOLATION, "mode" => scrape.isolation).set(1.0);
            gauge!(REPLICA, "replica" => scrape.replica.to_owned()).set(1.0);
            let pool = self.pool().unwrap_or_default();
            gauge!(POOL_SIZE).set(pool.size as f64);
            gauge!(POOL_READY).set(pool.ready as f64);
            gauge!(DISPATCH_PAUSED).set(f64::from(u8::from(scrape.dispatch_paused)));
        });
        let mut text = self.inner.handle.render();
        self.inner.cost_usd.render_into(&mut text);
        self.inner.key_costs.render_into(&mut text);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{AgentOutcome, Usage};
    use crate::metrics::{Entry, RunEnd};

    fn scrape() -> Scrape<'static> {
        Scrape {
            gauge: GaugeSnapshot {
                active: 2,
                queued: 1,
                capacity: 4,
                queue_depth: 10,
            },
            jobs_stored: 7,
            isolation: "uid",
            replica: "r1",
            dispatch_paused: false,
        }
    }

    #[tokio::test]
    async fn gauges_runs_tokens_and_cost_render_with_their_types() {
        let metrics = Metrics::new();
        let outcome = AgentOutcome {
            exit_code: Some(0),
            usage: Some(Usage {
                input_tokens: 5,
                output_tokens: 3,
                ..Usage::default()
            }),
            cost_usd: Some(0.125),
            ..AgentOutcome::default()
        };
        metrics
            .start_run(Entry::Chat)
            .finish(RunEnd::Completed, Some(&outcome));
        drop(metrics.start_run(Entry::Job));
        metrics.record_rejected(Entry::Job);
        let text = metrics.render(scrape());
        for line in [
            "claude_gateway_runs_active 2",
            "claude_gateway_runs_queued 1",
            "claude_gateway_run_capacity 4",
            "claude_gateway_jobs_stored 7",
            "claude_gateway_isolation{mode=\"uid\"} 1",
            "claude_gateway_replica{replica=\"r1\"} 1",
            "claude_gateway_runs_total{entry=\"chat\",outcome=\"completed\"} 1",
            "claude_gateway_runs_total{entry=\"job\",outcome=\"cancelled\"} 1",
            "claude_gateway_runs_total{entry=\"job\",outcome=\"rejected\"} 1",
            "claude_gateway_agent_tokens_total{kind=\"input\"} 5",
            "claude_gateway_agent_tokens_total{kind=\"output\"} 3",
            "claude_gateway_agent_cost_usd_total 0.125",
            "# TYPE claude_gateway_run_duration_seconds histogram",
            "claude_gateway_run_duration_seconds_count{entry=\"chat\"} 1",
            // A rejected run never ran: it is counted but has no duration.
            "claude_gateway_run_duration_seconds_count{entry=\"job\"} 1",
            "# TYPE claude_gateway_runs_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn two_gateways_in_one_process_keep_their_own_counts() {
        let one = Metrics::new();
        let two = Metrics::new();
        one.record_rejected(Entry::Chat);
        assert!(one.render(scrape()).contains("outcome=\"rejected\"} 1"));
        assert!(!two.render(scrape()).contains("claude_gateway_runs_total"));
    }
}
