//! The PostgreSQL store's own behaviour, beyond the conformance suite: migrations racing, the
//! shared queue's claim, fenced writes, leases and the service-wide queue bound.

use super::testdb::TestDb;
use super::*;
use crate::jobs::conformance::job;
use crate::jobs::events::EventKind;
use crate::jobs::record::JobStatus;

fn limits() -> StoreLimits {
    StoreLimits {
        ttl: Duration::from_secs(3600),
        max_finished: 1000,
        max_finished_bytes: usize::MAX,
    }
}

fn queued_event() -> Vec<JobEvent> {
    vec![JobEvent {
        seq: 0,
        kind: EventKind::Status,
        data: "{}".into(),
    }]
}

#[tokio::test]
async fn replicas_opening_an_empty_database_at_once_migrate_it_once() {
    let db = TestDb::create().await;
    let url = db.url();
    let opened = futures_util::future::join_all((0..4).map(|n| {
        let url = url.clone();
        async move { PgStore::open(&url, &format!("r{n}"), limits()).await }
    }))
    .await;
    for store in &opened {
        assert!(store.is_ok(), "{store:?}");
    }
    let store = opened.into_iter().next().unwrap().unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATOR.iter().count() as i64);
}

#[tokio::test]
async fn claims_take_the_oldest_jobs_and_never_the_same_one_twice() {
    let db = TestDb::create().await;
    let a = PgStore::open(&db.url(), "a", limits()).await.unwrap();
    let b = PgStore::open(&db.url(), "b", limits()).await.unwrap();
    for n in 0..40 {
        a.insert(job(n, "o", i64::from(n)), queued_event())
            .await
            .unwrap();
    }
    assert_eq!(a.queued().await.unwrap(), 40);
    let first = a.claim(3, &ClaimCaps::default()).await.unwrap();
    let ids: Vec<_> = first.iter().map(|u| u.record.job_id.clone()).collect();
    assert_eq!(ids, [0, 1, 2].map(|n| job(n, "o", 0).job_id.clone()));
    assert_eq!(first[0].log.next_seq, 1);
    // Two replicas claiming at once split the rest between them.
    let mut seen: Vec<String> = ids;
    loop {
        let none = ClaimCaps::default();
        let (x, y) = tokio::join!(a.claim(4, &none), b.claim(4, &none));
        let (x, y) = (x.unwrap(), y.unwrap());
        if x.is_empty() && y.is_empty() {
            break;
        }
        seen.extend(x.into_iter().chain(y).map(|u| u.record.job_id.clone()));
    }
    seen.sort();
    let before = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), before, "a job was claimed twice");
    assert_eq!(seen.len(), 40);
    assert_eq!(a.queued().await.unwrap(), 0);
}

#[tokio::test]
async fn a_write_by_a_former_holder_lands_nowhere() {
    let db = TestDb::create().await;
    let a = PgStore::open(&db.url(), "a", limits()).await.unwrap();
    a.insert(job(1, "o", 0), queued_event()).await.unwrap();
    let mut record = a
        .claim(1, &ClaimCaps::default())
        .await
        .unwrap()
        .remove(0)
        .record;
    record.replica = Some("a".into());
    record.status = JobStatus::Running;
    assert!(a.update(record.clone(), Vec::new()).await.unwrap());
    // Handed back to the queue by whoever settled a's jobs...
    let mut requeued = record.clone();
    requeued.status = JobStatus::Queued;
    requeued.replica = None;
    let held = Fence {
        replica: Some("a".into()),
        unfinished: true,
    };
    assert!(a.update_fenced(&requeued, &[], &held).await.unwrap());
    // ... a's late write changes nothing.
    record.status = JobStatus::Completed;
    assert!(!a.update(record, Vec::new()).await.unwrap());
    let stored = a.get(job(1, "o", 0).job_id.clone()).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Queued);
    assert_eq!(a.queued().await.unwrap(), 1);
}

#[tokio::test]
async fn the_queue_bound_counts_the_whole_service_and_expired_leases_are_found() {
    let db = TestDb::create().await;
    let a = PgStore::open(&db.url(), "a", limits()).await.unwrap();
    let b = PgStore::open(&db.url(), "b", limits()).await.unwrap();
    assert_eq!(
        a.enqueue(&job(1, "o", 0), &[], 2, ONE).await.unwrap(),
        Enqueued::Queued
    );
    assert_eq!(
        b.enqueue(&job(2, "o", 0), &[], 2, ONE).await.unwrap(),
        Enqueued::Queued
    );
    assert_eq!(
        a.enqueue(&job(3, "o", 0), &[], 2, ONE).await.unwrap(),
        Enqueued::Full
    );
    // A claimed job no longer counts.
    b.claim(1, &ClaimCaps::default()).await.unwrap();
    assert_eq!(
        a.enqueue(&job(3, "o", 0), &[], 2, ONE).await.unwrap(),
        Enqueued::Queued
    );

    a.renew_lease(Duration::from_secs(60)).await.unwrap();
    b.renew_lease(Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(a.expire_leases().await.unwrap(), ["b"]);
    let orphans = a.orphans(None).await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].holder.as_deref(), Some("b"));
    assert!(a.orphans(Some("a")).await.unwrap().is_empty());
}

