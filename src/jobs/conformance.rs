//! The one conformance suite every [`JobStore`] passes: the same tests, run against the memory
//! store, the SQLite store and the PostgreSQL store (each test on a database of its own).
//!
//! Each test takes a fresh, empty store of the kind given and checks what a caller of the trait
//! can see: records read back whole, listings, status transitions, the order jobs come back in
//! after a restart, eviction order, the byte budget, events, and many writers at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::events::{EventKind, JobEvent};
use super::memory::{MemoryStore, StoreLimits};
use super::postgres::testdb::TestDb;
use super::postgres::PgStore;
use super::record::WebhookAttempt;
use super::record::{JobRecord, JobStatus, NewJob};
use super::sqlite::SqliteStore;
use super::store::{
    ChatSession, Cursor, JobStore, ListQuery, LogPosition, WebhookClaim, WebhookKind, WebhookTried,
};
use crate::agent::Usage;
use crate::config::SqliteSync;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

/// A store under test and what it needs to stay alive.
struct Subject {
    store: Arc<dyn JobStore>,
    /// The SQLite file's directory.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database, dropped after the store.
    _db: Option<TestDb>,
}

impl std::ops::Deref for Subject {
    type Target = dyn JobStore;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

fn limits(ttl_secs: u64, max_finished: usize, max_finished_bytes: usize) -> StoreLimits {
    StoreLimits {
        ttl: Duration::from_secs(ttl_secs),
        max_finished,
        max_finished_bytes,
    }
}

async fn open(kind: Kind, limits: StoreLimits) -> Subject {
    match kind {
        Kind::Memory => Subject {
            store: Arc::new(MemoryStore::new(limits)),
            _dir: None,
            _db: None,
        },
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("jobs.db"), SqliteSync::Normal, limits)
                .await
                .unwrap();
            Subject {
                store: Arc::new(store),
                _dir: Some(dir),
                _db: None,
            }
        }
        Kind::Postgres => {
            let db = TestDb::create().await;
            let store = PgStore::open(&db.url(), "conformance", limits)
                .await
                .unwrap();
            Subject {
                store: Arc::new(store),
                _dir: None,
                _db: Some(db),
            }
        }
    }
}

/// A roomy store: nothing is forgotten unless a test says so.
async fn roomy(kind: Kind) -> Subject {
    open(kind, limits(3600, 1000, usize::MAX)).await
}

/// The store's clock is whatever `now` the caller passes, so tests move time by hand.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

fn id(n: u32) -> String {
    format!("{n:032x}")
}

/// A queued job `n` of `owner`, created `created` seconds after the suite's epoch.
pub(super) fn job(n: u32, owner: &str, created: i64) -> JobRecord {
    JobRecord::queued(id(n), NewJob::new(owner, "p", "a", 1.0, 60), at(created))
}

fn finish(mut record: JobRecord, finished: i64) -> JobRecord {
    record.status = JobStatus::Completed;
    record.finished_at = Some(at(finished));
    record
}

/// Stores `record` finished (completed) at `finished` seconds, with `events` appended.
async fn store_finished(
    store: &impl std::ops::Deref<Target = dyn JobStore>,
    record: JobRecord,
    finished: i64,
    events: Vec<JobEvent>,
) {
    store
        .update(finish(record, finished), events)
        .await
        .unwrap();
}

/// Inserts jobs `ns` of `owner`, job `n` created at `n` seconds.
async fn insert_in_order(store: &Subject, owner: &str, ns: std::ops::RangeInclusive<u32>) {
    for n in ns {
        store
            .insert(job(n, owner, i64::from(n)), Vec::new())
            .await
            .unwrap();
    }
}

/// Finishes owner `a`'s jobs created at 0, in order: job `n` at `finished`, for each pair.
async fn finish_in_order(store: &Subject, order: &[(u32, i64)]) {
    for &(n, finished) in order {
        store_finished(store, job(n, "a", 0), finished, Vec::new()).await;
    }
}

fn event(seq: u64, kind: EventKind, data: &str) -> JobEvent {
    JobEvent {
        seq,
        kind,
        data: data.into(),
    }
}

async fn ids(store: &Subject, owner: &str, status: Option<JobStatus>) -> Vec<String> {
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

/// Runs each named test against every store, as `conformance::<store>::<test>`.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Kind::Memory).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Kind::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Kind::Postgres).await
                }
            )*
        }
    };
}

