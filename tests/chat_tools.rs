//! OpenAI function calling on chat completions, over raw HTTP: the caller's functions reach the
//! agent as MCP tools of the gateway's own server, a call ends the run with `tool_calls`, and the
//! next request with the results goes on. Every answer is checked against OpenAI's schema on the
//! way (see `common::json`).

mod common;

use common::{json, sse_data, Gateway, CHAT};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `get_weather`, in chat's shape.
fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}])
}

const ASK: &str = r#"Weather in Paris? [[mock:tool get_weather {"city": "Paris"}]]"#;

/// The tool names the agent offered the model in the mock's last request.
fn offered_tools(gw: &Gateway) -> Vec<String> {
    let requests = gw.mock.requests();
    let last = requests.last().expect("the mock was called");
    last.body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_tool_loop_calls_the_function_and_answers_with_its_result() {
    let gw = Gateway::start().await;
    let mut messages = json!([{"role": "user", "content": ASK}]);
    let body = json!({"model": "haiku", "messages": messages, "tools": weather_tools()});
    let response = gw.post(CHAT, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let called = json(response).await;
    let choice = &called["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{called}");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    let offered = offered_tools(&gw);
    assert!(
        offered.iter().any(|t| t == "mcp__caller__get_weather"),
        "the function is offered as an MCP tool: {offered:?}"
    );
    assert!(
        offered.iter().any(|t| t == "Bash"),
        "the agent keeps its own tools: {offered:?}"
    );
    gw.wait_no_agent_process().await;

    let calls_before = gw.mock.requests().len();
    messages
        .as_array_mut()
        .unwrap()
        .push(choice["message"].clone());
    messages
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny and 21C"}));
    let body = json!({"model": "haiku", "messages": messages, "tools": weather_tools()});
    let answered = json(gw.post(CHAT, &body).await).await;
    assert_eq!(
        answered["choices"][0]["finish_reason"], "stop",
        "{answered}"
    );
    assert_eq!(
        answered["choices"][0]["message"]["content"],
        "The result of get_weather: sunny and 21C"
    );
    // The next run saw the call and its result in its prompt.
    let next = &gw.mock.requests()[calls_before];
    let prompt = next.body.to_string();
    assert!(prompt.contains("[Function call get_weather"), "{prompt}");
    assert!(prompt.contains("sunny and 21C"), "{prompt}");
}

#[tokio::test]
async fn a_streamed_tool_call_arrives_as_tool_call_deltas() {
    let gw = Gateway::start().await;
    let body = json!({"model": "haiku", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": ASK}], "tools": weather_tools()});
    let response = gw.post(CHAT, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let events: Vec<Value> = sse_data(response)
        .await
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let call = events
        .iter()
        .find_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .expect("a tool_calls delta");
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["type"], "function");
    let finish: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0].get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    assert!(
        events.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn tool_choice_none_offers_nothing_and_the_agent_answers() {
    let gw = Gateway::start().await;
    let body = json!({"model": "haiku", "messages": [{"role": "user", "content": ASK}],
        "tools": weather_tools(), "tool_choice": "none"});
    let answer = json(gw.post(CHAT, &body).await).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "mock: no offered tool ends with get_weather"
    );
    assert!(!offered_tools(&gw)
        .iter()
        .any(|t| t.starts_with("mcp__caller__")));
}

#[tokio::test]
async fn bad_tools_are_400s_naming_the_field() {
    let gw = Gateway::start().await;
    let user = json!([{"role": "user", "content": "hi"}]);
    for (extra, param) in [
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": 7}}}}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (json!({"functions": [{"name": "f"}]}), "functions"),
    ] {
        let mut body = json!({"model": "haiku", "messages": user});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let response = gw.post(CHAT, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{extra}");
        let error = json(response).await;
        assert_eq!(error["error"]["param"], param, "{extra}: {error}");
    }
    let orphan = json!({"model": "haiku", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_x", "content": "x"}]});
    let response = gw.post(CHAT, &orphan).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(response).await["error"]["param"],
        "messages[1].tool_call_id"
    );
    assert!(gw.mock.requests().is_empty(), "nothing ran");
}

/// Under uid isolation (a uid per run, as the suite runs it as root) the run's CLI starts the
/// gateway's executable as the caller's function server, and ending the run at the call stops
/// the server with the rest of the run.
#[tokio::test]
async fn a_contained_run_starts_the_function_server_and_leaves_nothing() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "uid isolation needs root (CI runs as root)"
    );
    let gw = common::GatewayBuilder::default()
        .arg("isolation", "uid")
        .start()
        .await;
    assert_eq!(gw.health().await["isolation"], "uid");
    let body = json!({"model": "haiku", "messages": [{"role": "user", "content": ASK}],
        "tools": weather_tools()});
    let called = json(gw.post(CHAT, &body).await).await;
    assert_eq!(
        called["choices"][0]["finish_reason"], "tool_calls",
        "{called}"
    );
    assert!(offered_tools(&gw)
        .iter()
        .any(|t| t == "mcp__caller__get_weather"));
    gw.wait_no_agent_process().await;
    gw.wait_idle().await;
}
