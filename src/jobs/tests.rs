//! The registry driven through a stand-in agent stack built from the real layers (concurrency,
//! deadline) around a scripted service: the job life cycle without the CLI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_layers::admission::Gauge;
use gateway_layers::concurrency::ConcurrencyLimitLayer;
use gateway_layers::deadline::DeadlineLayer;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use super::events::JobEvent;
use super::record::WebhookView;
use super::store::{DueWebhook, SpendWindow, StoreFuture, Unfinished, WebhookClaim, WebhookTried};
use super::*;
use crate::agent::{AgentOutcome, AgentRequest, ProgressSink, Usage};
use crate::run::Runs;
use crate::BoxError;

/// Counts runs in progress; one is subtracted when a run's future is dropped, however it ends.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stack whose agent does what the prompt says: `ok`, `fail`, `block` (until dropped),
/// `silent-block` (no event at all), `panic`; anything after a `:` only names the job. Each
/// prompt is added to `started` as its run starts.
fn stack(gauge: Gauge, running: Arc<AtomicUsize>, started: Started) -> Runs {
    let agent = tower::service_fn(move |req: http::Request<AgentRequest>| {
        let running = running.clone();
        let started = started.clone();
        async move {
            let _running = Running::start(&running);
            started.lock().unwrap().push(req.body().prompt.to_string());
            let progress = req.extensions().get::<ProgressSink>().cloned();
            let say = |event: serde_json::Value| {
                if let Some(ProgressSink(tx)) = &progress {
                    let _ = tx.send(event.to_string().into());
                }
            };
            let prompt = req.body().prompt.clone();
            match prompt.split(':').next().unwrap_or_default() {
                "ok" => {
                    say(serde_json::json!({"type": "system", "subtype": "init"}));
                    say(serde_json::json!({"type": "assistant", "text": "hello"}));
                    Ok::<_, BoxError>(AgentOutcome {
                        exit_code: Some(0),
                        result_line: Some(r#"{"type":"result","result":"hello"}"#.into()),
                        text: Some("hello".into()),
                        usage: Some(Usage {
                            input_tokens: 7,
                            output_tokens: 3,
                            ..Usage::default()
                        }),
                        cost_usd: Some(0.5),
                        duration_ms: 5,
                        ..AgentOutcome::default()
                    })
                }
                "fail" => Ok(AgentOutcome {
                    exit_code: Some(2),
                    stderr: "it broke\n".into(),
                    ..AgentOutcome::default()
                }),
                "block" => {
                    say(serde_json::json!({"type": "system", "subtype": "init"}));
                    std::future::pending().await
                }
                "silent-block" => std::future::pending().await,
                "panic" => panic!("the agent service panicked"),
                other => Err(format!("unexpected prompt {other}").into()),
            }
        }
    });
    let stack = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(gauge))
        .layer(DeadlineLayer::new(Duration::from_secs(600)))
        .service(agent);
    Runs::around(
        BoxCloneSyncService::new(stack),
        crate::metrics::Metrics::new(),
    )
}

/// The prompts of the runs that started, in order.
type Started = Arc<std::sync::Mutex<Vec<String>>>;

struct Fixture {
    jobs: Jobs,
    gauge: Gauge,
    running: Arc<AtomicUsize>,
    started: Started,
}

fn limits() -> StoreLimits {
    StoreLimits {
        ttl: Duration::from_secs(3600),
        max_finished: 100,
        max_finished_bytes: usize::MAX,
    }
}

fn fixture(concurrency: usize) -> Fixture {
    fixture_over(Arc::new(MemoryStore::new(limits())), concurrency)
}

fn fixture_over(store: Arc<dyn JobStore>, concurrency: usize) -> Fixture {
    let gauge = Gauge::new(concurrency, 100);
    let running = Arc::new(AtomicUsize::new(0));
    let started = Started::default();
    let jobs = Jobs::with_store(
        store,
        stack(gauge.clone(), running.clone(), started.clone()),
        gauge.clone(),
        1024,
        0,
        Duration::from_secs(60),
    );
    Fixture {
        jobs,
        gauge,
        running,
        started,
    }
}

