//! Per-key metrics, labelled `key` with the token's *name* (never the token): spend, budget
//! refusals, and the runs each key holds. The names come only from the configured tokens file
//! (a caller is known by its token's name or not at all), so the label's values are bounded by
//! it; with auth off every run is the one key `""`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ::metrics::{counter, gauge};

use super::names::{
    KEY_BUDGET_REFUSALS, KEY_COST_USD, KEY_RUNS_QUEUED, KEY_RUNS_RUNNING, KEY_TOKENS,
};
use super::Metrics;
use crate::policy::Spend;

/// Dollars per key, kept beside the recorder (the facade's counters count whole numbers: see
/// [`super::cost`]).
#[derive(Debug, Default)]
pub(crate) struct KeyCosts(std::sync::Mutex<BTreeMap<String, f64>>);

impl KeyCosts {
    fn add(&self, key: &str, usd: f64) {
        if !(usd.is_finite() && usd > 0.0) {
            return;
        }
        let mut costs = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *costs.entry(key.to_owned()).or_default() += usd;
    }

    /// Appends `claude_gateway_key_cost_usd_total{key}` to `text`.
    pub(crate) fn render_into(&self, text: &mut String) {
        let costs = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if costs.is_empty() {
            return;
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = write!(
            text,
            "# HELP {KEY_COST_USD} Dollars the runs of each key reported spending.\n# TYPE {KEY_COST_USD} counter\n"
        );
        for (key, usd) in costs.iter() {
            let _ = writeln!(text, "{KEY_COST_USD}{{key=\"{}\"}} {usd}", escape(key));
        }
    }
}

/// A label value as the exposition format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts what a run of `key` reported spending.
    pub(crate) fn record_key_spend(&self, key: &str, spend: Spend) {
        self.record(|| {
            counter!(KEY_TOKENS, "key" => key.to_owned()).increment(spend.tokens);
        });
        self.inner.key_costs.add(key, spend.usd);
    }

    /// Counts a submission of `key` refused because its budget is spent.
    pub(crate) fn record_budget_refusal(&self, key: &str) {
        self.record(|| {
            counter!(KEY_BUDGET_REFUSALS, "key" => key.to_owned()).increment(1);
        });
    }

    /// Sets the per-key run gauges (at scrape time).
    pub(crate) fn set_key_runs(&self, held: &[(String, usize, usize)]) {
        self.record(|| {
            for (key, queued, running) in held {
                gauge!(KEY_RUNS_QUEUED, "key" => key.clone()).set(*queued as f64);
                gauge!(KEY_RUNS_RUNNING, "key" => key.clone()).set(*running as f64);
            }
        });
    }
}
