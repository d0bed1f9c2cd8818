//! The timer that forgets expired jobs even when none finishes (the replaced service only evicted
//! when a job finished, so an idle service kept its last hour of output for ever).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use super::record::timestamp_now;
use super::registry::Registry;

/// Runs eviction every `period` until dropped.
#[derive(Debug)]
pub struct Evictor {
    /// Aborts the timer task; the task holds no lock across an await, so aborting is clean.
    task: AbortHandle,
}

impl Evictor {
    /// Starts the timer. Must be called inside a tokio runtime.
    pub fn spawn(registry: Arc<Registry>, period: Duration) -> Self {
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // The first tick is immediate and there is nothing to forget yet.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                registry.evict(timestamp_now()).await;
            }
        });
        Self {
            task: task.abort_handle(),
        }
    }

    /// How often to run for a time to live of `ttl`: often enough that a job outlives its TTL by
    /// a tenth at most, never more than once a second nor less than once a minute.
    pub fn period_for(ttl: Duration) -> Duration {
        (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Drop for Evictor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::memory::{MemoryStore, StoreLimits};
    use crate::jobs::record::{JobRecord, JobStatus, NewJob};
    use crate::jobs::store::JobStore;

    #[test]
    fn period_follows_the_ttl_within_bounds() {
        assert_eq!(
            Evictor::period_for(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            Evictor::period_for(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(
            Evictor::period_for(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_forgets_jobs_with_nothing_finishing_and_stops_when_dropped() {
        let store = Arc::new(MemoryStore::new(StoreLimits {
            ttl: Duration::from_secs(1),
            max_finished: 100,
            max_finished_bytes: usize::MAX,
        }));
        let registry = Arc::new(Registry::new(store.clone()));
        let mut record = JobRecord::queued(
            "a".repeat(32),
            NewJob {
                owner: "o".into(),
                prompt: "p".into(),
                agent: "a".into(),
                max_budget_usd: 1.0,
                timeout_seconds: 1,
                metadata: None,
            },
            timestamp_now(),
        );
        // Finished a minute ago by the wall clock the store is given.
        record.status = JobStatus::Completed;
        record.finished_at = Some(timestamp_now() - chrono::TimeDelta::seconds(60));
        store.insert(record).await.unwrap();

        let evictor = Evictor::spawn(registry.clone(), Duration::from_secs(1));
        for _ in 0..100 {
            if store.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(store.is_empty(), "the timer never forgot the job");
        let task = evictor.task.clone();
        drop(evictor);
        tokio::task::yield_now().await;
        assert!(task.is_finished());
        assert_eq!(Arc::strong_count(&registry), 1);
    }
}
