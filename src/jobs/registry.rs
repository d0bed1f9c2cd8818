//! The store and the event logs of the jobs it holds, forgotten together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use super::events::EventLog;
use super::store::JobStore;

/// Job records (in the store) and their event logs (in memory, for `GET /jobs/{id}/events`).
pub struct Registry {
    /// Where records live.
    pub store: Arc<dyn JobStore>,
    /// The event log of every job the store still holds that was run by this process.
    logs: Mutex<HashMap<String, Arc<EventLog>>>,
}

impl Registry {
    /// A registry over `store`, with no logs yet.
    pub fn new(store: Arc<dyn JobStore>) -> Self {
        Self {
            store,
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps `log` as the event log of `job_id`.
    pub fn add_log(&self, job_id: &str, log: Arc<EventLog>) {
        self.logs().insert(job_id.to_owned(), log);
    }

    /// The event log of `job_id`, if this process ran it and it was not forgotten.
    pub fn log(&self, job_id: &str) -> Option<Arc<EventLog>> {
        self.logs().get(job_id).cloned()
    }

    /// How many jobs it holds a log for: every job this process ran that the store still has.
    pub fn held(&self) -> usize {
        self.logs().len()
    }

    /// Has the store forget what is past its bounds at `now`, and drops those jobs' logs.
    /// Returns how many jobs were forgotten; a store error is logged, and the next run retries.
    pub async fn evict(&self, now: DateTime<Utc>) -> usize {
        match self.store.remove_expired(now).await {
            Ok(removed) => {
                if !removed.is_empty() {
                    let mut logs = self.logs();
                    for job_id in &removed {
                        logs.remove(job_id);
                    }
                    tracing::debug!(count = removed.len(), "forgot finished jobs");
                }
                removed.len()
            }
            Err(error) => {
                tracing::warn!(%error, "could not forget expired jobs");
                0
            }
        }
    }

    /// Map operations cannot leave it inconsistent, so a poisoned lock is used as is.
    fn logs(&self) -> MutexGuard<'_, HashMap<String, Arc<EventLog>>> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("logs", &self.logs().len())
            .finish_non_exhaustive()
    }
}
