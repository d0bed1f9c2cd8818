//! `POST /v1/responses` over raw HTTP, with the real CLI against the mock Anthropic API: the
//! `response` object, the typed stream events in order, `previous_response_id` continuing a
//! session, function calls over Responses, and bad input. Every answer and every event is checked
//! against OpenAI's schema on the way (`common::json`, `common::sse_data`).

mod common;

use common::{json, sse_data, Gateway};
use reqwest::StatusCode;
use serde_json::{json, Value};

const RESPONSES: &str = "/v1/responses";

/// The events of a streamed response to the text `input`.
async fn streamed(gw: &Gateway, input: &str) -> Vec<Value> {
    events(
        gw,
        &json!({"model": "haiku", "input": input, "stream": true}),
    )
    .await
}

/// The events of a streamed response, parsed.
async fn events(gw: &Gateway, body: &Value) -> Vec<Value> {
    let response = gw.post(RESPONSES, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    sse_data(response)
        .await
        .iter()
        .map(|data| serde_json::from_str(data).expect("every event is JSON"))
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The text of a response's `message` output items.
fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().unwrap().iter())
        .map(|part| part["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_response_holds_the_answer_in_openai_shape() {
    let gw = Gateway::start().await;
    let body = json!({"model": "haiku", "instructions": "instructions-marker",
        "input": "[[mock:text a plain answer]]", "temperature": 0.2, "max_output_tokens": 50,
        "metadata": {"k": "v"}});
    let response = gw.post(RESPONSES, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(response).await;
    assert!(answer["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["model"], "haiku");
    assert_eq!(answer["instructions"], "instructions-marker");
    assert_eq!(answer["metadata"], json!({"k": "v"}));
    assert_eq!(answer["max_output_tokens"], 50);
    assert_eq!(answer["temperature"], Value::Null, "not acted on");
    assert_eq!(output_text(&answer), "a plain answer");
    assert_eq!(answer["output"][0]["content"][0]["annotations"], json!([]));
    let usage = &answer["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
    );
    assert!(
        gw.mock_saw("instructions-marker"),
        "instructions reached the model"
    );
}

#[tokio::test]
async fn a_streamed_response_sends_typed_events_in_order() {
    let gw = Gateway::start().await;
    let events = streamed(&gw, "[[mock:text one two three four]]").await;
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    let kinds = types(&events);
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.output_text.delta")
        .count();
    assert!(deltas > 1, "several deltas: {kinds:?}");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected);
    let joined: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(joined, "one two three four");
    let done = events
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done["text"], joined);
    let completed = &events.last().unwrap()["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(output_text(completed), joined);
    assert!(completed["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(events[0]["response"]["id"], completed["id"]);
    assert_eq!(events[0]["response"]["status"], "in_progress");
}

#[tokio::test]
async fn a_run_that_fails_mid_stream_ends_with_response_failed() {
    let gw = Gateway::start().await;
    let events = streamed(&gw, "[[mock:error 400]] fail").await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{events:?}");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    let plain = gw
        .post(
            RESPONSES,
            &json!({"model": "haiku", "input": "[[mock:error 400]] fail"}),
        )
        .await;
    assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(plain).await["error"]["code"], "agent_failed");
}

#[tokio::test]
async fn previous_response_id_continues_the_conversation() {
    let gw = Gateway::start().await;
    let first = json(
        gw.post(
            RESPONSES,
            &json!({"model": "haiku", "input": "first-turn-marker [[mock:text noted]]"}),
        )
        .await,
    )
    .await;
    assert_eq!(first["store"], true);
    let before = gw.mock.requests().len();
    let second = json(
        gw.post(
            RESPONSES,
            &json!({"model": "haiku", "previous_response_id": first["id"],
                "input": "second-turn [[mock:text continued]]"}),
        )
        .await,
    )
    .await;
    assert_eq!(second["previous_response_id"], first["id"]);
    assert_eq!(output_text(&second), "continued");
    let resumed = gw.mock.requests()[before].body.to_string();
    assert!(
        resumed.contains("first-turn-marker") && resumed.contains("second-turn"),
        "the model received the earlier turn with the new one: {resumed}"
    );

    // Not stored, unknown, or not a response id: nothing to continue.
    let unstored = json(
        gw.post(
            RESPONSES,
            &json!({"model": "haiku", "input": "[[mock:text x]]", "store": false}),
        )
        .await,
    )
    .await;
    assert_eq!(unstored["store"], false);
    for previous in [
        unstored["id"].clone(),
        json!("resp_00000000000000000000000000000000"),
        json!("chatcmpl-1"),
    ] {
        let response = gw
            .post(
                RESPONSES,
                &json!({"model": "haiku", "previous_response_id": previous, "input": "again"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{previous}");
        let error = json(response).await;
        assert_eq!(error["error"]["code"], "previous_response_not_found");
        assert_eq!(error["error"]["param"], "previous_response_id");
    }
}

#[tokio::test]
async fn a_function_call_over_responses_streams_its_item_and_the_loop_goes_on() {
    let gw = Gateway::start().await;
    let tools = json!([{"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let ask = json!({"role": "user", "content": r#"Weather? [[mock:tool get_weather {"city": "Oslo"}]]"#});
    let events = events(
        &gw,
        &json!({"model": "haiku", "input": [ask], "tools": tools, "stream": true}),
    )
    .await;
    let kinds = types(&events);
    let from = kinds
        .iter()
        .position(|k| *k == "response.function_call_arguments.delta")
        .expect("the call's arguments are streamed");
    assert_eq!(kinds[from - 1], "response.output_item.added");
    assert_eq!(
        kinds[from + 1..],
        [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let completed = &events.last().unwrap()["response"];
    let call = completed["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "function_call")
        .expect("a function_call item")
        .clone();
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Oslo"})
    );
    assert_eq!(completed["tools"][0]["name"], "get_weather", "tools echoed");

    let input = json!([ask, call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "snow, -3C"}]);
    let answer = json(
        gw.post(
            RESPONSES,
            &json!({"model": "haiku", "input": input, "tools": tools}),
        )
        .await,
    )
    .await;
    assert_eq!(output_text(&answer), "The result of get_weather: snow, -3C");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let gw = Gateway::start().await;
    for (body, param) in [
        (
            json!({"model": "haiku", "input": "hi", "frobnicate": true}),
            "frobnicate",
        ),
        (json!({"model": "haiku", "input": 7}), "input"),
        (json!({"model": "haiku", "input": []}), "input"),
        (
            json!({"model": "haiku", "input": [{"type": "reasoning", "summary": []}]}),
            "input[0].type",
        ),
        (
            json!({"model": "haiku", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]}),
            "input[0].content",
        ),
        (
            json!({"model": "haiku", "input": [{"role": "user", "content": "hi"},
                {"type": "function_call_output", "call_id": "call_nope", "output": "x"}]}),
            "input[1].call_id",
        ),
        (
            json!({"model": "haiku", "input": [{"role": "user", "content": "hi"},
                {"type": "function_call", "call_id": "c", "name": "f"}]}),
            "input[1].arguments",
        ),
        (
            json!({"model": "haiku", "input": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}]}),
            "input",
        ),
        (
            json!({"model": "haiku", "input": "hi", "tools": [{"type": "file_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "haiku", "input": "hi", "tools": [{"type": "function", "name": "f g"}]}),
            "tools[0].name",
        ),
        (
            json!({"model": "haiku", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {"type": "string"}}]}),
            "tools[0].parameters",
        ),
        (
            json!({"model": "haiku", "input": "hi", "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"}}),
            "tool_choice",
        ),
        (json!({"model": "gpt-4o", "input": "hi"}), "model"),
        (
            json!({"model": "haiku", "input": "hi", "background": true}),
            "background",
        ),
    ] {
        let response = gw.post(RESPONSES, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error = json(response).await;
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    let response = gw.post_raw(RESPONSES, "{not json").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    json(response).await;
    assert!(gw.mock.requests().is_empty(), "nothing ran");
}