#[tokio::test]
async fn replicas_claiming_webhooks_at_once_never_take_the_same_one() {
    let db = TestDb::create().await;
    let url = db.url();
    let mut replicas = Vec::new();
    for n in 0..4 {
        replicas.push(
            PgStore::open(&url, &format!("r{n}"), limits())
                .await
                .unwrap(),
        );
    }
    for n in 0..30 {
        let mut record = job(n, "o", 0);
        record.callback_url = Some("http://127.0.0.1:9/hook".into());
        replicas[0]
            .insert(record.clone(), queued_event())
            .await
            .unwrap();
        record.status = JobStatus::Completed;
        record.started_at = Some(record.created_at);
        record.finished_at = Some(record.created_at);
        replicas[0].update(record, Vec::new()).await.unwrap();
    }
    let now = chrono::Utc::now();
    let lease = now + chrono::TimeDelta::seconds(60);
    // Each replica claims in small batches, all at once, until nothing is left.
    let claimed = futures_util::future::join_all(replicas.iter().map(|store| async move {
        let mut mine = Vec::new();
        loop {
            let due = store
                .claim_webhooks(WebhookClaim::new(now, lease, 3))
                .await
                .unwrap();
            if due.is_empty() {
                return mine;
            }
            mine.extend(due.into_iter().map(|d| d.id));
        }
    }))
    .await;
    let mut all: Vec<String> = claimed.into_iter().flatten().collect();
    assert_eq!(all.len(), 60, "every webhook claimed once: {all:?}");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 60, "no webhook claimed twice");
}

/// Weight 1, no per-key queue limit.
const ONE: FairAdmit = FairAdmit {
    weight: 1,
    max_queued: None,
};

/// The job ids `claimed` holds, by their number in [`job`].
fn numbers(claimed: &[Unfinished], of: &[(u32, &str)]) -> Vec<u32> {
    claimed
        .iter()
        .map(|u| {
            of.iter()
                .find(|(n, owner)| job(*n, owner, 0).job_id == u.record.job_id)
                .expect("a known job")
                .0
        })
        .collect()
}

/// Caps for a claim: alice at `max_concurrent`, everyone else unlimited.
fn alice_capped_at(max_concurrent: i64) -> ClaimCaps {
    ClaimCaps {
        owners: vec!["alice".into()],
        caps: vec![max_concurrent],
        default: i64::MAX,
    }
}

/// Queues jobs `numbers` of `owner` through `store` (each created at its number), noting them in
/// `all`.
async fn enqueue_all<'a>(
    store: &PgStore,
    owner: &'a str,
    numbers: std::ops::Range<u32>,
    all: &mut Vec<(u32, &'a str)>,
) {
    for n in numbers {
        store
            .enqueue(&job(n, owner, i64::from(n)), &[], 1000, ONE)
            .await
            .unwrap();
        all.push((n, owner));
    }
}

#[tokio::test]
async fn a_newcomer_is_claimed_ahead_of_a_long_queue_and_capped_owners_are_passed_over() {
    let db = TestDb::create().await;
    let a = PgStore::open(&db.url(), "a", limits()).await.unwrap();
    let b = PgStore::open(&db.url(), "b", limits()).await.unwrap();
    let mut all = Vec::new();
    enqueue_all(&a, "alice", 0..20, &mut all).await;
    // Two of alice's run (one on each replica) when bob arrives.
    assert_eq!(
        numbers(&a.claim(1, &ClaimCaps::default()).await.unwrap(), &all),
        [0]
    );
    assert_eq!(
        numbers(&b.claim(1, &ClaimCaps::default()).await.unwrap(), &all),
        [1]
    );
    enqueue_all(&b, "bob", 20..22, &mut all).await;
    // Bob's two go next, ahead of alice's 18.
    assert_eq!(
        numbers(&a.claim(2, &ClaimCaps::default()).await.unwrap(), &all),
        [20, 21]
    );
    // Alice capped at the 2 she holds: nothing of hers is claimed.
    let caps = alice_capped_at(2);
    assert!(b.claim(2, &caps).await.unwrap().is_empty());
    // A limit of 3 lets exactly one more of hers go.
    let caps = alice_capped_at(3);
    assert_eq!(numbers(&b.claim(2, &caps).await.unwrap(), &all), [2]);
    // Bob at his max_queued is refused while alice is still taken.
    let capped = FairAdmit {
        weight: 1,
        max_queued: Some(0),
    };
    assert_eq!(
        a.enqueue(&job(30, "bob", 30), &[], 1000, capped)
            .await
            .unwrap(),
        Enqueued::KeyFull { max_queued: 0 }
    );
    assert_eq!(
        a.enqueue(&job(31, "alice", 31), &[], 1000, ONE)
            .await
            .unwrap(),
        Enqueued::Queued
    );
}

