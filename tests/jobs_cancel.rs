//! Stopping jobs: `DELETE /jobs/{id}` on queued and running jobs, and what a shutdown does to the
//! jobs it finds.

mod common;
mod jobs_support;

use std::time::Duration;

use clap::Parser;
use claude_gateway::app::App;
use claude_gateway::config::{Config, Settings};
use common::{agent_env, fake_claude, json, Gateway, TOKEN};
use jobs_support::*;
use reqwest::StatusCode;

#[tokio::test]
async fn cancelling_a_queued_job_frees_its_slot_and_a_running_one_kills_its_processes() {
    let gw = Gateway::builder()
        .claude(fake_claude("hang.sh"))
        .arg("max-concurrency", 1)
        .start()
        .await;
    let running = submit(&gw, "first", 600).await;
    wait_job(&gw, &running, Duration::from_secs(30), |r| {
        r["status"] == "running"
    })
    .await;
    wait_process_in(gw.jobs_dir.path()).await;
    let queued = submit(&gw, "second", 600).await;
    let health = json(
        gw.http
            .get(format!("{}/health", gw.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (health["active"].as_u64(), health["queued"].as_u64()),
        (Some(1), Some(1))
    );

    // Queued: stopped at once, never started.
    let (status, record) = cancel_as(&gw, TOKEN, &queued).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["status"], "error");
    assert!(
        record["error"].as_str().unwrap().contains("cancelled"),
        "{record}"
    );
    assert_eq!(record["started_at"], serde_json::Value::Null);
    assert!(record["finished_at"].is_string());
    let health = json(
        gw.http
            .get(format!("{}/health", gw.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(health["queued"], 0);

    // Running: its whole process group goes, and its workspace.
    let (status, record) = cancel_as(&gw, TOKEN, &running).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["status"], "error");
    assert!(record["error"].as_str().unwrap().contains("cancelled"));
    assert!(record["started_at"].is_string());
    wait_no_process_in(gw.jobs_dir.path()).await;
    gw.wait_workspaces_gone().await;
    let health = json(
        gw.http
            .get(format!("{}/health", gw.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
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
    wait_process_in(gw.jobs_dir.path()).await;
    let (status, record) = cancel_as(&gw, TOKEN, &job_id).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["status"], "error");
    wait_no_process_in(gw.jobs_dir.path()).await;
    gw.wait_workspaces_gone().await;
}

/// A config like the harness's, for a test that drives `serve` itself to keep a handle on the jobs
/// after the server is gone.
fn config(jobs_dir: &std::path::Path, home: &std::path::Path, extra: &[&str]) -> Config {
    let jobs_dir = jobs_dir.display().to_string();
    let claude = fake_claude("hang.sh").display().to_string();
    let mut argv = vec![
        "claude-gateway",
        "--api-bearer-token",
        TOKEN,
        "--jobs-dir",
        &jobs_dir,
        "--claude-bin",
        &claude,
        "--workspace-dir",
        "/nonexistent/claude-gateway-base",
        "--git-crypt-key",
        "/nonexistent/git-crypt-key",
    ];
    argv.extend_from_slice(extra);
    let mut config = Settings::try_parse_from(argv).unwrap().validate().unwrap();
    config.agent_env_overrides = agent_env("http://127.0.0.1:9", home);
    config
}

#[tokio::test]
async fn shutdown_records_queued_and_unfinished_jobs_as_error_and_kills_what_runs() {
    let jobs_dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let config = config(
        jobs_dir.path(),
        home.path(),
        // The ephemeral store: a durable one keeps queued jobs queued for the next start
        // (tests/jobs_restart.rs).
        &[
            "--max-concurrency",
            "1",
            "--shutdown-grace-seconds",
            "1",
            "--database-url",
            "memory",
        ],
    );
    let app = App::build(config).await.unwrap();
    let jobs = app.state().jobs.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(claude_gateway::serve(app, listener, async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for prompt in ["runs", "waits"] {
        let response = http
            .post(format!("{url}/execute"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"prompt": prompt, "agent": AGENT}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        ids.push(json(response).await["job_id"].as_str().unwrap().to_owned());
    }
    wait_process_in(jobs_dir.path()).await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("shutdown ends within the grace period and a bit")
        .unwrap();

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
    wait_no_process_in(jobs_dir.path()).await;
}

#[tokio::test]
async fn after_shutdown_begins_execute_is_refused() {
    let jobs_dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let app = App::build(config(jobs_dir.path(), home.path(), &[]))
        .await
        .unwrap();
    let jobs = app.state().jobs.clone();
    app.begin_shutdown();
    let refused = jobs
        .submit(
            claude_gateway::jobs::NewJob {
                owner: "default".into(),
                prompt: "p".into(),
                agent: AGENT.into(),
                max_budget_usd: 1.0,
                timeout_seconds: 60,
                metadata: None,
                max_attempts: 1,
            },
            None,
        )
        .await;
    assert!(matches!(
        refused,
        Err(claude_gateway::jobs::SubmitError::ShuttingDown)
    ));
}
