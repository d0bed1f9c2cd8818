//! `stream: true` at the HTTP level: chunk order, `[DONE]`, the usage chunk, errors mid-stream,
//! and a client that goes away.

mod common;

use std::time::Duration;

use common::{send, sse_data, Gateway, CHAT};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A streamed chat completion of one user message, `content`.
async fn stream(gw: &Gateway, content: &str, include_usage: bool) -> reqwest::Response {
    let body = json!({
        "model": "haiku",
        "stream": true,
        "stream_options": {"include_usage": include_usage},
        "messages": [{"role": "user", "content": content}],
    });
    send(gw.request(Method::POST, CHAT).json(&body)).await
}

#[tokio::test]
async fn chunks_come_in_order_and_end_with_usage_and_done() {
    let gw = Gateway::start().await;
    let response = stream(&gw, "[[mock:text one two three four]]", true).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let chunks = common::chat_chunks(response).await;
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let id = &chunks[0]["id"];
    assert!(
        chunks.iter().all(|c| &c["id"] == id),
        "one id for the whole stream"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");

    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let deltas: Vec<&str> = chunks[1..chunks.len() - 2]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert!(deltas.len() > 1, "token-level deltas: {deltas:?}");
    assert_eq!(deltas.concat(), "one two three four");
}

#[tokio::test]
async fn without_include_usage_there_is_no_usage_chunk() {
    let gw = Gateway::start().await;
    let data = sse_data(stream(&gw, "[[mock:text hi there]]", false).await).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(data.iter().all(|d| !d.contains("\"usage\"")), "{data:?}");
}

#[tokio::test]
async fn an_error_after_the_stream_started_arrives_as_an_error_event() {
    let gw = Gateway::start().await;
    let response = stream(&gw, "[[mock:error 500]]", false).await;
    assert_eq!(response.status(), StatusCode::OK, "the stream had started");
    let data = sse_data(response).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "agent_failed", "{error}");
    gw.wait_no_agent_process().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_stops_its_agent() {
    let gw = Gateway::start().await;
    let response = stream(
        &gw,
        "[[mock:delay 30000]] [[mock:text never finished words]]",
        false,
    )
    .await;
    let mut body = response.bytes_stream();
    // Read until the first content delta has arrived: the agent is mid-answer.
    let mut seen = String::new();
    while !seen.contains("never") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("a delta arrives")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !common::processes_under(gw.jobs_dir.path()).is_empty(),
        "the agent is running"
    );
    drop(body);
    gw.wait_nothing_left().await;
}
