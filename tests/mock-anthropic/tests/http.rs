//! The mock over plain HTTP: what any Messages API client sees.

use std::time::Duration;

use mock_anthropic::{MockAnthropic, Script, Usage};
use serde_json::{json, Value};

fn body(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test-1",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
    })
}

async fn post(
    mock: &MockAnthropic,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", mock.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the mock answers")
}

/// `POST /v1/messages` of one user turn, `prompt`.
async fn message(mock: &MockAnthropic, prompt: &str, stream: bool) -> reqwest::Response {
    post(mock, "/v1/messages", body(prompt, stream).to_string()).await
}

/// A new mock, and its answer to one streamed message of `prompt`.
async fn streamed(prompt: &str) -> (MockAnthropic, reqwest::Response) {
    let mock = MockAnthropic::start().await;
    let response = message(&mock, prompt, true).await;
    (mock, response)
}

/// A response's JSON body.
async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// `GET path` from the mock.
async fn get(mock: &MockAnthropic, path: &str) -> reqwest::Response {
    reqwest::get(format!("{}{path}", mock.url()))
        .await
        .expect("the mock answers")
}

/// Parses an SSE body into its `data` payloads, checking each `event:` name matches the payload type.
fn sse_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut lines = frame.lines();
            let name = lines
                .next()
                .and_then(|l| l.strip_prefix("event: "))
                .expect("event line");
            let data = lines
                .next()
                .and_then(|l| l.strip_prefix("data: "))
                .expect("data line");
            let event: Value = serde_json::from_str(data).expect("data is JSON");
            assert_eq!(event["type"], name);
            event
        })
        .collect()
}

#[tokio::test]
async fn non_streaming_answer_is_one_json_message_echoing_the_model() {
    let mock = MockAnthropic::start().await;
    let query = "/v1/messages?beta=true";
    let response = post(&mock, query, body("hello there", false).to_string()).await;
    assert_eq!(response.status(), 200);
    let message = json(response).await;
    assert_eq!(message["model"], "claude-test-1");
    assert_eq!(message["content"][0]["text"], "mock answer: hello there");
    assert_eq!(message["stop_reason"], "end_turn");
    let usage = &message["usage"];
    assert_eq!(
        [&usage["input_tokens"], &usage["cache_read_input_tokens"]],
        [
            Usage::DEFAULT.input_tokens,
            Usage::DEFAULT.cache_read_input_tokens
        ],
        "{usage}"
    );

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/messages");
    assert_eq!(recorded[0].query.as_deref(), Some("beta=true"));
    assert_eq!(recorded[0].model.as_deref(), Some("claude-test-1"));
    assert_eq!(recorded[0].header("Content-Type"), Some("application/json"));
}

#[tokio::test]
async fn streaming_answer_is_sse_with_one_delta_per_word() {
    let (_mock, response) = streamed("[[mock:text one two three]]").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_events(&response.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "one two three");
    assert_eq!(events[0]["message"]["model"], "claude-test-1");
    assert_eq!(
        events[7]["usage"]["output_tokens"],
        Usage::DEFAULT.output_tokens
    );
}

#[tokio::test]
async fn bash_directive_streams_a_tool_call_then_reports_its_result() {
    let (mock, response) = streamed("[[mock:bash ls -l]]").await;
    let events = sse_events(&response.text().await.unwrap());
    assert_eq!(events[2]["content_block"]["name"], "Bash");
    let tool_id = events[2]["content_block"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let input: String = events
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    let input: Value = serde_json::from_str(&input).unwrap();
    assert_eq!(input["command"], "ls -l");

    let follow_up = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "[[mock:bash ls -l]]"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "Bash", "input": input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "total 0\n"}]}
    ]});
    let answer = json(post(&mock, "/v1/messages", follow_up.to_string()).await).await;
    assert_eq!(answer["content"][0]["text"], "tool said: total 0");
}

#[tokio::test]
async fn error_directive_answers_the_status_and_forbids_retries() {
    let (mock, response) = streamed("[[mock:error 529]]").await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["x-should-retry"], "false");
    let error = json(response).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "overloaded_error");

    let response = message(&mock, "[[mock:error 500 retry]]", true).await;
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("x-should-retry").is_none());
}

#[tokio::test]
async fn malformed_requests_get_json_400s_and_unknown_paths_json_404s() {
    let mock = MockAnthropic::start().await;
    for bad in [
        "{not json",
        "{\"messages\": []}",
        "{\"model\": \"m\"}",
        "[1]",
    ] {
        let response = post(&mock, "/v1/messages", bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        let error = json(response).await;
        assert_eq!(error["error"]["type"], "invalid_request_error", "{bad}");
    }
    let response = message(&mock, "[[mock:bogus]]", false).await;
    assert_eq!(response.status(), 400);
    let error = json(response).await;
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bogus"));

    let response = post(&mock, "/v2/nothing", "{}").await;
    assert_eq!(response.status(), 404);
    let error = json(response).await;
    assert_eq!(error["error"]["type"], "not_found_error");

    let response = get(&mock, "/v1/messages").await;
    assert_eq!(response.status(), 405);
    assert!(response.json::<Value>().await.is_ok());
    assert_eq!(
        mock.requests().len(),
        7,
        "every request is recorded, bad ones too"
    );
}

#[tokio::test]
async fn auxiliary_endpoints_answer() {
    let mock = MockAnthropic::start().await;
    let count_tokens = "/v1/messages/count_tokens";
    let count = json(post(&mock, count_tokens, body("count me", false).to_string()).await).await;
    assert!(count["input_tokens"].as_u64().unwrap() > 0);
    let client = reqwest::Client::new();
    let hello = client
        .head(format!("{}/api/hello", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status(), 200);
    let models = json(get(&mock, "/v1/models").await).await;
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "claude-sonnet-4-6"));
}

#[tokio::test]
async fn script_sets_default_reply_and_usage() {
    let usage = Usage {
        input_tokens: 7,
        ..Usage::DEFAULT
    };
    let mock =
        MockAnthropic::start_with(Script::new().default_reply("scripted").usage(usage)).await;
    let answer = json(message(&mock, "anything", false).await).await;
    assert_eq!(answer["content"][0]["text"], "scripted");
    assert_eq!(answer["usage"]["input_tokens"], 7);
    let answer = json(message(&mock, "[[mock:usage 5 6]]", false).await).await;
    assert_eq!(answer["usage"]["input_tokens"], 5);
    assert_eq!(answer["usage"]["output_tokens"], 6);
}

#[tokio::test]
async fn wait_for_requests_returns_once_enough_arrived_and_reports_a_timeout() {
    let mock = MockAnthropic::start().await;
    let err = mock
        .wait_for_requests(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.received.is_empty());
    assert!(err.to_string().contains("waited for 1 requests"));

    let waiter = mock.wait_for_requests(2, Duration::from_secs(10));
    let client = async {
        message(&mock, "a", false).await;
        message(&mock, "b", false).await;
    };
    let (waited, ()) = tokio::join!(waiter, client);
    let requests = waited.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].prompt_text(), "b");
}
