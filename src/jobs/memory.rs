//! The embedded job store: records in memory, bounded in age, in count and in bytes.
//!
//! Bounded, unlike the registry of the service this gateway replaced: finished jobs are forgotten
//! after the time to live, past a maximum count *and* past a byte budget, oldest finished first
//! (so a burst of jobs with large prompts or outputs cannot exhaust memory before the count bound
//! would bite), and the caller runs
//! [`remove_expired`](JobStore::remove_expired) on a timer as well as when a job finishes. The
//! bytes a record may hold are capped before it gets here (see [`super::cap`]).

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::record::JobRecord;
use super::store::{Cursor, JobStore, ListQuery, Page, StoreFuture};

/// How much a [`MemoryStore`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreLimits {
    /// A finished job is forgotten this long after it finished.
    pub ttl: Duration,
    /// At most this many finished jobs are kept; past it the oldest finished go first.
    pub max_finished: usize,
    /// At most this many bytes of finished records (prompt, output, result, stderr, error,
    /// metadata) are kept; past it the oldest finished go first.
    pub max_finished_bytes: usize,
}

/// Job records in memory. Cheap to share behind an `Arc`; every method takes the one lock briefly
/// and never across an await.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    /// Its bounds.
    limits: StoreLimits,
    /// The records and the two orders they are read in.
    state: Mutex<State>,
}

/// A sort key: a time, then the id to break ties.
type Key = (DateTime<Utc>, String);

#[derive(Debug, Default)]
struct State {
    /// Every job, by id.
    records: HashMap<String, JobRecord>,
    /// Every job by creation time, for listing newest first.
    by_created: BTreeSet<Key>,
    /// Finished jobs by finishing time, for forgetting the oldest first.
    finished: BTreeSet<Key>,
    /// What the finished records hold, by [`JobRecord::approx_bytes`].
    finished_bytes: usize,
}

impl MemoryStore {
    /// An empty store with these bounds.
    pub(crate) fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// How many jobs it holds, finished or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether it holds no job.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every method leaves the maps consistent before it can panic, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn finished_key(record: &JobRecord) -> Option<Key> {
    record.status.is_terminal().then(|| {
        (
            record.finished_at.unwrap_or(record.created_at),
            record.job_id.clone(),
        )
    })
}

impl State {
    fn put(&mut self, record: JobRecord) -> bool {
        let existed = match self.records.remove(&record.job_id) {
            Some(old) => {
                self.by_created
                    .remove(&(old.created_at, old.job_id.clone()));
                if let Some(key) = finished_key(&old) {
                    self.finished.remove(&key);
                    self.finished_bytes = self.finished_bytes.saturating_sub(old.approx_bytes());
                }
                true
            }
            None => false,
        };
        self.by_created
            .insert((record.created_at, record.job_id.clone()));
        if let Some(key) = finished_key(&record) {
            self.finished.insert(key);
            self.finished_bytes += record.approx_bytes();
        }
        self.records.insert(record.job_id.clone(), record);
        existed
    }

    fn remove(&mut self, key: &Key) {
        let was_finished = self.finished.remove(key);
        if let Some(record) = self.records.remove(&key.1) {
            if was_finished {
                self.finished_bytes = self.finished_bytes.saturating_sub(record.approx_bytes());
            }
            self.by_created
                .remove(&(record.summary.created_at, record.summary.job_id));
        }
    }
}

