//! Stopping jobs: `DELETE /jobs/{id}` on queued and running jobs, and what a shutdown does to the
//! jobs it finds.

mod common;

use std::time::Duration;

use claude_gateway::jobs::{NewJob, SubmitError};
use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn cancelling_a_queued_job_frees_its_slot_and_a_running_one_kills_its_processes() {
    let gw = Gateway::fake_with("hang.sh", "max-concurrency", 1).await;
    let running = submit(&gw, "first", 600).await;
    wait_job(&gw, &running, secs(30), |r| r["status"] == "running").await;
    gw.wait_agent_process().await;
    let queued = submit(&gw, "second", 600).await;
    let health = gw.health().await;
    assert_eq!(
        (health["active"].as_u64(), health["queued"].as_u64()),
        (Some(1), Some(1))
    );

    // Queued: stopped at once, never started.
    let (status, record) = cancel_as(&gw, TOKEN, &queued).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_ended(&record, "error", "cancelled");
    assert_eq!(record["started_at"], serde_json::Value::Null);
    assert!(record["finished_at"].is_string());
    assert_eq!(gw.health().await["queued"], 0);

    // Running: its whole process group goes, and its workspace.
    let (status, record) = cancel_as(&gw, TOKEN, &running).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_ended(&record, "error", "cancelled");
    assert!(record["started_at"].is_string());
    gw.wait_no_agent_process().await;
    gw.wait_workspaces_gone().await;
    // Gone with its process and workspace: nothing is counted as running or waiting any more.
    let health = gw.health().await;
    assert_eq!(
        (health["active"].as_u64(), health["queued"].as_u64()),
        (Some(0), Some(0))
    );

    // Both are over now: a second cancel is a conflict, and the record keeps saying why.
    for id in [&queued, &running] {
        let (status, body) = cancel_as(&gw, TOKEN, id).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["detail"], "Job already finished");
        assert_eq!(get_job(&gw, id).await["status"], "error");
    }
}

#[tokio::test]
async fn a_cancelled_real_cli_run_leaves_nothing_behind() {
    let gw = Gateway::start().await;
    // The mock holds its answer for a minute: the CLI is mid-request when it is cancelled.
    let job_id = submit(&gw, "[[mock:delay 60000]] wait", 600).await;
    gw.wait_agent_process().await;
    let (status, record) = cancel_as(&gw, TOKEN, &job_id).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["status"], "error");
    gw.wait_nothing_left().await;
}

#[tokio::test]
async fn shutdown_records_queued_and_unfinished_jobs_as_error_and_kills_what_runs() {
    // The ephemeral store: a durable one keeps queued jobs queued for the next start
    // (tests/jobs_restart.rs).
    let mut gw = Gateway::builder()
        .fake("hang.sh")
        .arg("max-concurrency", 1)
        .arg("shutdown-grace-seconds", 1)
        .arg("database-url", "memory")
        .start()
        .await;
    // A handle on the jobs that outlives the server.
    let jobs = gw.state.jobs.clone();
    let ids = [
        submit(&gw, "runs", 600).await,
        submit(&gw, "waits", 600).await,
    ];
    gw.wait_agent_process().await;

    tokio::time::timeout(Duration::from_secs(30), gw.shutdown())
        .await
        .expect("shutdown ends within the grace period and a bit");

    let running = jobs.get("default", &ids[0]).await.unwrap().unwrap();
    assert_eq!(running.status.as_str(), "error");
    assert_eq!(
        running.error.as_deref(),
        Some("the gateway shut down before the job finished")
    );
    assert!(running.started_at.is_some());
    let queued = jobs.get("default", &ids[1]).await.unwrap().unwrap();
    assert_eq!(queued.status.as_str(), "error");
    assert!(queued
        .error
        .as_deref()
        .unwrap()
        .contains("gateway shut down"));
    assert_eq!(queued.started_at, None);
    assert_eq!(jobs.live_count(), 0);
    gw.wait_no_agent_process().await;
}

#[tokio::test]
async fn after_shutdown_begins_execute_is_refused() {
    let (app, _backing) = Gateway::builder().fake("hang.sh").build().await;
    let jobs = app.state().jobs.clone();
    app.begin_shutdown();
    let refused = jobs
        .submit(NewJob::new("default", "p", AGENT, 1.0, 60), None)
        .await;
    assert!(matches!(refused, Err(SubmitError::ShuttingDown)));
}
