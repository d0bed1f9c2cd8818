//! Jobs survive restarts: the built binary, the real `claude` CLI against the mock Anthropic API,
//! and the default store (a SQLite file in `JOBS_DIR`). The gateway is killed with SIGKILL (or
//! stopped with SIGTERM) and started again on the same `JOBS_DIR`; what a caller sees then is
//! checked through HTTP only.

mod common;
mod store_support;

use std::time::Duration;

use mock_anthropic::MockAnthropic;
use reqwest::StatusCode;
use serde_json::{json, Value};
use store_support::*;

/// Positions of the first Messages API call of each marker among the mock's requests: the order
/// their runs started in, when they ran one at a time.
fn start_order(mock: &MockAnthropic, markers: &[&str]) -> Vec<String> {
    let requests = mock.message_requests();
    let mut firsts: Vec<(usize, String)> = markers
        .iter()
        .filter_map(|marker| {
            requests
                .iter()
                .position(|r| r.body.to_string().contains(marker))
                .map(|at| (at, (*marker).to_owned()))
        })
        .collect();
    firsts.sort();
    firsts.into_iter().map(|(_, marker)| marker).collect()
}

/// Submits two jobs to `gateway`, `once` allowed a single start (the default) and `twice` two, and
/// waits until both run and their agents have called the API (each found by its prompt's first
/// word); answers their ids.
async fn two_running(
    gateway: &Binary,
    mock: &MockAnthropic,
    once: &str,
    twice: &str,
) -> (String, String) {
    let one = gateway.submit(once, Value::Null).await;
    let two = gateway.submit(twice, json!({"max_attempts": 2})).await;
    for (job, prompt) in [(&one, once), (&two, twice)] {
        gateway
            .wait_job(job, Duration::from_secs(60), |r| r["status"] == "running")
            .await;
        // Its agent is mid-run: the API has its request.
        let marker = prompt.split_whitespace().next().expect("a marker");
        eventually(
            "the agent calls the API",
            Duration::from_secs(60),
            || async { start_order(mock, &[marker]).first().cloned() },
        )
        .await;
    }
    (one, two)
}

#[tokio::test]
async fn a_killed_gateway_starts_again_with_every_acknowledged_job() {
    let backing = Backing::start().await;
    let Backing { mock, jobs_dir, .. } = &backing;
    let first = Binary::start(&backing.settings(&[("MAX_CONCURRENCY", &2)])).await;

    // One finished.
    let finished = first
        .submit("finished-job [[mock:text the first answer]]", Value::Null)
        .await;
    let finished_record = first.wait_end(&finished).await;
    assert_eq!(finished_record["status"], "completed", "{finished_record}");

    // Two running: one allows a single start (the default), one allows two.
    let (once, twice) = two_running(
        &first,
        mock,
        "running-once [[mock:delay 4000]] [[mock:text never seen]]",
        "running-twice [[mock:delay 2000]] [[mock:text the second try]]",
    )
    .await;

    // Three queued behind them.
    let queued: Vec<String> = {
        let mut ids = Vec::new();
        for n in 1..=3 {
            ids.push(
                first
                    .submit(&format!("queued-{n} [[mock:text answer {n}]]"), Value::Null)
                    .await,
            );
        }
        ids
    };
    for job in &queued {
        assert_eq!(first.record(job).await["status"], "queued");
    }

    // A live subscriber of the running job, caught up to its `running` status.
    let mut live = first.events(&once, None).await;
    let mut seen = Vec::new();
    while let Some(event) = live.next().await {
        let running = event.event == "status" && event.json()["status"] == "running";
        seen.push(event);
        if running {
            break;
        }
    }
    let last_seen = seen.last().and_then(id).expect("events carry ids");
    assert_eq!(seen[0].json()["status"], "queued");

    first.kill9().await;
    // The subscriber's stream breaks with the process, without an end.
    let after_kill = live.rest().await;
    assert!(
        after_kill.iter().all(|e| e.event != "end"),
        "{after_kill:?}"
    );

    // Started again on the same JOBS_DIR, now one run at a time so the start order shows.
    let second = Binary::start(&backing.settings(&[("MAX_CONCURRENCY", &1)])).await;

    // Every job answered 202 still answers.
    for job in [&finished, &once, &twice].into_iter().chain(queued.iter()) {
        let (status, body) = second.get(job).await;
        assert_eq!(status, StatusCode::OK, "{job}: {body}");
    }
    // The finished one, as it was.
    assert_eq!(second.record(&finished).await, finished_record);

    // The running one that allowed one start: interrupted, saying why.
    let interrupted = second.record(&once).await;
    assert_eq!(interrupted["status"], "error", "{interrupted}");
    assert_eq!(interrupted["interrupted"], true, "{interrupted}");
    assert!(
        interrupted["error"]
            .as_str()
            .unwrap()
            .contains("the gateway stopped while the job was running"),
        "{interrupted}"
    );
    assert_eq!(interrupted["attempts"], 1);

    // The subscriber resumes with Last-Event-ID across the restart: the rest of the story, ids
    // going on from where it was, ending with the interrupted record.
    let resumed = second.events(&once, Some(last_seen)).await.rest().await;
    let names: Vec<&str> = resumed.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    assert_eq!(id(&resumed[0]), Some(last_seen + 1), "{resumed:?}");
    let ids: Vec<u64> = resumed.iter().filter_map(id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let status = resumed
        .iter()
        .rev()
        .find(|e| e.event == "status")
        .expect("a last status")
        .json();
    assert_eq!(status["status"], "error");
    let end = resumed.last().unwrap().json();
    assert_eq!(end["interrupted"], true, "{end}");
    // A fresh subscriber replays everything, the first process's events included.
    let replay = second.events(&once, None).await.rest().await;
    assert_eq!(replay.len() as u64, last_seen + 1 + resumed.len() as u64);

    // The one that allowed two starts ran again, first, with the attempt counted; then the
    // queued ones, in their original order.
    let again = second.wait_end(&twice).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["result"], "the second try");
    assert_eq!(again["attempts"], 2);
    for (n, job) in queued.iter().enumerate() {
        let record = second.wait_end(job).await;
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["result"], format!("answer {}", n + 1));
    }
    let restarted_order = {
        // The first process started `running-twice` once already; count from the restart on.
        let markers = ["queued-1", "queued-2", "queued-3"];
        start_order(mock, &markers)
    };
    assert_eq!(restarted_order, ["queued-1", "queued-2", "queued-3"]);
    let started = |record: &Value| record["started_at"].as_str().unwrap().to_owned();
    let mut previous = started(&again);
    for job in &queued {
        let record = second.record(job).await;
        assert!(started(&record) > previous, "{record}");
        previous = started(&record);
    }

    // The killed runs' workspaces are gone, and no process of theirs is left.
    eventually(
        "the workspaces are removed",
        Duration::from_secs(20),
        || async { leftovers(jobs_dir.path()).is_empty().then_some(()) },
    )
    .await;
    eventually(
        "no agent process is left in JOBS_DIR",
        Duration::from_secs(30),
        || async { processes_under(jobs_dir.path()).is_empty().then_some(()) },
    )
    .await;
    assert_eq!(second.sigterm(Duration::from_secs(30)).await, Some(0));
}

