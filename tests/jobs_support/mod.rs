//! Helpers shared by the `jobs_*` tests: submitting, polling to the end, reading SSE, and looking
//! for processes a run left behind.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{json, processes_under, wait_until, Gateway, TOKEN};

/// The agent built into the CLI, usable without a base repository.
pub const AGENT: &str = "general-purpose";

/// `POST /execute` with the harness token; answers the status and the body.
pub async fn execute(gw: &Gateway, body: Value) -> (StatusCode, Value) {
    let response = gw.post("/execute", &body).await;
    let status = response.status();
    (status, json(response).await)
}

/// Submits `prompt` to the built-in agent and answers the job id (asserting a 202).
pub async fn submit(gw: &Gateway, prompt: &str, timeout_seconds: u64) -> String {
    let (status, body) = execute(
        gw,
        serde_json::json!({"prompt": prompt, "agent": AGENT, "timeout_seconds": timeout_seconds}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    body["job_id"].as_str().expect("a job id").to_owned()
}

/// `GET /jobs/{id}` with `token`.
pub async fn get_job_as(gw: &Gateway, token: &str, job_id: &str) -> (StatusCode, Value) {
    let response = gw
        .http
        .get(format!("{}/jobs/{job_id}", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, json(response).await)
}

/// `GET /jobs/{id}`, asserting it is found.
pub async fn get_job(gw: &Gateway, job_id: &str) -> Value {
    let (status, body) = get_job_as(gw, TOKEN, job_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `DELETE /jobs/{id}` with `token`.
pub async fn cancel_as(gw: &Gateway, token: &str, job_id: &str) -> (StatusCode, Value) {
    let response = gw
        .http
        .delete(format!("{}/jobs/{job_id}", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, json(response).await)
}

/// Whether a record's status is terminal.
pub fn is_terminal(record: &Value) -> bool {
    matches!(
        record["status"].as_str(),
        Some("completed" | "failed" | "timeout" | "error")
    )
}

/// Polls the job every 50 ms until `done` holds for its record (bounded by `limit`).
pub async fn wait_job(
    gw: &Gateway,
    job_id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let record = get_job(gw, job_id).await;
        if done(&record) {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} did not get there in {limit:?}: {record}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the job ended; answers its record.
pub async fn wait_end(gw: &Gateway, job_id: &str) -> Value {
    wait_job(gw, job_id, Duration::from_secs(120), is_terminal).await
}

/// Waits (bounded) until no process runs under `dir`.
pub async fn wait_no_process_in(dir: &Path) {
    if wait_until(Duration::from_secs(15), || processes_under(dir).is_empty())
        .await
        .is_err()
    {
        panic!("processes left running: {:?}", processes_under(dir));
    }
}

/// Waits (bounded) until some process runs under `dir`.
pub async fn wait_process_in(dir: &Path) {
    wait_until(Duration::from_secs(30), || !processes_under(dir).is_empty())
        .await
        .expect("the agent never started");
}

/// Writes an executable stand-in CLI into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    /// `event:`.
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `id:`.
    pub id: Option<String>,
}

impl Sse {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.data))
    }
}

/// Opens `GET /jobs/{id}/events` with `token`.
pub async fn open_events(gw: &Gateway, token: &str, job_id: &str) -> reqwest::Response {
    gw.http
        .get(format!("{}/jobs/{job_id}/events", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent")
}

/// Reads an event stream until the server closes it (bounded).
pub async fn read_events(response: reqwest::Response) -> Vec<Sse> {
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream readable")));
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the event stream ended");
    parse_events(&buffer)
}

fn parse_events(text: &str) -> Vec<Sse> {
    text.split("\n\n").filter_map(parse_event).collect()
}

/// One event of an event stream's text (a block between blank lines); `None` for a comment-only
/// block, a keep-alive.
pub fn parse_event(block: &str) -> Option<Sse> {
    let mut event = String::new();
    let mut data = Vec::new();
    let mut id = None;
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim_start().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim_start().to_owned());
        }
    }
    (!event.is_empty() || !data.is_empty()).then(|| Sse {
        event,
        data: data.join("\n"),
        id,
    })
}