/// Marks every job a replica holds finished, as their ends would.
async fn finish_held(store: &PgStore) {
    sqlx::query(
        "UPDATE jobs SET status = 'completed', finished_at = 1 \
         WHERE replica IS NOT NULL AND finished_at IS NULL",
    )
    .execute(&store.pool)
    .await
    .unwrap();
}

/// Forgets every job still waiting in the queue.
async fn forget_queued(store: &PgStore) {
    sqlx::query("DELETE FROM jobs WHERE status = 'queued' AND replica IS NULL")
        .execute(&store.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn replicas_claiming_at_once_never_take_an_owner_past_its_max_concurrent() {
    let db = TestDb::create().await;
    let a = PgStore::open(&db.url(), "a", limits()).await.unwrap();
    let b = PgStore::open(&db.url(), "b", limits()).await.unwrap();
    let caps = alice_capped_at(1);
    let mut n = 0;
    for round in 0..40 {
        for owner in ["alice", "alice", "alice", "bob"] {
            a.enqueue(&job(n, owner, i64::from(n)), &[], 1000, ONE)
                .await
                .unwrap();
            n += 1;
        }
        // Both replicas claim at the same instant, each for two slots.
        let (x, y) = tokio::join!(a.claim(2, &caps), b.claim(2, &caps));
        let claimed: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
        let alice = claimed.iter().filter(|u| u.record.owner == "alice").count();
        assert_eq!(alice, 1, "round {round}: alice's limit is 1");
        // The other owner is not held back by alice's limit.
        assert!(
            claimed.iter().any(|u| u.record.owner == "bob"),
            "round {round}"
        );
        finish_held(&a).await;
        forget_queued(&a).await;
    }
}

#[tokio::test]
async fn a_job_going_back_to_the_queue_gives_its_owner_s_slot_back() {
    let db = TestDb::create().await;
    let a = PgStore::open(&db.url(), "a", limits()).await.unwrap();
    let caps = alice_capped_at(1);
    for n in 0..2 {
        a.enqueue(&job(n, "alice", i64::from(n)), &[], 1000, ONE)
            .await
            .unwrap();
    }
    assert_eq!(a.claim(2, &caps).await.unwrap().len(), 1);
    assert!(a.claim(1, &caps).await.unwrap().is_empty(), "at her limit");
    // Settled as after a restart: the claimed job is back in the queue, unheld.
    sqlx::query("UPDATE jobs SET replica = NULL WHERE replica IS NOT NULL")
        .execute(&a.pool)
        .await
        .unwrap();
    assert_eq!(a.claim(1, &caps).await.unwrap().len(), 1);
    assert!(
        a.claim(1, &caps).await.unwrap().is_empty(),
        "at her limit again"
    );
    // Finishing it frees the slot for her next.
    finish_held(&a).await;
    assert_eq!(a.claim(1, &caps).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_pause_published_by_one_replica_stops_every_replica_s_claims_until_it_ends() {
    let db = TestDb::create().await;
    let a = PgStore::open(&db.url(), "a", limits()).await.unwrap();
    let b = PgStore::open(&db.url(), "b", limits()).await.unwrap();
    a.enqueue(&job(0, "o", 0), &[], 1000, ONE).await.unwrap();
    let now = Utc::now();
    assert_eq!(b.dispatch_paused_until(now).await.unwrap(), None);
    let until = now + chrono::TimeDelta::seconds(60);
    a.pause_dispatch(until).await.unwrap();
    // An earlier end does not shorten it.
    b.pause_dispatch(now + chrono::TimeDelta::seconds(1))
        .await
        .unwrap();
    let seen = b.dispatch_paused_until(now).await.unwrap().unwrap();
    assert_eq!(seen.timestamp_micros(), until.timestamp_micros());
    assert!(b.claim(1, &ClaimCaps::default()).await.unwrap().is_empty());
    // Once its end has passed (here: moved back by hand) the queue is claimed again.
    sqlx::query("UPDATE dispatch_pause SET until_at = 0")
        .execute(&a.pool)
        .await
        .unwrap();
    assert_eq!(b.dispatch_paused_until(Utc::now()).await.unwrap(), None);
    assert_eq!(b.claim(1, &ClaimCaps::default()).await.unwrap().len(), 1);
}
