//! Several replicas, one PostgreSQL: three processes of the built binary share one queue and one
//! job store on a database of their own (created on the machine's PostgreSQL and dropped after),
//! and behave as one gateway: any replica answers for any job, jobs start in the order they were
//! accepted on whichever replica has a free slot, a cancel or the events of a job cross replicas,
//! a replica killed with SIGKILL is noticed through its lease, and a database that goes away
//! leaves the gateway up and loses nothing acknowledged.

mod common;
mod store_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};
use store_support::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The stand-in agent of these tests. Its prompt decides what it does: it always logs the prompt
/// (one line per start) to `runs.log`; `hold` waits until the file `release` exists; `once`
/// waits for ever the first time it runs, and answers at once the next; `events` prints an
/// event, then waits for `release` too.
fn agent_script(state: &Path) -> String {
    let state = state.display();
    format!(
        r#"prompt=$(cat)
echo "$prompt" >> {state}/runs.log
echo '{{"type":"system","subtype":"init","session_id":"s"}}'
case "$prompt" in
  *once*)
    marker="{state}/started-$(echo "$prompt" | tr -cd 'a-z0-9-')"
    if [ ! -e "$marker" ]; then touch "$marker"; exec sleep 600; fi ;;
  *hold*|*events*)
    echo '{{"type":"assistant","message":{{"role":"assistant","content":[{{"type":"text","text":"working"}}]}},"session_id":"s"}}'
    while [ ! -e {state}/release ]; do sleep 0.05; done ;;
  *second-gate*)
    while [ ! -e {state}/release-second ]; do sleep 0.05; done ;;
esac
echo '{{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s","total_cost_usd":0,"usage":{{"input_tokens":1,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}}}'
"#
    )
}

