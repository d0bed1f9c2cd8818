//! For `examples/bench` only, hidden from the docs: the PostgreSQL store's claim reachable from
//! outside the crate, so the bench times the statement the replicas run (and the reading of its
//! answer) rather than a copy of it that could drift.

use std::time::Duration;

use super::memory::StoreLimits;
use super::postgres::{ClaimCaps, PgStore};
use super::StoreError;

/// One replica's handle on a PostgreSQL job store, claiming under fixed per-owner limits.
#[derive(Debug)]
pub struct PgClaims {
    /// The store, as a replica opens it.
    store: PgStore,
    /// The owners' `max_concurrent`, built once so a timed claim does only what a replica does.
    caps: ClaimCaps,
}

impl PgClaims {
    /// Connects to the database at `url` as replica `replica`, migrating it; owner `owners[i]`
    /// may hold `caps[i]` jobs at once, every other owner any number.
    pub async fn open(
        url: &str,
        replica: &str,
        owners: Vec<String>,
        caps: Vec<i64>,
    ) -> Result<Self, StoreError> {
        let limits = StoreLimits {
            ttl: Duration::from_secs(3600),
            max_finished: usize::MAX,
            max_finished_bytes: usize::MAX,
        };
        Ok(Self {
            store: PgStore::open(url, replica, limits).await?,
            caps: ClaimCaps {
                owners,
                caps,
                default: i64::MAX,
            },
        })
    }

    /// The replicas' claim of the next job in fair order (`PgStore::claim` of one job);
    /// answers the claimed job's id, `None` when nothing could be claimed.
    pub async fn claim_one(&self) -> Result<Option<String>, StoreError> {
        let mut claimed = self.store.claim(1, &self.caps).await?;
        Ok(claimed.pop().map(|job| job.record.job_id.clone()))
    }
}