/// A registry over the SQLite file `jobs.db` in `dir` (opened again if it exists).
async fn durable(dir: &std::path::Path, concurrency: usize) -> Fixture {
    let store = SqliteStore::open(
        &dir.join("jobs.db"),
        crate::config::SqliteSync::Normal,
        limits(),
    )
    .await
    .unwrap();
    fixture_over(Arc::new(store), concurrency)
}

fn new_job(owner: &str, prompt: &str, timeout_seconds: u64) -> NewJob {
    NewJob::new(owner, prompt, "agent", 1.0, timeout_seconds)
}

impl Fixture {
    async fn submit(&self, prompt: &str) -> JobRecord {
        let ticket = self.gauge.admit().expect("room in the queue");
        self.jobs
            .submit(new_job("me", prompt, 600), Some(ticket))
            .await
            .expect("accepted")
    }

    /// Follows the job's events to the end; answers their names and the final record.
    async fn follow(&self, job_id: &str) -> (Vec<(EventKind, String)>, JobRecord) {
        let mut subscription = self.jobs.events("me", job_id, 0).await.unwrap().unwrap();
        let mut seen = Vec::new();
        let follow = async {
            while let Some(batch) = subscription.next_batch().await.unwrap() {
                seen.extend(batch.into_iter().map(|e| (e.kind, e.data.to_string())));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), follow)
            .await
            .expect("the job ended");
        (seen, self.record(job_id).await)
    }

    /// Submits `prompt` and follows the job to its end.
    async fn run(&self, prompt: &str) -> (Vec<(EventKind, String)>, JobRecord) {
        let job = self.submit(prompt).await;
        self.follow(&job.job_id).await
    }

    /// A job that runs until it is stopped and, the one slot taken, a job queued behind it.
    async fn running_and_queued(&self) -> (JobRecord, JobRecord) {
        let running = self.submit("block").await;
        self.wait_status(&running.job_id, JobStatus::Running).await;
        (running, self.submit("ok").await)
    }

    /// The job's record as it stands.
    async fn record(&self, job_id: &str) -> JobRecord {
        self.jobs.get("me", job_id).await.unwrap().unwrap()
    }

    /// Waits (bounded) until the job's status is `status`.
    async fn wait_status(&self, job_id: &str, status: JobStatus) -> JobRecord {
        for _ in 0..400 {
            let record = self.record(job_id).await;
            if record.status == status {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("job {job_id} never became {status}");
    }
}

/// Asserts that `record`'s error says `says`.
fn assert_error_says(record: &JobRecord, says: &str) {
    assert!(
        record.error.as_deref().is_some_and(|e| e.contains(says)),
        "{record:?}"
    );
}

#[tokio::test]
async fn a_job_completes_and_its_events_tell_the_whole_story() {
    whole_story(fixture(2)).await;
}

#[tokio::test]
async fn in_the_durable_store_too_a_job_completes_and_its_events_tell_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    whole_story(durable(dir.path(), 2).await).await;
}

async fn whole_story(f: Fixture) {
    let queued = f.submit("ok").await;
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.job_id.len(), 32);