conformance!(
    a_record_reads_back_whole_and_an_unknown_id_is_none,
    an_update_replaces_the_record_and_never_revives_a_forgotten_job,
    statuses_move_from_queued_to_running_to_terminal_and_listings_follow,
    listing_is_per_owner_newest_first_filtered_and_paginated,
    a_full_last_page_has_no_next_cursor,
    unfinished_jobs_come_back_in_the_order_they_were_accepted_with_their_log_position,
    finished_jobs_are_forgotten_past_the_ttl_and_live_ones_never,
    past_the_count_bound_the_oldest_finished_go_first,
    the_byte_budget_counts_records_and_events_and_forgets_the_oldest_finished_first,
    events_read_back_in_order_from_any_position_and_a_retried_write_never_doubles_one,
    events_go_with_their_job_and_need_the_job,
    many_concurrent_writers_lose_nothing,
    a_kept_session_reads_back_counts_in_the_byte_budget_and_goes_with_its_job,
    chat_sessions_read_back_and_are_forgotten_past_the_ttl_and_the_count_bound,
    webhooks_are_held_with_their_job_and_claimed_when_due_under_a_lease,
    webhooks_go_with_their_job,
);

async fn a_record_reads_back_whole_and_an_unknown_id_is_none(kind: Kind) {
    let store = roomy(kind).await;
    let mut record = finish(job(1, "alice", 0), 5);
    record.metadata = Some(
        serde_json::json!({"ticket": "OPS-1", "n": [1, 2]})
            .as_object()
            .unwrap()
            .clone(),
    );
    record.usage = Some(Usage {
        input_tokens: 42,
        output_tokens: 7,
        ..Usage::default()
    });
    record.cost_usd = Some(0.0123);
    record.output = vec!["{\"type\":\"result\"}".into()];
    record.stderr = Some("é\n".into());
    record.result = Some("done".into());
    record.exit_code = Some(0);
    record.max_attempts = 3;
    record.attempts = 2;
    record.interrupted = true;
    store.insert(record.clone(), Vec::new()).await.unwrap();
    assert_eq!(store.get(id(1)).await.unwrap(), Some(record));
    assert_eq!(store.get(id(2)).await.unwrap(), None);
    assert_eq!(store.len(), 1);
}

async fn an_update_replaces_the_record_and_never_revives_a_forgotten_job(kind: Kind) {
    let store = open(kind, limits(1, 10, usize::MAX)).await;
    store.insert(job(1, "a", 0), Vec::new()).await.unwrap();
    let mut running = job(1, "a", 0);
    running.status = JobStatus::Running;
    running.started_at = Some(at(1));
    running.attempts = 1;
    assert!(store.update(running.clone(), Vec::new()).await.unwrap());
    assert_eq!(store.get(id(1)).await.unwrap(), Some(running));

    store_finished(&store, job(1, "a", 0), 2, Vec::new()).await;
    assert_eq!(store.remove_expired(at(10)).await.unwrap(), [id(1)]);
    assert!(!store
        .update(
            finish(job(1, "a", 0), 2),
            vec![event(0, EventKind::End, "{}")]
        )
        .await
        .unwrap());
    assert_eq!(store.get(id(1)).await.unwrap(), None);
    assert_eq!(store.len(), 0);
}

