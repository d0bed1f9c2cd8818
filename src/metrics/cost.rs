//! A counter of fractional values, for the dollars agents spend.
//!
//! The facade's counters hold whole numbers (`u64`), and a cost counted in whole dollars, or in
//! an invented sub-unit, would break Prometheus's convention that money and time are counted in
//! their base unit. So this one counter lives beside the recorder and is appended to its
//! rendering with the type Prometheus expects, `counter`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::names::AGENT_COST_USD;

/// A monotonic `f64` counter, lock-free (the value's bits in an atomic).
#[derive(Debug, Default)]
pub(crate) struct FloatCounter {
    /// The total's `f64` bits, so it can be added to without a lock.
    bits: AtomicU64,
}

impl FloatCounter {
    /// Adds `amount`; anything negative, NaN or infinite is ignored, so the counter only grows.
    pub(crate) fn add(&self, amount: f64) {
        if !(amount.is_finite() && amount > 0.0) {
            return;
        }
        // The closure always answers `Some`, so this cannot fail.
        let _ = self
            .bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + amount).to_bits())
            });
    }

    /// The total so far.
    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }

    /// Appends `claude_gateway_agent_cost_usd_total` to `text` in the exposition format.
    pub(crate) fn render_into(&self, text: &mut String) {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        // Writing to a String does not fail.
        let _ = write!(
            text,
            "# HELP {AGENT_COST_USD} Dollars the agents reported spending (total_cost_usd).\n\
             # TYPE {AGENT_COST_USD} counter\n\
             {AGENT_COST_USD} {}\n",
            self.get()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_only_grows_and_renders_as_a_counter() {
        let cost = FloatCounter::default();
        cost.add(0.25);
        cost.add(0.5);
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            cost.add(bad);
        }
        assert_eq!(cost.get(), 0.75);
        let mut text = String::from("other 1");
        cost.render_into(&mut text);
        assert!(text.contains("\n# TYPE claude_gateway_agent_cost_usd_total counter\n"));
        assert!(text.ends_with("\nclaude_gateway_agent_cost_usd_total 0.75\n"));
    }
}