    let (events, record) = f.follow(&queued.job_id).await;
    assert_eq!(record.status, JobStatus::Completed);
    assert_eq!(record.result.as_deref(), Some("hello"));
    assert_eq!(record.usage.as_ref().map(|u| u.input_tokens), Some(7));
    assert_eq!(record.output, [r#"{"type":"result","result":"hello"}"#]);
    assert!(record.started_at.is_some() && record.finished_at.is_some());
    assert!(record.started_at <= record.finished_at);

    let kinds: Vec<_> = events.iter().map(|e| e.0).collect();
    use EventKind::*;
    assert_eq!(kinds, [Status, Status, Agent, Agent, Status, End]);
    assert!(events[0].1.contains("\"queued\""));
    assert!(events[1].1.contains("\"running\""));
    assert!(events[4].1.contains("\"completed\""));
    // Finished: the slot is free.
    assert_eq!(f.gauge.snapshot().active + f.gauge.snapshot().queued, 0);
}

#[tokio::test]
async fn a_failing_agent_ends_failed_with_its_exit_code_and_stderr() {
    let f = fixture(1);
    let (_, record) = f.run("fail").await;
    assert_eq!(record.status, JobStatus::Failed);
    assert_eq!(record.exit_code, Some(2));
    assert_eq!(record.stderr.as_deref(), Some("it broke\n"));
    assert_eq!(
        record.error.as_deref(),
        Some("the agent exited with code 2: it broke")
    );
}

#[tokio::test]
async fn a_job_is_running_as_soon_as_it_has_a_slot_even_before_the_agent_speaks() {
    let f = fixture(1);
    let job = f.submit("silent-block").await;
    let record = f.wait_status(&job.job_id, JobStatus::Running).await;
    assert!(record.started_at.is_some());
    f.jobs.cancel("me", &job.job_id).await.unwrap();
}

#[tokio::test]
async fn cancelling_frees_a_queued_slot_at_once_and_stops_a_running_run() {
    let f = fixture(1);
    let (first, second) = f.running_and_queued().await;
    assert_eq!(f.gauge.snapshot().queued, 1);

    let cancelled = f.jobs.cancel("me", &second.job_id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Error);
    assert_error_says(&cancelled, "cancelled");
    assert_eq!(cancelled.started_at, None);
    assert_eq!(f.gauge.snapshot().queued, 0);

    // Another caller cannot see it, let alone cancel it.
    assert!(matches!(
        f.jobs.cancel("someone-else", &first.job_id).await,
        Err(CancelError::NotFound)
    ));
    assert!(f
        .jobs
        .get("someone-else", &first.job_id)
        .await
        .unwrap()
        .is_none());

    assert_eq!(f.running.load(Ordering::SeqCst), 1);
    let cancelled = f.jobs.cancel("me", &first.job_id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Error);
    assert!(cancelled.started_at.is_some());
    // The run's future is gone by the time the answer comes, and its slot with it.
    assert_eq!(f.running.load(Ordering::SeqCst), 0);
    assert_eq!(f.gauge.snapshot().active, 0);

    assert!(matches!(
        f.jobs.cancel("me", &first.job_id).await,
        Err(CancelError::Finished)
    ));
    assert!(matches!(
        f.jobs.cancel("me", &"0".repeat(32)).await,
        Err(CancelError::NotFound)
    ));
    // The log ends for a late subscriber too.
    let (events, _) = f.follow(&first.job_id).await;
    assert_eq!(events.last().map(|e| e.0), Some(EventKind::End));
    f.jobs.drained().await;
}

#[tokio::test]
async fn shutdown_stops_queued_jobs_then_aborts_running_ones_with_the_reason() {
    let f = fixture(1);
    let (running, queued) = f.running_and_queued().await;

    f.jobs.stop_accepting();
    let record = f.follow(&queued.job_id).await.1;
    assert_eq!(record.status, JobStatus::Error);
    assert_error_says(&record, "gateway shut down");
    assert!(matches!(
        f.jobs.submit(new_job("me", "ok", 60), None).await,
        Err(SubmitError::ShuttingDown)
    ));
    // The running one carries on through the grace period.
    assert_eq!(f.record(&running.job_id).await.status, JobStatus::Running);

    f.jobs
        .abort_all("the gateway shut down before the job finished")
        .await;
    let record = f.record(&running.job_id).await;
    assert_eq!(record.status, JobStatus::Error);
    assert_eq!(
        record.error.as_deref(),
        Some("the gateway shut down before the job finished")
    );
    assert_eq!(f.running.load(Ordering::SeqCst), 0);
    assert_eq!(f.jobs.live_count(), 0);
    tokio::time::timeout(Duration::from_secs(1), f.jobs.drained())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_run_past_its_timeout_ends_timeout() {
    let f = fixture(1);
    let ticket = f.gauge.admit().unwrap();
    let job = f
        .jobs
        .submit(new_job("me", "block", 1), Some(ticket))
        .await
        .unwrap();
    let (_, record) = f.follow(&job.job_id).await;
    assert_eq!(record.status, JobStatus::Timeout);
    assert_error_says(&record, "timeout of 1 seconds");
    assert_eq!(f.running.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_panicking_run_is_recorded_as_an_error_not_left_running() {
    let f = fixture(1);
    let (events, record) = f.run("panic").await;
    assert_eq!(record.status, JobStatus::Error);
    assert_error_says(&record, "internal error");
    assert_eq!(events.last().map(|e| e.0), Some(EventKind::End));
    tokio::time::timeout(Duration::from_secs(5), f.jobs.drained())
        .await
        .unwrap();
    assert_eq!(f.gauge.snapshot().active + f.gauge.snapshot().queued, 0);
}

#[tokio::test]
async fn listing_shows_only_the_callers_jobs_newest_first() {
    let f = fixture(4);
    let a = f.submit("ok").await;
    let b = f.submit("ok").await;
    f.jobs
        .submit(new_job("other", "ok", 60), None)
        .await
        .unwrap();
    let page = f
        .jobs
        .list(ListQuery {
            owner: "me".into(),
            status: None,
            limit: 10,
            cursor: None,
        })
        .await
        .unwrap();
    let ids: Vec<_> = page.jobs.iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(ids, [b.job_id.clone(), a.job_id.clone()]);
}

#[tokio::test(start_paused = true)]
async fn the_timer_forgets_jobs_with_nothing_finishing_and_stops_with_the_registry() {
    let store = Arc::new(MemoryStore::new(StoreLimits {
        ttl: Duration::from_secs(1),
        max_finished: 100,
        max_finished_bytes: usize::MAX,
    }));
    let gauge = Gauge::new(1, 10);
    let jobs = Jobs::with_store(
        store.clone(),
        stack(
            gauge.clone(),
            Arc::new(AtomicUsize::new(0)),
            Started::default(),
        ),
        gauge,
        1024,
        0,
        Duration::from_secs(1),
    );
    let mut record = JobRecord::queued("a".repeat(32), new_job("o", "p", 1), timestamp_now());
    // Finished a minute ago by the wall clock the store is given.
    record.status = JobStatus::Completed;
    record.finished_at = Some(timestamp_now() - chrono::TimeDelta::seconds(60));
    store.insert(record, Vec::new()).await.unwrap();

    for _ in 0..100 {
        if store.len() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.len(), 0, "the timer never forgot the job");
    // The timer holds the registry weakly: once the handle is gone, so is everything it held.
    drop(jobs);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "the timer kept the store alive"
    );
}

#[test]
fn the_eviction_period_follows_the_ttl_within_bounds() {
    assert_eq!(
        eviction_period(Duration::from_secs(3600)),
        Duration::from_secs(60)
    );
    assert_eq!(
        eviction_period(Duration::from_secs(100)),
        Duration::from_secs(10)
    );
    assert_eq!(
        eviction_period(Duration::from_secs(1)),
        Duration::from_secs(1)
    );
}

/// A record as a killed gateway may have left it: `status`, `attempts` of `max_attempts`.
fn left_behind(n: u32, status: JobStatus, attempts: u32, max_attempts: u32) -> JobRecord {
    let mut job = new_job("me", &format!("ok:{n}"), 600);
    job.max_attempts = max_attempts;
    let mut record = JobRecord::queued(
        format!("{n:032x}"),
        job,
        timestamp_now() + chrono::TimeDelta::seconds(i64::from(n)),
    );
    record.status = status;
    record.attempts = attempts;
    if status == JobStatus::Running {
        record.started_at = Some(record.created_at);
    }
    record
}

fn status_event(seq: u64, record: &JobRecord) -> JobEvent {
    JobEvent {
        seq,
        kind: EventKind::Status,
        data: record.status_event().to_string().into(),
    }
}

#[tokio::test]
async fn after_a_crash_queued_jobs_run_in_their_order_and_running_ones_end_interrupted_or_run_again(
) {
    let dir = tempfile::tempdir().unwrap();
    let (interrupted, again) = (
        "00000000000000000000000000000001",
        "00000000000000000000000000000002",
    );
    {
        // What a killed gateway left, accepted in the order 1, 2, 4, 3: 1 and 2 were running (2
        // with an attempt left), 4 and 3 queued. The store is dropped, never closed.
        let store = SqliteStore::open(
            &dir.path().join("jobs.db"),
            crate::config::SqliteSync::Normal,
            limits(),
        )
        .await
        .unwrap();
        for (n, status, attempts, max) in [
            (1, JobStatus::Running, 1, 1),
            (2, JobStatus::Running, 1, 2),
            (4, JobStatus::Queued, 0, 1),
            (3, JobStatus::Queued, 0, 1),
        ] {
            let record = left_behind(n, status, attempts, max);
            let mut events = vec![status_event(
                0,
                &JobRecord::queued(
                    record.job_id.clone(),
                    new_job("me", "p", 1),
                    record.created_at,
                ),
            )];
            if status == JobStatus::Running {
                events.push(status_event(1, &record));
            }
            store.insert(record, events).await.unwrap();
        }
    }
    let f = durable(dir.path(), 1).await;
    let recovered = f.jobs.recover().await.unwrap();
    assert_eq!(
        recovered,
        Recovered {
            queued: 3,
            requeued: 1,
            interrupted: 1
        }
    );

    let record = f.record(interrupted).await;
    assert_eq!(record.status, JobStatus::Error);
    assert!(record.interrupted);
    assert_error_says(&record, "the gateway stopped while the job was running");
    let (events, _) = f.follow(interrupted).await;
    let kinds: Vec<_> = events.iter().map(|e| e.0).collect();
    use EventKind::*;
    assert_eq!(kinds, [Status, Status, Status, End]);
    assert!(events[2].1.contains("\"error\""));

    // The rest run one at a time, in the order they were accepted.
    for n in [2, 4, 3] {
        let record = f.follow(&format!("{n:032x}")).await.1;
        assert_eq!(record.status, JobStatus::Completed, "{record:?}");
    }
    assert_eq!(*f.started.lock().unwrap(), ["ok:2", "ok:4", "ok:3"]);
    let (events, record) = f.follow(again).await;
    assert_eq!(record.attempts, 2);
    assert!(!record.interrupted);
    let requeued = &events[2].1;
    assert!(
        requeued.contains("\"requeued\":true") && requeued.contains("\"queued\""),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_durable_shutdown_keeps_queued_jobs_and_requeues_running_ones_with_attempts_left() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = {
        let f = durable(dir.path(), 1).await;
        let mut job = new_job("me", "block:first", 600);
        job.max_attempts = 2;
        let first = f.jobs.submit(job, None).await.unwrap().job_id.clone();
        f.wait_status(&first, JobStatus::Running).await;
        let second = f.submit("ok:second").await.job_id.clone();

        f.jobs.stop_accepting();
        // The queued job stops waiting but stays queued, for the next start.
        tokio::time::timeout(Duration::from_secs(5), async {
            while f.jobs.live_count() > 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the queued job left the queue");
        let record = f.record(&second).await;
        assert_eq!(record.status, JobStatus::Queued);
        assert_eq!(record.error, None);

        f.jobs
            .abort_all("the gateway shut down before the job finished")
            .await;
        let record = f.record(&first).await;
        assert_eq!(record.status, JobStatus::Queued, "{record:?}");
        assert_eq!((record.attempts, record.started_at), (1, None));
        assert_eq!(f.running.load(Ordering::SeqCst), 0);
        f.jobs.close().await;
        (first, second)
    };

    let f = durable(dir.path(), 1).await;
    let recovered = f.jobs.recover().await.unwrap();
    assert_eq!(recovered.queued, 2);
    let record = f.wait_status(&first, JobStatus::Running).await;
    assert_eq!(record.attempts, 2);
    f.jobs.cancel("me", &first).await.unwrap();
    assert_eq!(f.follow(&second).await.1.status, JobStatus::Completed);
    assert_eq!(*f.started.lock().unwrap(), ["block:first", "ok:second"]);
}

/// A store that fails every write as full while `full` is set, and counts the failures.
struct Filling {
    inner: MemoryStore,
    full: std::sync::atomic::AtomicBool,
    failures: AtomicUsize,
}

impl Filling {
    /// `write`, or a full-disk error while `full` is set.
    fn write<'a, T: Send + 'a>(
        &'a self,
        write: impl FnOnce(&'a MemoryStore) -> StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        if self.full.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async { Err(StoreError::full("no space left on device (injected)")) });
        }
        write(&self.inner)
    }
}

impl JobStore for Filling {
    fn is_durable(&self) -> bool {
        true
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn insert(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, ()> {
        self.write(|store| store.insert(record, events))
    }
    fn get(&self, job_id: String) -> StoreFuture<'_, Option<JobRecord>> {
        self.inner.get(job_id)
    }
    fn update(&self, record: JobRecord, events: Vec<JobEvent>) -> StoreFuture<'_, bool> {
        self.write(|store| store.update(record, events))
    }
    fn append(&self, job_id: String, events: Vec<JobEvent>) -> StoreFuture<'_, bool> {
        self.write(|store| store.append(job_id, events))
    }
    fn events(&self, job_id: String, from: u64, limit: usize) -> StoreFuture<'_, Vec<JobEvent>> {
        self.inner.events(job_id, from, limit)
    }
    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page> {
        self.inner.list(query)
    }
    fn unfinished(&self) -> StoreFuture<'_, Vec<Unfinished>> {
        self.inner.unfinished()
    }
    fn remove_expired(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>> {
        self.inner.remove_expired(now)
    }
    fn charge(
        &self,
        owner: String,
        window: SpendWindow,
        spend: crate::policy::Spend,
    ) -> StoreFuture<'_, ()> {
        self.write(|store| store.charge(owner, window, spend))
    }
    fn spent(&self, owner: String, window: SpendWindow) -> StoreFuture<'_, crate::policy::Spend> {
        self.inner.spent(owner, window)
    }
    fn close(&self) -> StoreFuture<'_, ()> {
        self.inner.close()
    }
    fn claim_webhooks(&self, claim: WebhookClaim) -> StoreFuture<'_, Vec<DueWebhook>> {
        self.write(|store| store.claim_webhooks(claim))
    }
    fn webhook_tried(&self, id: String, tried: WebhookTried) -> StoreFuture<'_, bool> {
        self.write(|store| store.webhook_tried(id, tried))
    }
    fn webhooks(&self, job_id: String) -> StoreFuture<'_, Vec<WebhookView>> {
        self.inner.webhooks(job_id)
    }
    fn next_webhook(&self, now: DateTime<Utc>) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        self.inner.next_webhook(now)
    }
}

