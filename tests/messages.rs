//! `POST /v1/messages` over raw HTTP, with the real CLI against the mock Anthropic API: the
//! `message` object, the order and shape of the streamed events, auth by `x-api-key` or bearer,
//! session continuation, and Anthropic-shaped error bodies for what cannot be served.

mod common;

use common::{send, Gateway, TOKEN};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

const MESSAGES: &str = "/v1/messages";

/// A Messages request with the token in `x-api-key`, as the Anthropic SDKs send it.
fn messages(gw: &Gateway, body: &Value) -> RequestBuilder {
    gw.request_as(None, Method::POST, MESSAGES)
        .header("x-api-key", TOKEN)
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

/// A streamed Messages call asking `content`.
fn streamed(content: &str) -> Value {
    let mut body = ask(content);
    body["stream"] = json!(true);
    body
}

/// A body asking one user message, `content`, of haiku.
fn ask(content: &str) -> Value {
    json!({"model": "haiku", "max_tokens": 1024, "messages": [{"role": "user", "content": content}]})
}

async fn status_and_body(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// Sends `request` and asserts that it is refused with `want` and an Anthropic error of `kind`
/// whose message contains `says`.
async fn assert_refused(request: RequestBuilder, want: StatusCode, kind: &str, says: &str) {
    let (status, body) = status_and_body(send(request).await).await;
    assert_error(status, &body, want, kind, says);
}

/// Asserts an Anthropic error body of `kind` whose message contains `says`.
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str, says: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

/// `(event name, data)` of each event of a stream.
fn events(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(event) = line.strip_prefix("event:") {
            name = Some(event.trim().to_owned());
        } else if let Some(data) = line.strip_prefix("data:") {
            let data: Value = serde_json::from_str(data.trim()).expect("JSON data");
            out.push((name.take().expect("every event is named"), data));
        }
    }
    out
}

#[tokio::test]
async fn a_message_is_answered_in_anthropics_shape() {
    let gw = Gateway::start().await;
    let (status, body) =
        status_and_body(send(messages(&gw, &ask("[[mock:text hello in shape]]"))).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "haiku");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "hello in shape"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    for field in ["input_tokens", "output_tokens"] {
        assert!(body["usage"][field].as_u64().unwrap() > 0, "{body}");
    }
    for field in ["cache_creation_input_tokens", "cache_read_input_tokens"] {
        assert!(body["usage"][field].is_u64(), "{body}");
    }
    // The mock was asked for the model requested.
    let asked = gw.mock.message_requests();
    assert!(
        asked
            .iter()
            .any(|r| r.model.as_deref().is_some_and(|m| m.contains("haiku"))),
        "{asked:?}"
    );
}

#[tokio::test]
async fn a_stream_sends_anthropics_events_in_order() {
    let gw = Gateway::start().await;
    let response = send(messages(&gw, &streamed("[[mock:text one two three four]]"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = events(&response.text().await.unwrap());
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "an event's name is its type");
    }
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(deltas > 1, "token-level deltas: {names:?}");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["model"], "haiku");
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| {
            assert_eq!(data["index"], 0);
            assert_eq!(data["delta"]["type"], "text_delta");
            data["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "one two three four");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["delta"]["stop_sequence"], Value::Null);
    assert!(
        delta["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{delta}"
    );
    assert!(
        delta["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{delta}"
    );
}

#[tokio::test]
async fn a_run_that_fails_mid_stream_ends_with_an_error_event() {
    let gw = Gateway::start().await;
    let response = send(messages(&gw, &streamed("[[mock:error 500]]"))).await;
    assert_eq!(response.status(), StatusCode::OK, "the stream had started");
    let events = events(&response.text().await.unwrap());
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error", "{data}");
    assert!(
        !events.iter().any(|(name, _)| name == "message_stop"),
        "a failed message does not stop well: {events:?}"
    );
    gw.wait_no_agent_process().await;
}

#[tokio::test]
async fn a_run_that_fails_is_a_500_api_error() {
    let gw = Gateway::start().await;
    assert_refused(
        messages(&gw, &ask("[[mock:error 500]]")),
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        "execution failed",
    )
    .await;
}

#[tokio::test]
async fn bearer_and_x_api_key_are_both_accepted_and_checked() {
    let gw = Gateway::start().await;
    let body = ask("[[mock:text by bearer]]");
    let bearer = send(gw.request(Method::POST, MESSAGES).json(&body)).await;
    assert_eq!(bearer.status(), StatusCode::OK);
    // Any anthropic-version, or none, is accepted.
    let versioned = send(
        gw.request_as(None, Method::POST, MESSAGES)
            .header("x-api-key", TOKEN)
            .header("anthropic-version", "1999-01-01")
            .json(&body),
    )
    .await;
    assert_eq!(versioned.status(), StatusCode::OK);

    let cases = [
        (
            vec![],
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "Missing API key",
        ),
        (
            vec![("x-api-key", "wrong")],
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "Invalid token",
        ),
        (
            vec![("authorization", "Bearer wrong")],
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "Invalid token",
        ),
        (
            vec![("x-api-key", TOKEN), ("authorization", "Bearer other")],
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "send exactly one",
        ),
    ];
    for (headers, status, kind, says) in cases {
        let mut request = gw.request_as(None, Method::POST, MESSAGES).json(&body);
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        assert_refused(request, status, kind, says).await;
    }
    // x-api-key is the Messages route's: the OpenAI routes still want a bearer token.
    let chat = send(
        gw.request_as(None, Method::POST, common::CHAT)
            .header("x-api-key", TOKEN)
            .json(&Gateway::chat_body("hi")),
    )
    .await;
    assert_eq!(chat.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn what_cannot_be_served_is_an_anthropic_error() {
    let gw = Gateway::builder().arg("max-body-bytes", 4096).start().await;
    let raw = |body: &'static str| {
        gw.request_as(None, Method::POST, MESSAGES)
            .header("x-api-key", TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    let bad = StatusCode::BAD_REQUEST;
    let invalid = "invalid_request_error";
    assert_refused(
        raw("{\"model\": \"haiku\","),
        bad,
        invalid,
        "invalid request body",
    )
    .await;

    let cases = [
        (
            json!({"model": "haiku", "messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "haiku", "max_tokens": "many", "messages": [{"role": "user", "content": "hi"}]}),
            "invalid type",
        ),
        (
            json!({"model": "haiku", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "haiku", "max_tokens": 8, "messages": []}),
            "at least one message",
        ),
        (
            json!({"model": "haiku", "max_tokens": 8, "messages": "hi"}),
            "invalid type",
        ),
        (
            json!({"model": "haiku", "max_tokens": 8, "messages": [{"role": "user", "content": 5}]}),
            "a string or an array of content blocks",
        ),
        (
            json!({"model": "haiku", "max_tokens": 8, "system": 5, "messages": [{"role": "user", "content": "hi"}]}),
            "a string or an array of text blocks",
        ),
        (
            json!({"model": "haiku", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
            "\"image\"",
        ),
        (
            json!({"model": "haiku", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "pre"}]}),
            "last message",
        ),
        (
            json!({"model": "haiku", "max_tokens": 8, "tools": [{"name": "f", "input_schema": {}}], "messages": [{"role": "user", "content": "hi"}]}),
            "tools",
        ),
        (
            json!({"model": "haiku", "max_tokens": 8, "output_config": {"effort": "hard"}, "messages": [{"role": "user", "content": "hi"}]}),
            "output_config.effort",
        ),
        (
            json!({"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
            "model",
        ),
    ];
    for (request, says) in cases {
        assert_refused(messages(&gw, &request), bad, invalid, says).await;
    }

    let unknown_model = json!({"model": "claude-2.1", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    assert_refused(
        messages(&gw, &unknown_model),
        StatusCode::NOT_FOUND,
        "not_found_error",
        "claude-2.1",
    )
    .await;

    assert_refused(
        messages(&gw, &ask(&"x".repeat(8000))),
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        "4096",
    )
    .await;
    // Nothing above reached the model.
    assert!(gw.mock.message_requests().is_empty());
}

#[tokio::test]
async fn a_conversation_continues_by_its_session_handle() {
    let gw = Gateway::start().await;
    let first = send(messages(
        &gw,
        &ask("The password is lynx88. [[mock:text noted]]"),
    ))
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    let handle = first.headers()["x-session-id"].to_str().unwrap().to_owned();
    let next = send(
        messages(&gw, &ask("What was the password? [[mock:text lynx88]]"))
            .header("x-session-id", &handle),
    )
    .await;
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(next.headers()["x-session-id"], handle.as_str());
    let last = gw.mock.message_requests().pop().unwrap();
    assert!(
        last.all_text().contains("lynx88. "),
        "the earlier turn reached the model with only the new one sent: {}",
        last.all_text()
    );

    assert_refused(
        messages(&gw, &ask("hi")).header("x-session-id", "no-such-session"),
        StatusCode::NOT_FOUND,
        "not_found_error",
        "not found",
    )
    .await;
}

/// The Messages calls the mock received whose prompt carries `marker`.
fn calls_with(gw: &Gateway, marker: &str) -> Vec<mock_anthropic::RecordedRequest> {
    gw.mock
        .message_requests()
        .into_iter()
        .filter(|r| r.prompt_text().contains(marker))
        .collect()
}

#[tokio::test]
async fn output_config_sets_effort_and_a_json_schema() {
    let gw = Gateway::start().await;
    let config = json!({"effort": "low", "format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
    }}});
    let mut body = ask(r#"msg-schema [[mock:structured {"n": 7}]] [[mock:text prose]]"#);
    body["output_config"] = config.clone();
    let (status, answer) = status_and_body(send(messages(&gw, &body)).await).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let text = answer["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"n": 7})
    );
    let calls = calls_with(&gw, "msg-schema");
    let call = calls.first().expect("the prompt reached the API");
    assert_eq!(
        call.body["output_config"]["effort"], "low",
        "--effort reached the API"
    );
    let tools: Vec<&str> = call.body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"StructuredOutput"), "{tools:?}");

    // Streamed: the value whole, never the prose around it.
    let mut streamed = ask(r#"msg-stream [[mock:structured {"n": 8}]] [[mock:text prose]]"#);
    streamed["output_config"] = config.clone();
    streamed["stream"] = json!(true);
    let events = events(&send(messages(&gw, &streamed)).await.text().await.unwrap());
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| data["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"n": 8})
    );

    // A model that never fits the schema: 422, never prose.
    let mut refused = ask("[[mock:structured refuse]] [[mock:text no JSON here]]");
    refused["output_config"] = config;
    assert_refused(
        messages(&gw, &refused),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_error",
        "output_config.format",
    )
    .await;
}

#[tokio::test]
async fn effort_over_the_operators_cap_is_a_permission_error() {
    let gw = Gateway::builder().arg("max-effort", "low").start().await;
    let mut body = ask("hi");
    body["output_config"] = json!({"effort": "high"});
    assert_refused(
        messages(&gw, &body),
        StatusCode::FORBIDDEN,
        "permission_error",
        "output_config.effort",
    )
    .await;
    assert!(gw.mock.message_requests().is_empty(), "nothing ran");
}