impl JobStore for MemoryStore {
    fn insert(&self, record: JobRecord) -> StoreFuture<'_, ()> {
        self.lock().put(record);
        Box::pin(async { Ok(()) })
    }

    fn get(&self, job_id: String) -> StoreFuture<'_, Option<JobRecord>> {
        let record = self.lock().records.get(&job_id).cloned();
        Box::pin(async move { Ok(record) })
    }

    fn update(&self, record: JobRecord) -> StoreFuture<'_, bool> {
        let mut state = self.lock();
        // A job forgotten meanwhile stays forgotten: an update never brings it back.
        let found = state.records.contains_key(&record.job_id);
        if found {
            state.put(record);
        }
        Box::pin(async move { Ok(found) })
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page> {
        let state = self.lock();
        let limit = query.limit.max(1);
        // Newest first, strictly after the cursor's job when resuming.
        let upper = match query.cursor {
            Some(Cursor { created_at, job_id }) => Bound::Excluded((created_at, job_id)),
            None => Bound::Unbounded,
        };
        let keys = state.by_created.range((Bound::Unbounded, upper)).rev();
        let mut jobs = Vec::with_capacity(limit.min(64));
        let mut more = false;
        for (_, id) in keys {
            let Some(record) = state.records.get(id) else {
                continue;
            };
            if record.owner != query.owner || query.status.is_some_and(|s| s != record.status) {
                continue;
            }
            if jobs.len() == limit {
                more = true;
                break;
            }
            jobs.push(record.summary.clone());
        }
        let next_cursor = if more {
            jobs.last().map(Cursor::after)
        } else {
            None
        };
        Box::pin(async move { Ok(Page { jobs, next_cursor }) })
    }

    fn remove_expired(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>> {
        let ttl = TimeDelta::from_std(self.limits.ttl).unwrap_or(TimeDelta::MAX);
        let cutoff = now.checked_sub_signed(ttl);
        let mut state = self.lock();
        let mut removed = Vec::new();
        while let Some(oldest) = state.finished.first().cloned() {
            let expired = cutoff.is_some_and(|cutoff| oldest.0 <= cutoff);
            let within_bounds = state.finished.len() <= self.limits.max_finished
                && state.finished_bytes <= self.limits.max_finished_bytes;
            if !expired && within_bounds {
                break;
            }
            state.remove(&oldest);
            removed.push(oldest.1);
        }
        Box::pin(async move { Ok(removed) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::record::{JobStatus, NewJob};
    use chrono::TimeZone;

    /// The store's clock is whatever `now` the caller passes, so tests move time by hand.
    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn job(n: u32, owner: &str, created: i64) -> JobRecord {
        JobRecord::queued(
            format!("{n:032x}"),
            NewJob {
                owner: owner.into(),
                prompt: "p".into(),
                agent: "a".into(),
                max_budget_usd: 1.0,
                timeout_seconds: 60,
                metadata: None,
                options: Default::default(),
            },
            at(created),
        )
    }

    fn finish(mut record: JobRecord, finished: i64) -> JobRecord {
        record.status = JobStatus::Completed;
        record.finished_at = Some(at(finished));
        record
    }

    fn store(ttl_secs: u64, max_finished: usize) -> MemoryStore {
        MemoryStore::new(StoreLimits {
            ttl: Duration::from_secs(ttl_secs),
            max_finished,
            max_finished_bytes: usize::MAX,
        })
    }

    #[tokio::test]
    async fn the_byte_budget_forgets_the_oldest_finished_first() {
        let records: Vec<JobRecord> = (0..3)
            .map(|n| {
                let mut record = job(n, "o", i64::from(n));
                record.prompt = "x".repeat(1000);
                finish(record, i64::from(n))
            })
            .collect();
        // Room for two of the three.
        let one = records[0].approx_bytes();
        let store = MemoryStore::new(StoreLimits {
            ttl: Duration::from_secs(3600),
            max_finished: 100,
            max_finished_bytes: 2 * one + one / 2,
        });
        for record in records {
            store.insert(record).await.unwrap();
        }
        let removed = store.remove_expired(at(10)).await.unwrap();
        assert_eq!(removed, vec![format!("{:032x}", 0)], "only the oldest goes");
        assert_eq!(store.len(), 2);
        // A queued job is not finished: it neither counts nor is forgotten.
        let mut big = job(9, "o", 20);
        big.prompt = "y".repeat(10_000);
        store.insert(big).await.unwrap();
        assert!(store.remove_expired(at(30)).await.unwrap().is_empty());
    }

    async fn ids(store: &MemoryStore, owner: &str, status: Option<JobStatus>) -> Vec<String> {
        let page = store
            .list(ListQuery {
                owner: owner.into(),
                status,
                limit: 100,
                cursor: None,
            })
            .await
            .unwrap();
        page.jobs.into_iter().map(|j| j.job_id).collect()
    }

    #[tokio::test]
    async fn finished_jobs_are_forgotten_past_the_ttl_and_live_ones_never() {
        let store = store(60, 100);
        store.insert(job(1, "a", 0)).await.unwrap();
        store.insert(job(2, "a", 0)).await.unwrap();
        store.update(finish(job(1, "a", 0), 10)).await.unwrap();

        assert!(store.remove_expired(at(69)).await.unwrap().is_empty());
        assert_eq!(
            store.remove_expired(at(70)).await.unwrap(),
            [format!("{:032x}", 1)]
        );
        assert!(store.get(format!("{:032x}", 1)).await.unwrap().is_none());
        // Queued for ever, still there.
        assert!(store
            .remove_expired(at(1_000_000))
            .await
            .unwrap()
            .is_empty());
        assert!(store.get(format!("{:032x}", 2)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn past_the_count_bound_the_oldest_finished_go_first() {
        let store = store(3600, 2);
        for n in 1..=4 {
            store.insert(job(n, "a", 0)).await.unwrap();
        }
        // Finished in the order 3, 1, 2; job 4 is still running.
        store.update(finish(job(3, "a", 0), 1)).await.unwrap();
        store.update(finish(job(1, "a", 0), 2)).await.unwrap();
        store.update(finish(job(2, "a", 0), 3)).await.unwrap();

        let removed = store.remove_expired(at(4)).await.unwrap();
        assert_eq!(removed, [format!("{:032x}", 3)]);
        assert_eq!(store.len(), 3);
        assert!(store.get(format!("{:032x}", 4)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_update_never_revives_a_forgotten_job() {
        let store = store(1, 10);
        store.insert(finish(job(1, "a", 0), 0)).await.unwrap();
        store.remove_expired(at(5)).await.unwrap();
        assert!(!store.update(finish(job(1, "a", 0), 0)).await.unwrap());
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn listing_is_per_owner_newest_first_filtered_and_paginated() {
        let store = store(3600, 100);
        for n in 1..=5 {
            store.insert(job(n, "alice", i64::from(n))).await.unwrap();
        }
        store.insert(job(6, "bob", 10)).await.unwrap();
        store.update(finish(job(2, "alice", 2), 20)).await.unwrap();

        let all = ids(&store, "alice", None).await;
        let expected: Vec<String> = (1..=5).rev().map(|n| format!("{n:032x}")).collect();
        assert_eq!(all, expected);
        assert_eq!(ids(&store, "bob", None).await, [format!("{:032x}", 6)]);
        assert_eq!(
            ids(&store, "alice", Some(JobStatus::Completed)).await,
            [format!("{:032x}", 2)]
        );

        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list(ListQuery {
                    owner: "alice".into(),
                    status: None,
                    limit: 2,
                    cursor: cursor.take(),
                })
                .await
                .unwrap();
            pages.push(
                page.jobs
                    .iter()
                    .map(|j| j.job_id.clone())
                    .collect::<Vec<_>>(),
            );
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(pages.len(), 3);
        assert_eq!(pages.concat(), expected);
    }

    #[tokio::test]
    async fn a_full_last_page_has_no_next_cursor() {
        let store = store(3600, 100);
        for n in 1..=2 {
            store.insert(job(n, "a", i64::from(n))).await.unwrap();
        }
        let page = store
            .list(ListQuery {
                owner: "a".into(),
                status: None,
                limit: 2,
                cursor: None,
            })
            .await
            .unwrap();
        assert_eq!(page.jobs.len(), 2);
        assert_eq!(page.next_cursor, None);
    }
}