#[tokio::test]
async fn a_full_store_refuses_new_jobs_and_keeps_retrying_the_end_of_running_ones() {
    let store = Arc::new(Filling {
        inner: MemoryStore::new(limits()),
        full: false.into(),
        failures: AtomicUsize::new(0),
    });
    let f = fixture_over(store.clone(), 1);
    let running = f.submit("block").await;
    f.wait_status(&running.job_id, JobStatus::Running).await;

    store.full.store(true, Ordering::SeqCst);
    let refused = f.jobs.submit(new_job("me", "ok", 60), None).await;
    match refused {
        Err(SubmitError::Store(error)) => assert_eq!(error.kind(), StoreErrorKind::Full),
        other => panic!("accepted on a full store: {other:?}"),
    }
    assert_eq!(store.len(), 1, "nothing of the refused job is kept");
    assert_eq!(f.gauge.snapshot().queued, 0);

    // The running job ends while the store is full: its end is retried, not lost.
    let cancel = tokio::spawn({
        let jobs = f.jobs.clone();
        let id = running.job_id.clone();
        async move { jobs.cancel("me", &id).await }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.failures.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the end was tried");
    assert_eq!(f.record(&running.job_id).await.status, JobStatus::Running);
    store.full.store(false, Ordering::SeqCst);
    let record = cancel.await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Error);
    let stored = f.record(&running.job_id).await;
    assert_eq!(stored, record);
    // And new jobs are accepted again.
    assert_eq!(f.run("ok").await.1.status, JobStatus::Completed);
}
