//! Jobs over HTTP: submitting, polling to the end, cancelling, and reading their event streams.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::wait::{eventually, secs};
use super::{send, status_and_json, Gateway, TOKEN};

/// The agent built into the CLI, usable without a base repository.
pub const AGENT: &str = "general-purpose";

/// `POST /execute` with the harness token; answers the status and the body.
pub async fn execute(gw: &Gateway, body: Value) -> (StatusCode, Value) {
    status_and_json(gw.post("/execute", &body).await).await
}

/// Submits `body`, asserts the 422 a malformed submission gets, and answers its `detail`.
pub async fn refused_as_invalid(gw: &Gateway, body: &Value) -> String {
    let (status, answer) = execute(gw, body.clone()).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{body} -> {answer}"
    );
    answer["detail"].as_str().unwrap_or_default().to_owned()
}

/// Submits `prompt` to the built-in agent as `token` and answers the job id (asserting a 202).
pub async fn submit_as(gw: &Gateway, token: &str, prompt: &str, timeout_seconds: u64) -> String {
    let body =
        serde_json::json!({"prompt": prompt, "agent": AGENT, "timeout_seconds": timeout_seconds});
    let request = gw.request_as(Some(token), Method::POST, "/execute");
    let (status, body) = status_and_json(send(request.json(&body)).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    body["job_id"].as_str().expect("a job id").to_owned()
}

/// Submits `prompt` to the built-in agent and answers the job id (asserting a 202).
pub async fn submit(gw: &Gateway, prompt: &str, timeout_seconds: u64) -> String {
    submit_as(gw, TOKEN, prompt, timeout_seconds).await
}

/// `GET /jobs/{id}` with `token`.
pub async fn get_job_as(gw: &Gateway, token: &str, job_id: &str) -> (StatusCode, Value) {
    let path = format!("/jobs/{job_id}");
    status_and_json(send(gw.request_as(Some(token), Method::GET, &path)).await).await
}

/// `GET /jobs/{id}`, asserting it is found.
pub async fn get_job(gw: &Gateway, job_id: &str) -> Value {
    let (status, body) = get_job_as(gw, TOKEN, job_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `DELETE /jobs/{id}` with `token`.
pub async fn cancel_as(gw: &Gateway, token: &str, job_id: &str) -> (StatusCode, Value) {
    let path = format!("/jobs/{job_id}");
    status_and_json(send(gw.request_as(Some(token), Method::DELETE, &path)).await).await
}

/// Whether a record's status is terminal.
pub fn is_terminal(record: &Value) -> bool {
    matches!(
        record["status"].as_str(),
        Some("completed" | "failed" | "timeout" | "error")
    )
}

/// Polls the job until `done` holds for its record (bounded by `limit`); answers the record.
pub async fn wait_job(
    gw: &Gateway,
    job_id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(format!("job {job_id} gets there"), limit, || async {
        let record = get_job(gw, job_id).await;
        if done(&record) {
            Ok(record)
        } else {
            Err(record)
        }
    })
    .await
}

/// Polls until the job ended; answers its record.
pub async fn wait_end(gw: &Gateway, job_id: &str) -> Value {
    wait_job(gw, job_id, secs(120), is_terminal).await
}

/// Submits `prompt` to the built-in agent and waits until the job ended; answers its record.
pub async fn run_job(gw: &Gateway, prompt: &str, timeout_seconds: u64) -> Value {
    let job_id = submit(gw, prompt, timeout_seconds).await;
    wait_end(gw, &job_id).await
}

/// Asserts that a job record says `status`, with an `error` that mentions `reason`.
pub fn assert_ended(record: &Value, status: &str, reason: &str) {
    assert_eq!(record["status"], status, "{record}");
    let error = record["error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "{record}");
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

/// `GET /jobs/{id}/events` with `token`, not sent yet (to add headers).
pub fn events_request(gw: &Gateway, token: &str, job_id: &str) -> reqwest::RequestBuilder {
    gw.request_as(Some(token), Method::GET, &format!("/jobs/{job_id}/events"))
}

/// Opens `GET /jobs/{id}/events` with `token`.
pub async fn open_events(gw: &Gateway, token: &str, job_id: &str) -> reqwest::Response {
    send(events_request(gw, token, job_id)).await
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