/// Three (or more) replicas on one database, with the agent above.
struct Cluster {
    db: TestDb,
    /// Where the agent logs and waits; readable and writable by any run's uid.
    state: tempfile::TempDir,
    _scripts: tempfile::TempDir,
    agent: PathBuf,
    home: tempfile::TempDir,
    /// One `JOBS_DIR` per replica.
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn new() -> Cluster {
        // Written before anything is spawned (a script open for writing while another thread
        // forks fails to execute with ETXTBSY).
        let scripts = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        for dir in [scripts.path(), state.path()] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
        }
        // Runs may each have a uid of their own: any of them appends to the log.
        let log = state.path().join("runs.log");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let agent = script(scripts.path(), "agent.sh", &agent_script(state.path()));
        Cluster {
            db: TestDb::create().await,
            state,
            _scripts: scripts,
            agent,
            home: tempfile::tempdir().unwrap(),
            dirs: Vec::new(),
        }
    }

    /// The settings of replica `n` (`r0`, `r1`, ...), with its own `JOBS_DIR`.
    fn settings(&mut self, n: usize, extra: &[(&str, String)]) -> Vec<(String, String)> {
        while self.dirs.len() <= n {
            self.dirs.push(tempfile::tempdir().unwrap());
        }
        let mut settings = settings(
            &self.agent,
            "http://127.0.0.1:9",
            self.dirs[n].path(),
            self.home.path(),
        );
        set(&mut settings, "DATABASE_URL", self.db.url());
        set(&mut settings, "REPLICA_ID", format!("r{n}"));
        for (name, value) in extra {
            set(&mut settings, name, value);
        }
        settings
    }

    /// Starts replicas `0..n` at once (so their migrations race).
    async fn start(&mut self, n: usize, extra: &[(&str, String)]) -> Vec<Binary> {
        let all: Vec<_> = (0..n).map(|i| self.settings(i, extra)).collect();
        futures_util::future::join_all(all.iter().map(|s| Binary::start(s))).await
    }

    /// The prompts the agent was started with, in the order the starts were logged.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.path().join("runs.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Lets every `hold` and `events` run answer.
    fn release(&self) {
        std::fs::write(self.state.path().join("release"), "").unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents of a replica killed with SIGKILL outlive it (a restart on its JOBS_DIR would
        // stop them): stopped here instead.
        for dir in &self.dirs {
            for (pid, _) in processes_under(dir.path()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn limit(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// `DELETE /jobs/{id}` on `replica`.
async fn cancel(replica: &Binary, job_id: &str) -> (StatusCode, Value) {
    replica
        .call(reqwest::Method::DELETE, &format!("/jobs/{job_id}"))
        .await
}

/// `GET /jobs` on `replica`: the ids listed.
async fn listed(replica: &Binary) -> Vec<String> {
    let (status, page) = replica.call(reqwest::Method::GET, "/jobs?limit=500").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The replica (index) a running job runs on.
async fn running_on(replicas: &[Binary], job_id: &str) -> usize {
    let record = replicas[0]
        .wait_job(job_id, limit(30), |r| r["status"] == "running")
        .await;
    let name = record["replica"]
        .as_str()
        .expect("a running job names its replica");
    name.trim_start_matches('r').parse().unwrap()
}

#[tokio::test]
async fn any_replica_answers_for_any_job_and_each_record_names_the_replica_that_ran_it() {
    let mut cluster = Cluster::new().await;
    // Started at once on an empty database: their migrations take turns.
    let replicas = cluster.start(3, &[]).await;
    for (n, replica) in replicas.iter().enumerate() {
        let health = replica.health().await;
        assert_eq!(health["store"], "ok", "{health}");
        assert_eq!(health["replica"], format!("r{n}"), "{health}");
    }

    let mut jobs = Vec::new();
    for (n, replica) in replicas.iter().enumerate() {
        jobs.push(replica.submit(&format!("quick-{n}"), Value::Null).await);
    }
    for job in &jobs {
        for replica in &replicas {
            let record = replica.wait_end(job).await;
            assert_eq!(record["status"], "completed", "{record}");
            assert!(
                ["r0", "r1", "r2"].contains(&record["replica"].as_str().unwrap_or("")),
                "{record}"
            );
            assert_eq!(record["attempts"], 1, "{record}");
        }
    }
    for replica in &replicas {
        let ids = listed(replica).await;
        for job in &jobs {
            assert!(ids.contains(job), "{job} missing from {ids:?}");
        }
        // The whole log from a replica that may not have run it.
        let events = replica.events(&jobs[0], None).await.rest().await;
        assert_eq!(events.first().map(|e| e.event.as_str()), Some("status"));
        assert_eq!(events.last().map(|e| e.event.as_str()), Some("end"));
    }
    // Unknown on every replica alike.
    let (status, _) = replicas[2].get(&"0".repeat(32)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_burst_of_200_jobs_runs_each_once_in_creation_order_spread_over_three_replicas() {
    const JOBS: usize = 200;
    const SLOTS: usize = 2;
    let mut cluster = Cluster::new().await;
    let extra = [
        ("MAX_CONCURRENCY", SLOTS.to_string()),
        ("MAX_QUEUE_DEPTH", "1000".to_owned()),
    ];
    let replicas = Arc::new(cluster.start(3, &extra).await);

    // Submitted from three clients at once, one per replica.
    let submitters: Vec<JoinHandle<Vec<String>>> = (0..3)
        .map(|n| {
            let replicas = replicas.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in (n..JOBS).step_by(3) {
                    ids.push(replicas[n].submit(&format!("burst-{i}"), Value::Null).await);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for submitter in submitters {
        ids.extend(submitter.await.unwrap());
    }
    assert_eq!(ids.len(), JOBS);

    let mut records = Vec::new();
    for id in &ids {
        let record = replicas[0].wait_end(id).await;
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["attempts"], 1, "{record}");
        records.push(record);
    }
    // Each exactly once: one start logged per prompt.
    let runs = cluster.runs();
    assert_eq!(runs.len(), JOBS, "{runs:?}");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for run in &runs {
        *counts.entry(run.as_str()).or_default() += 1;
    }
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");

    // Spread over all three.
    let mut per_replica: HashMap<String, usize> = HashMap::new();
    for record in &records {
        *per_replica
            .entry(record["replica"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_replica.len(), 3, "{per_replica:?}");
    assert!(
        per_replica.values().all(|n| *n >= JOBS / 10),
        "{per_replica:?}"
    );

    // In creation order within the free slots. Creation order is the order the database
    // accepted the jobs in (its sequence: the 202s of different replicas interleave); sorted by
    // start, no job is further from its place in that order than the slots of the service can
    // hold at once, twice over for the time a claimed job takes to be marked running on a busy
    // machine.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&cluster.db.url())
        .await
        .unwrap();
    let accepted: Vec<String> = sqlx::query_scalar("SELECT job_id FROM jobs ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(accepted.len(), JOBS);
    let started_at: HashMap<&str, &str> = records
        .iter()
        .map(|r| {
            (
                r["job_id"].as_str().unwrap(),
                r["started_at"].as_str().unwrap(),
            )
        })
        .collect();
    let mut by_started = accepted.clone();
    by_started.sort_by_key(|id| started_at[id.as_str()]);
    let place: HashMap<&str, usize> = by_started
        .iter()
        .enumerate()
        .map(|(at, id)| (id.as_str(), at))
        .collect();
    let displacement = accepted
        .iter()
        .enumerate()
        .map(|(created, id)| place[id.as_str()].abs_diff(created))
        .max()
        .unwrap();
    assert!(
        displacement <= 2 * 3 * SLOTS,
        "a job started {displacement} places away from its place in creation order"
    );
}

#[tokio::test]
async fn a_cancel_on_one_replica_stops_a_job_running_on_another_within_a_second() {
    let mut cluster = Cluster::new().await;
    let replicas = cluster.start(3, &[]).await;
    // Up to three tries, each on a job of its own: a machine starved of CPU by other work can
    // stretch one stop past the second; the design must bring one within it.
    let mut took = Vec::new();
    let (job, runner) = loop {
        let job = replicas[0]
            .submit(&format!("hold-cancel-{}", took.len()), Value::Null)
            .await;
        let runner = running_on(&replicas, &job).await;
        let runner_dir = cluster.dirs[runner].path().to_owned();
        eventually("the agent runs", limit(30), || async {
            (!processes_under(&runner_dir).is_empty()).then_some(())
        })
        .await;

        let other = &replicas[(runner + 1) % 3];
        let asked = Instant::now();
        let (status, record) = cancel(other, &job).await;
        took.push(asked.elapsed());
        assert_eq!(status, StatusCode::OK, "{record}");
        assert_eq!(record["status"], "error", "{record}");
        assert!(
            record["error"].as_str().unwrap().contains("cancelled"),
            "{record}"
        );
        eventually("the agent is gone", limit(10), || async {
            processes_under(&runner_dir).is_empty().then_some(())
        })
        .await;
        if took.last().is_some_and(|t| *t < Duration::from_secs(1)) || took.len() == 3 {
            break (job, runner);
        }
    };
    assert!(
        took.iter().any(|t| *t < Duration::from_secs(1)),
        "no cancel within a second: {took:?}"
    );
    // Every replica sees the same end, and a second cancel is a conflict anywhere.
    for replica in &replicas {
        assert_eq!(replica.record(&job).await["status"], "error");
    }
    assert_eq!(
        cancel(&replicas[runner], &job).await.0,
        StatusCode::CONFLICT
    );

    // A job still in the shared queue is cancelled by whichever replica is asked.
    let mut one = Cluster::new().await;
    let solo = one.start(1, &[("MAX_CONCURRENCY", "1".to_owned())]).await;
    let holding = solo[0].submit("hold-slot", Value::Null).await;
    solo[0]
        .wait_job(&holding, limit(30), |r| r["status"] == "running")
        .await;
    let queued = solo[0].submit("waits", Value::Null).await;
    let (status, record) = cancel(&solo[0], &queued).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["status"], "error", "{record}");
    one.release();
    assert_eq!(solo[0].wait_end(&holding).await["status"], "completed");
    assert!(!one.runs().iter().any(|run| run == "waits"));
}

#[tokio::test]
async fn events_stream_live_from_a_replica_that_does_not_run_the_job() {
    let mut cluster = Cluster::new().await;
    let replicas = cluster.start(3, &[]).await;
    let job = replicas[0].submit("events-live", Value::Null).await;
    let runner = running_on(&replicas, &job).await;
    let other = &replicas[(runner + 2) % 3];
    let mut stream = other.events(&job, None).await;
    // The agent's event arrives while the job still runs (it waits for the release).
    loop {
        let event = stream.next().await.expect("an event before the end");
        if event.event == "agent" {
            break;
        }
        assert_ne!(event.event, "end", "{}", event.data);
    }
    assert_eq!(other.record(&job).await["status"], "running");
    cluster.release();
    let rest = stream.rest().await;
    let end = rest.last().expect("the end arrives");
    assert_eq!(end.event, "end", "{}", end.data);
    let record: Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(record["status"], "completed", "{record}");
}

#[tokio::test]
async fn a_replica_killed_while_it_runs_jobs_is_noticed_by_its_lease_and_its_jobs_settled() {
    let mut cluster = Cluster::new().await;
    let extra = [
        ("REPLICA_LEASE_SECONDS", "2".to_owned()),
        ("MAX_CONCURRENCY", "2".to_owned()),
    ];
    // The victim starts alone, so the two jobs run on it.
    let victim_settings = cluster.settings(0, &extra);
    let victim = Binary::start(&victim_settings).await;
    let once = victim.submit("once-a", Value::Null).await;
    let twice = victim.submit("once-b", json!({"max_attempts": 2})).await;
    for job in [&once, &twice] {
        let record = victim
            .wait_job(job, limit(30), |r| r["status"] == "running")
            .await;
        assert_eq!(record["replica"], "r0", "{record}");
    }
    let others: Vec<Binary> = futures_util::future::join_all(
        [1, 2]
            .map(|n| cluster.settings(n, &extra))
            .iter()
            .map(|s| Binary::start(s)),
    )
    .await;

    let killed = Instant::now();
    victim.kill9().await;
    // Noticed within the lease and a third, plus the poll of whoever settles it.
    let interrupted = others[0].wait_job(&once, limit(30), is_terminal).await;
    let noticed = killed.elapsed();
    assert_eq!(interrupted["status"], "error", "{interrupted}");
    assert_eq!(interrupted["interrupted"], true, "{interrupted}");
    assert!(
        interrupted["error"].as_str().unwrap().contains("lease"),
        "{interrupted}"
    );
    assert!(
        noticed < Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    // The job that allowed a second start ran again, on a live replica, and completed.
    let again = others[1].wait_end(&twice).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["attempts"], 2, "{again}");
    assert_ne!(again["replica"], "r0", "{again}");
    // New jobs never wait for the dead replica.
    let after = others[0].submit("after the kill", Value::Null).await;
    assert_eq!(others[1].wait_end(&after).await["status"], "completed");
}

#[tokio::test]
async fn the_queue_depth_bounds_the_whole_service_and_health_shows_its_queue() {
    let mut cluster = Cluster::new().await;
    let extra = [
        ("MAX_CONCURRENCY", "1".to_owned()),
        ("MAX_QUEUE_DEPTH", "3".to_owned()),
    ];
    let replicas = cluster.start(2, &extra).await;
    // One running on each replica.
    let mut running = Vec::new();
    for (n, replica) in replicas.iter().enumerate() {
        running.push(replica.submit(&format!("hold-{n}"), Value::Null).await);
    }
    for job in &running {
        replicas[0]
            .wait_job(job, limit(30), |r| r["status"] == "running")
            .await;
    }
    // Three wait in the shared queue, whichever replica took them.
    for n in 0..3 {
        replicas[n % 2]
            .submit(&format!("hold-q{n}"), Value::Null)
            .await;
    }
    for replica in &replicas {
        let (status, body) = replica.execute(json!({"prompt": "one too many"})).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["detail"], "Queue full");
        let health = replica.health().await;
        assert_eq!(health["queued"], 3, "{health}");
        assert_eq!(health["active"], 1, "{health}");
        assert_eq!(health["capacity"], 1, "{health}");
    }
    cluster.release();
    for replica in &replicas {
        replica.wait_job(&running[0], limit(30), is_terminal).await;
    }
}

/// A TCP proxy in front of PostgreSQL that can be cut (every connection dropped, none accepted)
/// and restored on the same port, standing in for the network to the database.
struct Proxy {
    addr: std::net::SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = self.tasks.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let piping = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(piping);
            }
        });
        self.tasks.lock().unwrap().push(accepting);
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn while_the_database_is_unreachable_the_gateway_stays_up_and_loses_nothing() {
    let mut cluster = Cluster::new().await;
    let proxy = Proxy::start().await;
    let mut settings = cluster.settings(0, &[]);
    set(
        &mut settings,
        "DATABASE_URL",
        cluster.db.url_via(&proxy.addr.to_string()),
    );
    let replica = Binary::start(&settings).await;
    let job = replica.submit("hold-outage", Value::Null).await;
    replica
        .wait_job(&job, limit(30), |r| r["status"] == "running")
        .await;

    proxy.cut();
    let health = replica.health().await;
    assert_eq!(health["store"], "down", "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    let (status, body) = replica
        .execute(json!({"prompt": "during the outage"}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("PostgreSQL"),
        "{body}"
    );
    // The running job finishes meanwhile.
    cluster.release();
    eventually("the agent ends", limit(30), || async {
        processes_under(cluster.dirs[0].path())
            .is_empty()
            .then_some(())
    })
    .await;

    proxy.restore().await;
    let record = replica.wait_end(&job).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "done", "{record}");
    assert_eq!(replica.health().await["store"], "ok");
    let after = replica.submit("after the outage", Value::Null).await;
    assert_eq!(replica.wait_end(&after).await["status"], "completed");
}

#[tokio::test]
async fn a_replica_shut_down_hands_its_unfinished_job_to_another_at_once() {
    let mut cluster = Cluster::new().await;
    let extra = [
        ("MAX_CONCURRENCY", "1".to_owned()),
        ("SHUTDOWN_GRACE_SECONDS", "1".to_owned()),
        // Long, so only the handover (not a lease running out) can move the job.
        ("REPLICA_LEASE_SECONDS", "300".to_owned()),
    ];
    let leaving_settings = cluster.settings(0, &extra);
    let leaving = Binary::start(&leaving_settings).await;
    let job = leaving
        .submit("once-handover", json!({"max_attempts": 2}))
        .await;
    leaving
        .wait_job(&job, limit(30), |r| r["status"] == "running")
        .await;
    let staying = Binary::start(&cluster.settings(1, &extra)).await;

    // The grace period ends with the job still running: it goes back to the shared queue, and
    // the replica still up runs it again.
    assert_eq!(leaving.sigterm(limit(30)).await, Some(0));
    let record = staying
        .wait_job(&job, limit(30), |r| {
            r["status"] != "queued" && r["attempts"] == 2
        })
        .await;
    assert_eq!(record["replica"], "r1", "{record}");
    let record = staying.wait_end(&job).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["attempts"], 2, "{record}");
    let events = staying.events(&job, None).await.rest().await;
    assert!(
        events.iter().any(|e| e.data.contains("\"requeued\":true")),
        "{:?}",
        events.iter().map(|e| &e.data).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_chat_takes_its_replicas_slot_and_jobs_go_to_a_replica_with_room() {
    let mut cluster = Cluster::new().await;
    let replicas = cluster
        .start(2, &[("MAX_CONCURRENCY", "1".to_owned())])
        .await;
    let chat = {
        let (http, url) = (replicas[0].http.clone(), replicas[0].url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(TOKEN)
                .json(&json!({"model": "haiku", "messages": [{"role": "user", "content": "hold-chat"}]}))
                .send()
                .await
                .expect("request sent")
                .status()
        })
    };
    eventually("the chat holds r0's slot", limit(30), || async {
        (replicas[0].health().await["active"] == 1).then_some(())
    })
    .await;
    // Submitted on the busy replica, run by the idle one, while the chat still runs.
    let job = replicas[0].submit("quick-beside-chat", Value::Null).await;
    let record = replicas[0].wait_end(&job).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["replica"], "r1", "{record}");
    assert!(!chat.is_finished());
    cluster.release();
    assert_eq!(chat.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn a_newcomer_is_started_at_the_next_two_slot_releases_across_two_replicas() {
    let mut cluster = Cluster::new().await;
    let keys = cluster.state.path().join("tokens");
    std::fs::write(&keys, "alice:alice-secret\nbob:bob-secret\n").unwrap();
    let extra = [
        ("MAX_CONCURRENCY", "1".to_owned()),
        ("MAX_QUEUE_DEPTH", "100".to_owned()),
        ("API_BEARER_TOKENS_FILE", keys.display().to_string()),
    ];
    let replicas = cluster.start(2, &extra).await;
    let http = reqwest::Client::new();
    let submit = |n: usize, token: &'static str, prompt: String| {
        let request = http
            .post(format!("{}/execute", replicas[n % 2].url))
            .bearer_auth(token)
            .json(&json!({"prompt": prompt, "agent": AGENT, "timeout_seconds": 60}));
        async move {
            let response = request.send().await.expect("answered");
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        }
    };
    // Alice's twenty, from both replicas; her first two take the service's two slots and hold.
    for i in 0..20 {
        submit(i, "alice-secret", format!("alice{i} hold")).await;
    }
    eventually("two of alice's run", limit(30), || async {
        cluster.runs().len() == 2
    })
    .await;
    // Bob's two hold at a second gate: once they run, both slots are theirs and nothing else
    // can start, so the two starts after alice's are exactly the claims of the next two slot
    // releases, whichever replica made them and in whatever order their agents logged.
    for i in 0..2 {
        submit(i, "bob-secret", format!("bob{i} second-gate")).await;
    }
    cluster.release();
    eventually("two more runs start", limit(60), || async {
        cluster.runs().len() == 4
    })
    .await;
    let runs = cluster.runs();
    let mut next_two: Vec<_> = runs[2..4].to_vec();
    next_two.sort();
    assert_eq!(
        next_two,
        ["bob0 second-gate", "bob1 second-gate"],
        "{runs:?}"
    );
    std::fs::write(cluster.state.path().join("release-second"), "").unwrap();
    eventually("every job starts", limit(60), || async {
        cluster.runs().len() == 22
    })
    .await;
    // Every one of alice's ran too. (Her order is claimed FIFO, but two replicas log their starts
    // concurrently, so the log cannot show it; the store's own tests do.)
    let runs = cluster.runs();
    let alice = runs.iter().filter(|r| r.starts_with("alice")).count();
    assert_eq!(alice, 20, "{runs:?}");
}

// Fair share across replicas, with the real gateway in this process in front of the real CLI
// (each replica with a mock API of its own), on one database.

const ALICE: &str = "alice-secret";
const BOB: &str = "bob-secret";

/// Two replicas, `r0` and `r1`, on a database of their own, each running `concurrency` runs at
/// once, with the keys alice and bob under `policy`; answers the database and the directory of
/// the key files too, to keep while the replicas run.
async fn fair_pair(
    concurrency: usize,
    policy: &str,
) -> (TestDb, tempfile::TempDir, common::Gateway, common::Gateway) {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("alice:{ALICE}\nbob:{BOB}\n")).unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy).unwrap();
    let replica = |name: &'static str| {
        common::Gateway::builder()
            .arg("max-concurrency", concurrency)
            .arg("max-queue-depth", 100)
            .arg("api-bearer-tokens-file", tokens.display())
            .arg("api-key-policy-file", policy_file.display())
            .arg("database-url", db.url())
            .arg("replica-id", name)
            .start()
    };
    let (r0, r1) = tokio::join!(replica("r0"), replica("r1"));
    (db, dir, r0, r1)
}

/// A job of `token` named `name` (in its prompt) whose agent call takes `delay_ms` at the mock.
struct FairJob {
    name: String,
    id: String,
    token: &'static str,
}

/// Submits `name` for `token` on `gw`.
async fn submit_named(
    gw: &common::Gateway,
    token: &'static str,
    name: String,
    delay_ms: u64,
) -> FairJob {
    let id = common::submit_as(gw, token, &format!("[[mock:delay {delay_ms}]] {name}"), 120).await;
    FairJob { name, id, token }
}

/// Submits `n` slow jobs as `token`, named `{name}0`, `{name}1`, …, to the two replicas in turn.
async fn submit_in_turn(
    replicas: [&common::Gateway; 2],
    (token, name): (&'static str, &str),
    n: usize,
    delay_ms: u64,
) -> Vec<FairJob> {
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        jobs.push(submit_named(replicas[i % 2], token, format!("{name}{i}"), delay_ms).await);
    }
    jobs
}

/// Waits until every job has ended, completed; answers each with its start and end, by start.
async fn ran(gw: &common::Gateway, jobs: &[FairJob]) -> Vec<(String, String, String)> {
    let mut runs = Vec::new();
    for job in jobs {
        let record = eventually(format!("{} ends", job.name), limit(120), || async {
            let (_, record) = common::get_job_as(gw, job.token, &job.id).await;
            common::is_terminal(&record).then_some(record)
        })
        .await;
        assert_eq!(record["status"], "completed", "{record}");
        let at = |field: &str| record[field].as_str().expect(field).to_owned();
        runs.push((at("started_at"), at("finished_at"), job.name.clone()));
    }
    runs.sort();
    runs
}

#[tokio::test]
async fn weights_three_to_one_hold_across_two_replicas() {
    let policy = "[keys.alice]\nweight = 3\n[keys.bob]\nweight = 1\n";
    let (_db, _dir, r0, r1) = fair_pair(1, policy).await;
    let replicas = [&r0, &r1];
    // Submitted on both replicas; the service has two slots, one on each.
    let mut jobs = submit_in_turn(replicas, (ALICE, "alice"), 12, 600).await;
    jobs.extend(submit_in_turn(replicas, (BOB, "bob"), 4, 600).await);
    let order: Vec<String> = ran(&r0, &jobs)
        .await
        .into_iter()
        .map(|(_, _, n)| n)
        .collect();
    common::assert_three_to_one(&order);
    // Both replicas ran jobs.
    let mut by_replica = HashMap::new();
    for job in &jobs {
        let (_, record) = common::get_job_as(&r1, job.token, &job.id).await;
        *by_replica.entry(record["replica"].to_string()).or_insert(0) += 1;
    }
    assert_eq!(by_replica.len(), 2, "{by_replica:?}");
}

#[tokio::test]
async fn two_replicas_never_run_more_than_max_concurrent_of_one_key() {
    let policy = "[keys.alice]\nmax_concurrent = 1\nmax_queued = 10\n";
    let (_db, _dir, r0, r1) = fair_pair(2, policy).await;
    let replicas = [&r0, &r1];
    let alice = submit_in_turn(replicas, (ALICE, "alice"), 6, 400).await;
    let bob = submit_in_turn(replicas, (BOB, "bob"), 2, 400).await;
    // While alice's jobs run one at a time, both replicas say so from the shared store.
    let (quota, remaining) = eventually(
        "alice has jobs queued and one running",
        limit(60),
        || async {
            let response = r1
                .request_as(Some(ALICE), reqwest::Method::GET, "/v1/quota")
                .send()
                .await
                .unwrap();
            let remaining = response.headers()["x-ratelimit-remaining-requests"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap();
            let q: Value = response.json().await.unwrap();
            (q["running"] == 1 && q["queued"].as_u64().is_some_and(|n| n >= 2))
                .then_some((q, remaining))
        },
    )
    .await;
    // Counted across replicas: her six are spread over both and the shared queue.
    let queued = quota["queued"].as_u64().unwrap();
    assert!(queued <= 5, "{quota}");
    assert_eq!(remaining, 10 - queued, "{quota}");
    let alice_runs = ran(&r0, &alice).await;
    // Each of alice's started after the one before had finished: never two at once, on any
    // replica.
    for pair in alice_runs.windows(2) {
        let (before, next) = (&pair[0], &pair[1]);
        assert!(
            next.0 > before.1,
            "{} started at {} before {} finished at {}",
            next.2,
            next.0,
            before.2,
            before.1
        );
    }
    // Her limit held nobody else back: bob's both ran while she still had jobs waiting.
    let bob_runs = ran(&r1, &bob).await;
    let alice_last_start = &alice_runs.last().unwrap().0;
    for (started, _, name) in &bob_runs {
        assert!(
            started < alice_last_start,
            "{name} started at {started}, after alice's last"
        );
    }
}

#[tokio::test]
async fn a_rate_limit_seen_by_one_replica_pauses_every_replica_until_it_ends() {
    let (_db, _dir, r0, r1) = fair_pair(1, "").await;
    let replicas = [&r0, &r1];
    // The account refuses requests for the next 3 seconds; the CLI reports the 429 without a
    // reset time, so the replica that runs this backs off (5 s), past the refusal.
    let until = chrono::Utc::now().timestamp() + 3;
    let refused = common::submit_as(
        &r0,
        ALICE,
        &format!("[[mock:ratelimit {until}]] [[mock:text refused first]]"),
        120,
    )
    .await;
    let pauses = eventually("both replicas show the pause", limit(60), || async {
        let (h0, h1) = tokio::join!(r0.health(), r1.health());
        let p0 = h0["dispatch"]["paused_until"].as_str().map(str::to_owned);
        let p1 = h1["dispatch"]["paused_until"].as_str().map(str::to_owned);
        p0.zip(p1)
    })
    .await;
    let paused_until = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let (p0, p1) = (paused_until(&pauses.0), paused_until(&pauses.1));
    assert!((p0 - p1).num_milliseconds().abs() <= 1, "{pauses:?}");
    // Jobs submitted meanwhile, on either replica, stay in the shared queue with the reason.
    let others = submit_in_turn(replicas, (BOB, "after"), 4, 0).await;
    for job in &others {
        let (_, record) = common::get_job_as(replicas[1], BOB, &job.id).await;
        assert!(
            chrono::Utc::now() < p0,
            "the pause lasts 5 s: this is read within it"
        );
        assert_eq!(record["status"], "queued", "{record}");
        let reason = record["queued_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("upstream rate limit"), "{record}");
    }
    // Dispatch resumes by itself everywhere, and nothing failed because of the pause.
    let (_, record) = common::get_job_as(&r0, ALICE, &refused).await;
    let record = if common::is_terminal(&record) {
        record
    } else {
        eventually("the refused job ends", limit(120), || async {
            let (_, record) = common::get_job_as(&r0, ALICE, &refused).await;
            common::is_terminal(&record).then_some(record)
        })
        .await
    };
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "refused first", "{record}");
    let tolerance = chrono::TimeDelta::milliseconds(100);
    for (started, _, name) in ran(&r1, &others).await {
        let started = paused_until(&started);
        assert!(
            started + tolerance >= p0,
            "{name} started at {started}, in the pause until {p0}"
        );
    }
    for gw in replicas {
        assert!(gw.health().await["dispatch"]["paused_until"].is_null());
    }
}
