//! The SQLite store's own behaviour: what the conformance suite cannot ask of every store (the
//! file, its schema versions, its space, a full disk).
use super::*;
use crate::jobs::events::EventKind;
use crate::jobs::record::JobStatus;
use chrono::TimeZone;

fn limits() -> StoreLimits {
    StoreLimits {
        ttl: Duration::from_secs(3600),
        max_finished: 1000,
        max_finished_bytes: usize::MAX,
    }
}

/// The conformance suite's job `n`, its prompt `prompt_bytes` long.
/// The store at `path`, opened with the suite's limits.
async fn open(path: &Path, sync: SqliteSync) -> SqliteStore {
    SqliteStore::open(path, sync, limits()).await.unwrap()
}

fn job(n: u32, prompt_bytes: usize) -> JobRecord {
    let mut record = crate::jobs::conformance::job(n, "o", i64::from(n));
    record.prompt = "x".repeat(prompt_bytes);
    record
}

fn finished(mut record: JobRecord, at: i64) -> JobRecord {
    record.status = JobStatus::Completed;
    record.finished_at = Some(Utc.timestamp_opt(1_700_000_000 + at, 0).unwrap());
    record
}

/// The database file and its write-ahead log together.
fn bytes_on_disk(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::fs::metadata(name).map_or(0, |m| m.len())
        })
        .sum()
}

#[tokio::test]
async fn what_was_written_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = open(&path, SqliteSync::Normal).await;
    let event = JobEvent {
        seq: 0,
        kind: EventKind::Status,
        data: "{\"status\":\"queued\"}".into(),
    };
    store.insert(job(1, 10), vec![event.clone()]).await.unwrap();
    store
        .insert(finished(job(2, 10), 5), Vec::new())
        .await
        .unwrap();
    // Not closed: as after kill -9, only what was committed counts.
    drop(store);
    let store = open(&path, SqliteSync::Full).await;
    assert_eq!(store.len(), 2);
    assert_eq!(
        store.get(format!("{:032x}", 1)).await.unwrap(),
        Some(job(1, 10))
    );
    assert_eq!(
        store.events(format!("{:032x}", 1), 0, 10).await.unwrap(),
        [event]
    );
    assert_eq!(store.counts().finished, 1);
}

#[tokio::test]
async fn the_file_is_set_to_give_freed_pages_back_and_keeps_a_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("jobs.db"), SqliteSync::Normal).await;
    let auto_vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    assert_eq!(auto_vacuum, 2, "incremental");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn under_churn_the_file_gives_space_back_instead_of_growing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open(
        &path,
        SqliteSync::Normal,
        StoreLimits {
            max_finished: 10,
            ..limits()
        },
    )
    .await
    .unwrap();
    let mut peak = 0;
    for round in 0..6u32 {
        // 50 jobs of 100 kB each: 5 MB written per round, ten jobs (1 MB) kept.
        for n in 0..50 {
            let n = round * 100 + n;
            store.insert(job(n, 100_000), Vec::new()).await.unwrap();
            store
                .update(finished(job(n, 100_000), i64::from(n)), Vec::new())
                .await
                .unwrap();
        }
        // Within the time to live of every job: only the count bound forgets.
        let now = Utc.timestamp_opt(1_700_000_000 + 1000, 0).unwrap();
        store.remove_expired(now).await.unwrap();
        let size = bytes_on_disk(&path);
        if round == 1 {
            peak = size;
        }
        if round > 1 {
            assert!(
                size <= peak + 512 * 1024,
                "round {round}: {size} bytes on disk, {peak} after round 1"
            );
        }
    }
    assert_eq!(store.len(), 10);
    // Ten jobs of 100 kB, and room for what a round writes between two evictions.
    assert!(
        bytes_on_disk(&path) < 8 * 1024 * 1024,
        "{}",
        bytes_on_disk(&path)
    );
}

#[tokio::test]
async fn a_store_from_a_newer_gateway_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = open(&path, SqliteSync::Normal).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&store.writer)
    .await
    .unwrap();
    store.close().await.unwrap();
    let error = SqliteStore::open(&path, SqliteSync::Normal, limits())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("newer claude-gateway"), "{error}");
    assert!(
        error.contains("9999") && error.contains("DATABASE_URL"),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[tokio::test]
async fn a_store_from_an_earlier_gateway_is_migrated_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    // What the first version of the schema made, with a job in it.
    let first = Migrator {
        migrations: std::borrow::Cow::Owned(MIGRATOR.iter().take(1).cloned().collect()),
        ..Migrator::DEFAULT
    };
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    first.run(&pool).await.unwrap();
    let record = job(1, 10);
    sqlx::query(
        "INSERT INTO jobs (job_id, owner, status, created_at, record_bytes, summary, record) \
         VALUES (?, 'o', 'queued', 0, 10, ?, ?)",
    )
    .bind(&record.job_id)
    .bind(serde_json::to_string(&record.summary).unwrap())
    .bind(serde_json::to_string(&record).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = open(&path, SqliteSync::Normal).await;
    assert_eq!(
        store.get(record.job_id.clone()).await.unwrap(),
        Some(record.clone())
    );
    let event = JobEvent {
        seq: 0,
        kind: EventKind::Status,
        data: "{}".into(),
    };
    assert!(store
        .append(record.job_id.clone(), vec![event])
        .await
        .unwrap());
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].log.next_seq, 1);
}

#[tokio::test]
async fn a_full_database_fails_as_full_writes_nothing_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("jobs.db"), SqliteSync::Normal).await;
    store.insert(job(1, 10), Vec::new()).await.unwrap();
    // The writer is the one connection that writes: capping its pages is a full disk to it.
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
        .execute(&store.writer)
        .await
        .unwrap();
    let error = store.insert(job(2, 200_000), Vec::new()).await.unwrap_err();
    assert_eq!(error.kind(), crate::jobs::StoreErrorKind::Full, "{error}");
    assert_eq!(store.len(), 1);
    assert_eq!(store.get(format!("{:032x}", 2)).await.unwrap(), None);
    assert!(store.get(format!("{:032x}", 1)).await.unwrap().is_some());

    sqlx::query("PRAGMA max_page_count = 1073741823")
        .execute(&store.writer)
        .await
        .unwrap();
    store.insert(job(2, 200_000), Vec::new()).await.unwrap();
    assert_eq!(store.len(), 2);
}
