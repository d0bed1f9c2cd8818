//! The exporter keeps histogram samples in a buffer until they are drained into the histograms;
//! with no listener of its own it leaves that to us. A scrape drains them too, but a gateway
//! nobody scrapes would grow the buffer for ever, so a task drains it on a timer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::Inner;

/// How often samples are drained: the exporter's own default.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Starts the task on the current tokio runtime, if there is one. It holds the metrics weakly
/// and ends once they are dropped.
pub(super) fn spawn(inner: &Arc<Inner>) {
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
