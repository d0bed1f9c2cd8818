//! The warm pool of checkouts: how many it should hold, how many are ready, how often a run found
//! one, and what making and handing over a checkout costs.
//!
//! The workspace provisioner records takes and timings as they happen; the pool's size and ready
//! count are read from the pool itself at scrape time (and by `/health`) through [`PoolGauges`],
//! so this module knows nothing of how the pool works.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{counter, histogram};

use super::names::{POOL_TAKES, WORKSPACE_CHECKOUT, WORKSPACE_HANDOVER};
use super::Metrics;

/// The pool's state as a scrape or `/health` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PoolSnapshot {
    /// Checkouts the pool keeps ready (`WORKSPACE_POOL_SIZE`).
    pub(crate) size: usize,
    /// Checkouts ready now.
    pub(crate) ready: usize,
}

impl PoolSnapshot {
    /// The next run takes a checkout at once.
    pub(crate) fn is_warm(self) -> bool {
        self.ready > 0
    }
}

/// Where a scrape reads the pool's state from.
pub(crate) trait PoolGauges: Send + Sync + fmt::Debug {
    /// The pool as it is now.
    fn snapshot(&self) -> PoolSnapshot;
}

/// Whether a run found a ready checkout: the `result` label of [`POOL_TAKES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// It took a ready checkout.
    Hit,
    /// None was ready (or none of the current base): it cloned one itself.
    Miss,
}

/// Who made a checkout: the `by` label of the checkout histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkout {
    /// The pool, ahead of time: a clone.
    Pool,
    /// A run that found none ready: a clone on its request path.
    Run,
    /// The pool, from a used checkout proven back to its handed-over state.
    Recycled,
}

impl Metrics {
    /// Makes the pool's size and ready count part of every scrape and of `/health`.
    pub(crate) fn watch_pool(&self, pool: Arc<dyn PoolGauges>) {
        if self.inner.pool.set(pool).is_err() {
            tracing::debug!("the pool was already watched");
        }
    }

    /// The pool's state, when there is a pool.
    pub(crate) fn pool(&self) -> Option<PoolSnapshot> {
        self.inner.pool.get().map(|pool| pool.snapshot())
    }

    /// A run asked the pool for a checkout.
    pub(crate) fn record_pool_take(&self, take: Take) {
        let result = match take {
            Take::Hit => "hit",
            Take::Miss => "miss",
        };
        self.record(|| counter!(POOL_TAKES, "result" => result).increment(1));
    }

    /// A checkout of the base was made, by `by`.
    pub(crate) fn record_checkout(&self, by: Checkout, took: Duration) {
        let by = match by {
            Checkout::Pool => "pool",
            Checkout::Run => "run",
            Checkout::Recycled => "recycle",
        };
        self.record(|| histogram!(WORKSPACE_CHECKOUT, "by" => by).record(took.as_secs_f64()));
    }

    /// A workspace was handed to its run (its uid, its HOME).
    pub(crate) fn record_handover(&self, took: Duration) {
        self.record(|| histogram!(WORKSPACE_HANDOVER).record(took.as_secs_f64()));
    }
}