async fn statuses_move_from_queued_to_running_to_terminal_and_listings_follow(kind: Kind) {
    let store = roomy(kind).await;
    store.insert(job(1, "a", 0), Vec::new()).await.unwrap();
    assert_eq!(ids(&store, "a", Some(JobStatus::Queued)).await, [id(1)]);
    let mut record = job(1, "a", 0);
    record.status = JobStatus::Running;
    store.update(record.clone(), Vec::new()).await.unwrap();
    assert!(ids(&store, "a", Some(JobStatus::Queued)).await.is_empty());
    assert_eq!(ids(&store, "a", Some(JobStatus::Running)).await, [id(1)]);
    assert_eq!(store.unfinished().await.unwrap().len(), 1);
    record.status = JobStatus::Failed;
    record.finished_at = Some(at(3));
    store.update(record, Vec::new()).await.unwrap();
    assert_eq!(ids(&store, "a", Some(JobStatus::Failed)).await, [id(1)]);
    assert!(store.unfinished().await.unwrap().is_empty());
    let page = store
        .list(ListQuery {
            owner: "a".into(),
            status: None,
            limit: 10,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(page.jobs[0].status, JobStatus::Failed);
    assert_eq!(page.jobs[0].finished_at, Some(at(3)));
}

async fn listing_is_per_owner_newest_first_filtered_and_paginated(kind: Kind) {
    let store = roomy(kind).await;
    insert_in_order(&store, "alice", 1..=5).await;
    // Two jobs created in the same microsecond are told apart by their ids.
    store.insert(job(7, "alice", 5), Vec::new()).await.unwrap();
    store.insert(job(6, "bob", 10), Vec::new()).await.unwrap();
    store_finished(&store, job(2, "alice", 2), 20, Vec::new()).await;

    let all = ids(&store, "alice", None).await;
    let expected = [id(7), id(5), id(4), id(3), id(2), id(1)];
    assert_eq!(all, expected);
    assert_eq!(ids(&store, "bob", None).await, [id(6)]);
    assert!(ids(&store, "carol", None).await.is_empty());
    assert_eq!(
        ids(&store, "alice", Some(JobStatus::Completed)).await,
        [id(2)]
    );

    let mut pages = Vec::new();
    let mut cursor: Option<Cursor> = None;
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
            // Through its text form, as a caller hands it back.
            Some(next) => cursor = Some(Cursor::decode(&next.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.concat(), expected);

    // A cursor and a status filter together.
    let page = store
        .list(ListQuery {
            owner: "alice".into(),
            status: Some(JobStatus::Queued),
            limit: 10,
            cursor: Some(Cursor {
                created_at: at(4),
                job_id: id(4),
            }),
        })
        .await
        .unwrap();
    let rest: Vec<_> = page.jobs.into_iter().map(|j| j.job_id).collect();
    assert_eq!(rest, [id(3), id(1)]);
}

async fn a_full_last_page_has_no_next_cursor(kind: Kind) {
    let store = roomy(kind).await;
    insert_in_order(&store, "a", 1..=2).await;
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

async fn unfinished_jobs_come_back_in_the_order_they_were_accepted_with_their_log_position(
    kind: Kind,
) {
    let store = roomy(kind).await;
    // Accepted in the order 3, 1, 2, 4 (creation times say otherwise: acceptance decides).
    for (n, created) in [(3, 9), (1, 1), (2, 2), (4, 0)] {
        store
            .insert(
                job(n, "a", created),
                vec![event(0, EventKind::Status, "queued")],
            )
            .await
            .unwrap();
    }
    let mut running = job(1, "a", 1);
    running.status = JobStatus::Running;
    store
        .update(
            running,
            vec![
                event(1, EventKind::Status, "running"),
                event(2, EventKind::Agent, "1234"),
                event(3, EventKind::Truncated, "{}"),
            ],
        )
        .await
        .unwrap();
    store_finished(&store, job(2, "a", 2), 5, Vec::new()).await;

    let unfinished = store.unfinished().await.unwrap();
    let order: Vec<_> = unfinished
        .iter()
        .map(|u| (u.record.job_id.clone(), u.record.status))
        .collect();
    assert_eq!(
        order,
        [
            (id(3), JobStatus::Queued),
            (id(1), JobStatus::Running),
            (id(4), JobStatus::Queued)
        ]
    );
    assert_eq!(
        unfinished[0].log,
        LogPosition {
            next_seq: 1,
            agent_bytes: 0,
            truncated: false
        }
    );
    assert_eq!(
        unfinished[1].log,
        LogPosition {
            next_seq: 4,
            agent_bytes: 4,
            truncated: true
        }
    );
}

async fn finished_jobs_are_forgotten_past_the_ttl_and_live_ones_never(kind: Kind) {
    let store = open(kind, limits(60, 100, usize::MAX)).await;
    store.insert(job(1, "a", 0), Vec::new()).await.unwrap();
    store.insert(job(2, "a", 0), Vec::new()).await.unwrap();
    store_finished(&store, job(1, "a", 0), 10, Vec::new()).await;

    assert!(store.remove_expired(at(69)).await.unwrap().is_empty());
    assert_eq!(store.remove_expired(at(70)).await.unwrap(), [id(1)]);
    assert!(store.get(id(1)).await.unwrap().is_none());
    // Queued for ever, still there.
    assert!(store
        .remove_expired(at(1_000_000))
        .await
        .unwrap()
        .is_empty());
    assert!(store.get(id(2)).await.unwrap().is_some());
    assert_eq!(store.len(), 1);
}

async fn past_the_count_bound_the_oldest_finished_go_first(kind: Kind) {
    let store = open(kind, limits(3600, 2, usize::MAX)).await;
    for n in 1..=4 {
        store.insert(job(n, "a", 0), Vec::new()).await.unwrap();
    }
    // Finished in the order 3, 1, 2; job 4 is still running.
    finish_in_order(&store, &[(3, 1), (1, 2), (2, 3)]).await;

    assert_eq!(store.remove_expired(at(4)).await.unwrap(), [id(3)]);
    assert_eq!(store.len(), 3);
    assert!(store.get(id(4)).await.unwrap().is_some());
    // Two more finish at once: the older two of the four finished go.
    store.insert(job(5, "a", 0), Vec::new()).await.unwrap();
    finish_in_order(&store, &[(5, 5), (4, 6)]).await;
    assert_eq!(store.remove_expired(at(7)).await.unwrap(), [id(1), id(2)]);
    assert_eq!(ids(&store, "a", None).await, [id(5), id(4)]);
}

async fn the_byte_budget_counts_records_and_events_and_forgets_the_oldest_finished_first(
    kind: Kind,
) {
    // Room for two jobs of 10 kB (prompt or events), not three: a record's fixed fields take far
    // less than the 5 kB slack, in any store.
    let store = open(kind, limits(3600, 100, 25_000)).await;
    let big = |n: u32| {
        let mut record = job(n, "o", i64::from(n));
        record.prompt = "x".repeat(10_000);
        record
    };
    store.insert(finish(big(0), 0), Vec::new()).await.unwrap();
    store.insert(finish(big(1), 1), Vec::new()).await.unwrap();
    assert!(store.remove_expired(at(10)).await.unwrap().is_empty());
    // A small record whose events hold 10 kB counts as much as a big record.
    store
        .insert(
            job(2, "o", 2),
            vec![event(0, EventKind::Agent, &"e".repeat(10_000))],
        )
        .await
        .unwrap();
    // Unfinished: it neither counts nor is forgotten.
    assert!(store.remove_expired(at(10)).await.unwrap().is_empty());
    store_finished(
        &store,
        job(2, "o", 2),
        2,
        vec![event(1, EventKind::End, "{}")],
    )
    .await;
    assert_eq!(store.remove_expired(at(10)).await.unwrap(), [id(0)]);
    assert_eq!(ids(&store, "o", None).await, [id(2), id(1)]);
}

async fn events_read_back_in_order_from_any_position_and_a_retried_write_never_doubles_one(
    kind: Kind,
) {
    let store = roomy(kind).await;
    store
        .insert(job(1, "a", 0), vec![event(0, EventKind::Status, "queued")])
        .await
        .unwrap();
    let batch: Vec<_> = (1..=5)
        .map(|n| event(n, EventKind::Agent, &format!("{{\"n\":{n}}}")))
        .collect();
    assert!(store.append(id(1), batch.clone()).await.unwrap());
    // The same write again (its answer was lost), and one that overlaps it.
    assert!(store.append(id(1), batch.clone()).await.unwrap());
    assert!(store
        .append(
            id(1),
            vec![batch[4].clone(), event(6, EventKind::Agent, "6")]
        )
        .await
        .unwrap());
    let mut done = finish(job(1, "a", 0), 1);
    done.result = Some("r".into());
    store
        .update(done, vec![event(7, EventKind::End, "end")])
        .await
        .unwrap();

    let all = store.events(id(1), 0, 100).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..=7).collect::<Vec<_>>());
    assert_eq!(all[0], event(0, EventKind::Status, "queued"));
    assert_eq!(all[3], event(3, EventKind::Agent, "{\"n\":3}"));
    assert_eq!(all[7].kind, EventKind::End);
    // From a position, and bounded.
    let some = store.events(id(1), 3, 2).await.unwrap();
    assert_eq!(some.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert!(store.events(id(1), 8, 10).await.unwrap().is_empty());
    assert!(store.events(id(9), 0, 10).await.unwrap().is_empty());
}

async fn events_go_with_their_job_and_need_the_job(kind: Kind) {
    let store = open(kind, limits(1, 100, usize::MAX)).await;
    assert!(!store
        .append(id(1), vec![event(0, EventKind::Agent, "x")])
        .await
        .unwrap());
    store
        .insert(
            finish(job(1, "a", 0), 0),
            vec![event(0, EventKind::End, "end")],
        )
        .await
        .unwrap();
    assert_eq!(store.events(id(1), 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.remove_expired(at(100)).await.unwrap(), [id(1)]);
    assert!(store.events(id(1), 0, 10).await.unwrap().is_empty());
    // A new job under the same id starts a new log.
    store.insert(job(1, "a", 200), Vec::new()).await.unwrap();
    assert!(store.events(id(1), 0, 10).await.unwrap().is_empty());
}

async fn many_concurrent_writers_lose_nothing(kind: Kind) {
    const WRITERS: u32 = 16;
    const JOBS: u32 = 25;
    let store = open(kind, limits(3600, 100_000, usize::MAX)).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.store.clone();
            tokio::spawn(async move {
                for j in 0..JOBS {
                    let n = w * 1000 + j;
                    let owner = format!("writer-{w}");
                    store
                        .insert(
                            job(n, &owner, i64::from(j)),
                            vec![event(0, EventKind::Status, "q")],
                        )
                        .await
                        .unwrap();
                    store
                        .append(id(n), vec![event(1, EventKind::Agent, "a")])
                        .await
                        .unwrap();
                    store_finished(
                        &store,
                        job(n, &owner, i64::from(j)),
                        i64::from(j),
                        vec![event(2, EventKind::End, "e")],
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(store.len(), (WRITERS * JOBS) as usize);
    assert!(store.unfinished().await.unwrap().is_empty());
    for w in 0..WRITERS {
        let listed = ids(&store, &format!("writer-{w}"), Some(JobStatus::Completed)).await;
        assert_eq!(listed.len(), JOBS as usize, "writer {w}");
    }
    for n in [0, 7 * 1000 + 3, 15 * 1000 + 24] {
        assert_eq!(store.events(id(n), 0, 10).await.unwrap().len(), 3);
    }
}

async fn a_kept_session_reads_back_counts_in_the_byte_budget_and_goes_with_its_job(kind: Kind) {
    // Room for one 10 kB session beside two small jobs, not two sessions.
    let store = open(kind, limits(3600, 100, 15_000)).await;
    assert!(!store.keep_session(id(9), b"nobody".to_vec()).await.unwrap());
    for n in 0..2 {
        store
            .insert(job(n, "o", i64::from(n)), Vec::new())
            .await
            .unwrap();
        assert!(store.keep_session(id(n), vec![b's'; 10_000]).await.unwrap());
        store_finished(&store, job(n, "o", i64::from(n)), i64::from(n), Vec::new()).await;
    }
    assert_eq!(
        store.session(id(1)).await.unwrap(),
        Some(vec![b's'; 10_000])
    );
    assert_eq!(store.session(id(9)).await.unwrap(), None);
    // Two sessions are past the budget: the oldest job goes, with its session.
    assert_eq!(store.remove_expired(at(10)).await.unwrap(), [id(0)]);
    assert_eq!(store.session(id(0)).await.unwrap(), None);
    assert!(store.session(id(1)).await.unwrap().is_some());
}

async fn chat_sessions_read_back_and_are_forgotten_past_the_ttl_and_the_count_bound(kind: Kind) {
    let store = open(kind, limits(100, 2, usize::MAX)).await;
    let chat = |n: u32, seconds: i64| ChatSession {
        handle: id(n),
        owner: "alice".into(),
        updated_at: at(seconds),
        session: vec![u8::try_from(n).unwrap(); 3],
    };
    for (n, seconds) in [(0, 0), (1, 50), (2, 60), (3, 70)] {
        assert!(store.keep_chat_session(chat(n, seconds)).await.unwrap());
    }
    // A later turn replaces the session under the same handle.
    let mut later = chat(3, 80);
    later.session = b"new".to_vec();
    store.keep_chat_session(later.clone()).await.unwrap();
    assert_eq!(store.chat_session(id(3)).await.unwrap(), Some(later));
    // At 120 s the first is past the TTL; of the rest only the two most recent stay.
    store.remove_expired(at(120)).await.unwrap();
    assert_eq!(store.chat_session(id(0)).await.unwrap(), None);
    assert_eq!(store.chat_session(id(1)).await.unwrap(), None);
    assert!(store.chat_session(id(2)).await.unwrap().is_some());
    assert!(store.chat_session(id(3)).await.unwrap().is_some());
}

/// A job of `owner` whose webhooks go to a receiver.
fn hooked(n: u32, created: i64) -> JobRecord {
    let mut record = job(n, "o", created);
    record.callback_url = Some("http://127.0.0.1:9/hook".into());
    record
}

/// A try that the receiver answered with `status`.
fn answered(status: u16, at_s: i64, state: &'static str, next: i64) -> WebhookTried {
    WebhookTried {
        attempt: Some(WebhookAttempt {
            at: super::record::format_iso(&at(at_s)),
            status_code: Some(status),
            error: (status != 200).then(|| format!("the receiver answered {status}")),
        }),
        state,
        next_at: at(next),
    }
}

async fn webhooks_are_held_with_their_job_and_claimed_when_due_under_a_lease(kind: Kind) {
    let store = roomy(kind).await;
    store.insert(hooked(1, 0), Vec::new()).await.unwrap();
    store.insert(job(2, "o", 0), Vec::new()).await.unwrap();
    assert!(
        store.webhooks(id(2)).await.unwrap().is_empty(),
        "no callback_url, no webhooks"
    );
    let views = store.webhooks(id(1)).await.unwrap();
    let kinds: Vec<(&str, &str)> = views
        .iter()
        .map(|v| (v.kind.as_str(), v.state.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("job.started", "pending"), ("job.ended", "pending")]
    );
    let started_id = WebhookKind::Started.id_for(&id(1));
    assert_eq!(views[0].id, started_id);

    // Queued: nothing is due yet.
    assert!(store
        .claim_webhooks(WebhookClaim::new(at(1), at(100), 10))
        .await
        .unwrap()
        .is_empty());
    let mut running = hooked(1, 0);
    running.status = JobStatus::Running;
    running.started_at = Some(at(1));
    store.update(running, Vec::new()).await.unwrap();
    let due = store
        .claim_webhooks(WebhookClaim::new(at(1), at(100), 10))
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(
        (due[0].id.as_str(), due[0].kind),
        (started_id.as_str(), WebhookKind::Started)
    );
    assert_eq!(due[0].job.status, JobStatus::Running);
    assert_eq!(due[0].attempts, 0);
    // Leased: no one else gets it until the lease runs out.
    assert!(store
        .claim_webhooks(WebhookClaim::new(at(2), at(100), 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .claim_webhooks(WebhookClaim::new(at(100), at(200), 10))
            .await
            .unwrap()
            .len(),
        1
    );

    // A refused try: pending again, due at its next time and not before.
    assert!(store
        .webhook_tried(started_id.clone(), answered(500, 100, "pending", 105))
        .await
        .unwrap());
    assert!(store
        .claim_webhooks(WebhookClaim::new(at(101), at(300), 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_webhook(at(101)).await.unwrap(), Some(at(105)));
    let due = store
        .claim_webhooks(WebhookClaim::new(at(105), at(300), 10))
        .await
        .unwrap();
    assert_eq!(due[0].attempts, 1);
    store
        .webhook_tried(started_id.clone(), answered(200, 105, "delivered", 105))
        .await
        .unwrap();

    // Ended: the end is due, with the job's final status.
    store_finished(&store, hooked(1, 0), 110, Vec::new()).await;
    let due = store
        .claim_webhooks(WebhookClaim::new(at(110), at(300), 10))
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].kind, WebhookKind::Ended);
    assert_eq!(due[0].job.status, JobStatus::Completed);
    store
        .webhook_tried(due[0].id.clone(), answered(503, 110, "failed", 110))
        .await
        .unwrap();
    assert!(store
        .claim_webhooks(WebhookClaim::new(at(1000), at(2000), 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_webhook(at(0)).await.unwrap(), None);

    let views = store.webhooks(id(1)).await.unwrap();
    assert_eq!(views[0].state, "delivered");
    let codes: Vec<Option<u16>> = views[0].attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(200)]);
    assert_eq!(views[0].next_attempt_at, None);
    assert_eq!(views[1].state, "failed");
    assert_eq!(views[1].attempts.len(), 1);
    assert!(!store
        .webhook_tried("msg_unknown".into(), answered(200, 1, "delivered", 1))
        .await
        .unwrap());
}

async fn webhooks_go_with_their_job(kind: Kind) {
    let store = open(kind, limits(10, 100, usize::MAX)).await;
    store.insert(hooked(1, 0), Vec::new()).await.unwrap();
    store_finished(&store, hooked(1, 0), 1, Vec::new()).await;
    assert_eq!(store.remove_expired(at(100)).await.unwrap(), [id(1)]);
    assert!(store.webhooks(id(1)).await.unwrap().is_empty());
    assert!(store
        .claim_webhooks(WebhookClaim::new(at(100), at(200), 10))
        .await
        .unwrap()
        .is_empty());
}
