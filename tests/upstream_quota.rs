//! The account behind the CLI is rate-limited: the real CLI against the mock API answering as a
//! rate-limited account (`[[mock:ratelimit UNTIL]]`: 429 `rate_limit_error` with the unified
//! rate-limit headers until UNTIL), real HTTP. The CLI logs in with an API key, and reports the
//! refusal as a failed result; or with a `claude-gateway` token, and reports a `rate_limit_event`
//! with the reset time too.

mod common;

use chrono::{DateTime, Utc};
use common::{
    answer, eventually, get_job, json, open_events, read_events, secs, send, submit, wait_end,
    Gateway, TOKEN,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Submits a job the account refuses until `until` (Unix seconds) and two behind it, and waits
/// until `/health` shows dispatch paused; answers the refused job's id, the other two's, and
/// `/health` then.
async fn paused_by_a_refusal(gw: &Gateway, until: i64) -> (String, [String; 2], Value) {
    let refused = submit(
        gw,
        &format!("[[mock:ratelimit {until}]] [[mock:text refused first]]"),
        120,
    )
    .await;
    let others = [
        submit(gw, "[[mock:text second]]", 120).await,
        submit(gw, "[[mock:text third]]", 120).await,
    ];
    let health = eventually("/health shows dispatch paused", secs(60), || async {
        let health = gw.health().await;
        (!health["dispatch"]["paused_until"].is_null()).then_some(health)
    })
    .await;
    (refused, others, health)
}

#[tokio::test]
async fn a_rate_limited_account_pauses_dispatch_and_no_job_fails_because_of_it() {
    let gw = Gateway::builder().arg("max-concurrency", 1).start().await;
    // The account refuses requests for the next 3 seconds; the CLI reports the 429 without a
    // reset time, so the gateway backs off (5 s first), past the refusal.
    let until = Utc::now().timestamp() + 3;
    let (refused, others, health) = paused_by_a_refusal(&gw, until).await;
    let paused_until = time(&health["dispatch"]["paused_until"]);
    assert!(paused_until > Utc::now(), "{health}");
    for id in &others {
        let record = get_job(&gw, id).await;
        assert_eq!(record["status"], "queued", "{record}");
        let reason = record["queued_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("upstream rate limit"), "{record}");
    }
    let quota: Value = gw.get("/v1/quota").await.json().await.unwrap();
    assert!(!quota["dispatch_paused_until"].is_null(), "{quota}");

    // Dispatch resumes by itself at the end of the pause, and nothing failed because of it.
    let mut records = vec![wait_end(&gw, &refused).await];
    for id in &others {
        records.push(wait_end(&gw, id).await);
    }
    for record in &records {
        assert_eq!(record["status"], "completed", "{record}");
        assert!(record.get("queued_reason").is_none(), "{record}");
    }
    let tolerance = chrono::TimeDelta::milliseconds(100);
    for record in &records[1..] {
        let started = time(&record["started_at"]);
        assert!(
            started + tolerance >= paused_until,
            "started {started} before the pause ended at {paused_until}"
        );
    }
    assert_eq!(records[0]["result"], "refused first");
    assert!(gw.health().await["dispatch"]["paused_until"].is_null());

    // The refused job was put back in the queue once, and its events say why.
    let events = read_events(open_events(&gw, TOKEN, &refused).await).await;
    let requeued = events
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| e.json())
        .find(|data| data["status"] == "queued" && data.get("reason").is_some())
        .expect("a status event putting the job back in the queue");
    assert!(
        requeued["reason"]
            .as_str()
            .unwrap()
            .contains("upstream rate limit"),
        "{requeued}"
    );
}

/// How many requests the mock API received for the prompt holding `marker`: one per try.
fn tries(gw: &Gateway, marker: &str) -> usize {
    gw.mock
        .message_requests()
        .iter()
        .filter(|request| request.prompt_text().contains(marker))
        .count()
}

/// The run marked `marker` was refused once by the account's rate limit, then answered: its
/// agent called the API twice, and `entry` counts one run, completed.
async fn assert_refused_once_then_answered(gw: &Gateway, marker: &str, entry: &str) {
    assert_eq!(tries(gw, marker), 2, "refused once, then answered");
    assert_one_run_completed(gw, entry).await;
}

/// A chat run refused by the account's rate limit took one slot twice and ended once, completed.
async fn assert_one_run_completed(gw: &Gateway, entry: &str) {
    let series = |outcome: &str| {
        format!(r#"claude_gateway_runs_total{{entry="{entry}",outcome="{outcome}"}}"#)
    };
    assert_eq!(gw.metric(&series("completed")).await, 1.0);
    assert_eq!(gw.metric(&series("failed")).await, 0.0);
    assert_eq!(gw.metric(&series("error")).await, 0.0);
    assert!(gw.health().await["dispatch"]["paused_until"].is_null());
}

#[tokio::test]
async fn a_chat_refused_by_the_rate_limit_waits_for_the_pause_and_answers() {
    let gw = Gateway::builder().arg("max-concurrency", 1).start().await;
    // Refused for the next 5 seconds (however long the CLI takes to start, its first request is
    // refused); the CLI gives no reset time, so the pause is the 5 s back-off from the refusal,
    // which ends after the refusals do.
    let until = Utc::now().timestamp() + 5;
    let asked = std::time::Instant::now();
    let body = gw
        .chat_json(
            &format!("[[mock:ratelimit {until}]] [[mock:text answered after the pause]] chat-once"),
            StatusCode::OK,
        )
        .await;
    assert_eq!(answer(&body), "answered after the pause", "{body}");
    assert_eq!(tries(&gw, "chat-once"), 2, "refused once, then answered");
    assert!(
        asked.elapsed() >= std::time::Duration::from_secs(4),
        "the second try waited for the pause"
    );
    assert_one_run_completed(&gw, "chat").await;
}

#[tokio::test]
async fn a_streamed_chat_refused_before_any_text_is_tried_again_in_the_same_stream() {
    let gw = Gateway::builder().arg("max-concurrency", 1).start().await;
    let until = Utc::now().timestamp() + 5;
    let body = json!({
        "model": "haiku",
        "stream": true,
        "messages": [{"role": "user", "content": format!(
            "[[mock:ratelimit {until}]] [[mock:text streamed after the pause]] stream-once"
        )}],
    });
    let response = send(gw.request(Method::POST, "/v1/chat/completions").json(&body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let chunks = common::chat_chunks(response).await;
    assert!(
        chunks.iter().all(|chunk| chunk.get("error").is_none()),
        "{chunks:?}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "streamed after the pause");
    assert_refused_once_then_answered(&gw, "stream-once", "chat").await;
}

#[tokio::test]
async fn a_messages_call_refused_by_the_rate_limit_is_answered_after_the_pause() {
    let gw = Gateway::builder().arg("max-concurrency", 1).start().await;
    let until = Utc::now().timestamp() + 5;
    let body = json!({"model": "haiku", "max_tokens": 1024, "messages": [{"role": "user", "content": format!(
        "[[mock:ratelimit {until}]] [[mock:text a message after the pause]] messages-once"
    )}]});
    let response = send(gw.request(Method::POST, "/v1/messages").json(&body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(
        body["content"][0]["text"], "a message after the pause",
        "{body}"
    );
    assert_refused_once_then_answered(&gw, "messages-once", "messages").await;
}

#[tokio::test]
async fn a_response_refused_by_the_rate_limit_is_answered_after_the_pause() {
    let gw = Gateway::builder().arg("max-concurrency", 1).start().await;
    let until = Utc::now().timestamp() + 5;
    let body = json!({"model": "haiku", "input": format!(
        "[[mock:ratelimit {until}]] [[mock:text a response after the pause]] responses-once"
    )});
    let response = send(gw.request(Method::POST, "/v1/responses").json(&body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(body["status"], "completed", "{body}");
    let text: String = body["output"]
        .as_array()
        .expect("output items")
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "a response after the pause", "{body}");
    assert_refused_once_then_answered(&gw, "responses-once", "chat").await;
}

#[tokio::test]
async fn a_chat_whose_deadline_ends_before_the_pause_gets_the_refusal() {
    // A chat deadline of 3 s is shorter than the 5 s back-off: waiting could only fail later.
    let gw = Gateway::builder()
        .arg("max-concurrency", 1)
        .arg("openai-compat-timeout-seconds", 3)
        .start()
        .await;
    let until = Utc::now().timestamp() + 60;
    // As before a run was ever tried again: the run failed, the error says why.
    let body = gw
        .chat_json(
            &format!("[[mock:ratelimit {until}]] [[mock:text never]] refused-once"),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    assert_eq!(body["error"]["code"], "agent_failed", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("429"),
        "{body}"
    );
    assert_eq!(tries(&gw, "refused-once"), 1);
}

/// A bearer token the pinned CLI takes as issued for a Claude gateway: a JWT whose `aud` is
/// `claude-gateway` (the CLI reads its claims without checking a signature). With it, and a base
/// URL that is not Anthropic's, the CLI reads the API's `anthropic-ratelimit-unified-*` headers
/// and reports a refused request as a stream-json `rate_limit_event` with `status: rejected` and
/// its `resetsAt`; with a plain API key (the other tests) it reports only the 429.
fn gateway_audience_token() -> String {
    use base64::Engine as _;
    let part = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    format!(
        "{}.{}.unsigned",
        part(r#"{"alg":"none","typ":"JWT"}"#),
        part(r#"{"aud":"claude-gateway","sub":"test"}"#)
    )
}

#[tokio::test]
async fn dispatch_resumes_at_the_reset_time_the_cli_reported() {
    let gw = Gateway::builder()
        .arg("max-concurrency", 1)
        .agent_var("ANTHROPIC_AUTH_TOKEN", gateway_audience_token())
        .start()
        .await;
    // Refused for 8 s: longer than the first back-off (5 s), so resuming at the reported reset is
    // told apart from backing off.
    let until = Utc::now().timestamp() + 8;
    let (refused, others, health) = paused_by_a_refusal(&gw, until).await;
    let paused_until = time(&health["dispatch"]["paused_until"]);
    assert_eq!(
        paused_until.timestamp(),
        until,
        "the pause ends at the reset the CLI reported, not after a back-off: {health}"
    );

    let mut records = vec![wait_end(&gw, &refused).await];
    for id in &others {
        records.push(wait_end(&gw, id).await);
    }
    for record in &records {
        assert_eq!(record["status"], "completed", "{record}");
    }
    let tolerance = chrono::TimeDelta::milliseconds(100);
    for record in &records {
        let started = time(&record["started_at"]);
        assert!(
            started + tolerance >= paused_until,
            "started {started} before the reset at {paused_until}"
        );
    }
    // The CLI's own report of the limit is in the refused job's events.
    let events = read_events(open_events(&gw, TOKEN, &refused).await).await;
    let reported = events
        .iter()
        .filter(|e| e.event == "agent")
        .map(|e| e.json())
        .find(|data| data["type"] == "rate_limit_event")
        .expect("the CLI reported a rate_limit_event");
    assert_eq!(
        reported["rate_limit_info"]["status"], "rejected",
        "{reported}"
    );
    assert_eq!(reported["rate_limit_info"]["resetsAt"], until, "{reported}");
}