#[tokio::test]
async fn sigterm_stores_what_finishes_in_the_drain_and_leaves_the_queue_for_the_next_start() {
    let backing = Backing::start().await;
    let mock = &backing.mock;
    let settings = backing.settings(&[("MAX_CONCURRENCY", &2), ("SHUTDOWN_GRACE_SECONDS", &3)]);
    let first = Binary::start(&settings).await;

    // Finishes within the grace period; runs past it, allowing another start; waits in the queue.
    let (drains, too_long) = two_running(
        &first,
        mock,
        "drains [[mock:delay 1000]] [[mock:text finished in the drain]]",
        "too-long [[mock:delay 8000]] [[mock:text finished after the restart]]",
    )
    .await;
    let waiting = first
        .submit("waiting [[mock:text ran after the restart]]", Value::Null)
        .await;

    assert_eq!(first.sigterm(Duration::from_secs(30)).await, Some(0));

    let second = Binary::start(&settings).await;
    // Stored before the process exited.
    let drained = second.record(&drains).await;
    assert_eq!(drained["status"], "completed", "{drained}");
    assert_eq!(drained["result"], "finished in the drain");
    // Stopped at the end of the grace period, then queued again and run to the end.
    let again = second.wait_end(&too_long).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["attempts"], 2);
    // Never started before the shutdown, so never failed: it ran after the restart.
    let ran = second.wait_end(&waiting).await;
    assert_eq!(ran["status"], "completed", "{ran}");
    assert_eq!(ran["error"], Value::Null);
    assert_eq!(ran["attempts"], 1);
    assert_eq!(second.sigterm(Duration::from_secs(30)).await, Some(0));
}

#[tokio::test]
async fn a_store_written_by_a_newer_version_is_refused_with_one_clear_line() {
    let jobs_dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let settings = settings(
        &fake_claude("ok.sh"),
        "http://127.0.0.1:9",
        jobs_dir.path(),
        home.path(),
    );
    let first = Binary::start(&settings).await;
    first.submit("kept", Value::Null).await;
    assert_eq!(first.sigterm(Duration::from_secs(30)).await, Some(0));

    // A later gateway added a migration this one does not know.
    let path = jobs_dir.path().join("claude-gateway.db");
    {
        use sqlx::ConnectOptions;
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (20990101000000, 'a later schema', TRUE, x'00', 0)",
        )
        .execute(&mut db)
        .await
        .unwrap();
    }

    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(settings.iter().map(|(n, v)| (n, v)))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("claude-gateway:"))
        .collect();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("newer claude-gateway"), "{stderr}");
    assert!(lines[0].contains("20990101000000"), "{stderr}");
    assert!(lines[0].contains(&path.display().to_string()), "{stderr}");
}
