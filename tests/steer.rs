//! Callers steering the agent (issue 14): each job option reaching the API through the real CLI
//! (the mock records the model, system prompt and tools it was sent), structured output on jobs
//! and chat, and the operator's policy refusing options that widen what a run may do.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A gateway whose operator allows every option.
async fn open_gateway() -> Gateway {
    Gateway::builder()
        .arg("allow-mcp-servers", true)
        .arg("allow-system-prompt", true)
        .arg("allow-inline-agents", true)
        .arg("allow-tools", true)
        .arg("max-effort", "max")
        .start()
        .await
}

/// The Messages API calls the mock received whose prompt carries `marker`.
fn calls_with(gw: &Gateway, marker: &str) -> Vec<mock_anthropic::RecordedRequest> {
    gw.mock
        .requests()
        .into_iter()
        .filter(|r| r.is_message() && r.prompt_text().contains(marker))
        .collect()
}

/// Names of the tools offered in one API call.
fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The system prompt of one API call as one text.
fn system_text(body: &Value) -> String {
    match &body["system"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Runs one job on a gateway whose operator allows every option; the gateway and the job's record.
async fn open_job(body: Value) -> (Gateway, Value) {
    let gw = open_gateway().await;
    let record = submit_job(&gw, body).await;
    (gw, record)
}

async fn submit_job(gw: &Gateway, body: Value) -> Value {
    let (status, answer) = execute(gw, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    wait_end(gw, answer["job_id"].as_str().unwrap()).await
}

#[tokio::test]
async fn job_options_reach_the_api_and_the_record() {
    let (gw, record) = open_job(json!({
        "prompt": "opts-marker [[mock:text steered]]",
        "agent": AGENT,
        "model": "claude-opus-4-7",
        "system_prompt": "-You are the steered system prompt SYS-91.",
        "append_system_prompt": "--appended line APP-17",
        "tools": ["Bash", "Read"],
        "disallowed_tools": ["Read"],
        "max_turns": 3,
        "effort": "low",
    }))
    .await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "steered");
    assert_eq!(record["options"]["model"], "claude-opus-4-7");
    assert_eq!(record["options"]["max_turns"], 3);
    assert_eq!(record["options"]["tools"], json!(["Bash", "Read"]));
    assert_eq!(record["structured_output"], Value::Null);

    let calls = calls_with(&gw, "opts-marker");
    let call = calls.first().expect("the prompt reached the API");
    assert_eq!(
        call.body["output_config"]["effort"], "low",
        "--effort reached the API"
    );
    assert_eq!(call.model.as_deref(), Some("claude-opus-4-7"));
    let system = system_text(&call.body);
    // Values starting with '-' arrived as text, not as flags.
    assert!(
        system.contains("-You are the steered system prompt SYS-91."),
        "{system}"
    );
    assert!(system.contains("--appended line APP-17"), "{system}");
    let tools = tool_names(&call.body);
    assert!(tools.contains(&"Bash".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"Read".to_owned()), "disallowed: {tools:?}");
    assert!(
        !tools.contains(&"Edit".to_owned()),
        "not in --tools: {tools:?}"
    );
}

#[tokio::test]
async fn an_overloaded_model_falls_back_to_fallback_model() {
    let (gw, record) = open_job(json!({
        "prompt": "fallback-marker [[mock:error 529 retry model=opus]] [[mock:text answered by the fallback]]",
        "agent": AGENT,
        "model": "claude-opus-4-7",
        "fallback_model": "claude-sonnet-4-6",
    }))
    .await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "answered by the fallback");
    assert_eq!(record["options"]["fallback_model"], "claude-sonnet-4-6");

    let models: Vec<String> = calls_with(&gw, "fallback-marker")
        .into_iter()
        .filter_map(|call| call.model)
        .collect();
    assert_eq!(
        models.first().map(String::as_str),
        Some("claude-opus-4-7"),
        "the run asked its model first: {models:?}"
    );
    assert_eq!(
        models.last().map(String::as_str),
        Some("claude-sonnet-4-6"),
        "the answer came from the fallback model: {models:?}"
    );
}

#[tokio::test]
async fn an_mcp_server_s_tools_are_offered_to_the_model() {
    let gw = open_gateway().await;
    let server = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mcp-echo-server.py"
    );
    let record = submit_job(
        &gw,
        json!({
            "prompt": "mcp-marker [[mock:text listed]]",
            "agent": AGENT,
            "mcp_servers": {"echo": {"type": "stdio", "command": "python3", "args": [server]}},
        }),
    )
    .await;
    assert_eq!(record["status"], "completed", "{record}");
    let calls = calls_with(&gw, "mcp-marker");
    let call = calls.first().expect("the prompt reached the API");
    // The CLI defers MCP tools: their names are listed to the model, their schemas fetched on use.
    assert!(
        call.body.to_string().contains("mcp__echo__ping"),
        "the server's tool was not offered; tools: {:?}",
        tool_names(&call.body)
    );
}

#[tokio::test]
async fn max_turns_stops_the_run() {
    let gw = Gateway::start().await;
    let record = submit_job(
        &gw,
        json!({
            "prompt": "turns-marker [[mock:bash echo one]] [[mock:bash echo two]] [[mock:bash echo three]]",
            "agent": AGENT,
            "max_turns": 1,
        }),
    )
    .await;
    assert_eq!(record["subtype"], "error_max_turns", "{record}");
    assert_eq!(record["options"]["max_turns"], 1);
    assert!(
        calls_with(&gw, "turns-marker").len() < 3,
        "the run stopped early"
    );
}

#[tokio::test]
async fn an_inline_agent_is_used_without_an_agent_file() {
    let (gw, record) = open_job(json!({
        "prompt": "agent-marker [[mock:text reviewed]]",
        "agent": "inline-reviewer",
        "agents": {"inline-reviewer": {
            "description": "Reviews code",
            "prompt": "You are the inline reviewer REV-55.",
        }},
    }))
    .await;
    assert_eq!(record["status"], "completed", "{record}");
    let calls = calls_with(&gw, "agent-marker");
    let system = system_text(&calls.first().expect("the prompt reached the API").body);
    assert!(system.contains("REV-55"), "{system}");
}

#[tokio::test]
async fn a_json_schema_job_records_the_structured_output() {
    let gw = Gateway::start().await;
    let schema = json!({
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    });
    let record = submit_job(
        &gw,
        json!({
            "prompt": r#"schema-marker [[mock:structured {"answer": 42}]] [[mock:text done]]"#,
            "agent": AGENT,
            "json_schema": schema,
        }),
    )
    .await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(
        record["structured_output"],
        json!({"answer": 42}),
        "{record}"
    );
    assert_eq!(record["options"]["json_schema"], schema);
    let calls = calls_with(&gw, "schema-marker");
    let tools = tool_names(&calls.first().expect("the prompt reached the API").body);
    assert!(tools.contains(&"StructuredOutput".to_owned()), "{tools:?}");

    // A model that never calls the tool (the CLI insists once, then ends with prose): the job
    // fails, saying why, without a value.
    let record = submit_job(
        &gw,
        json!({
            "prompt": "[[mock:structured refuse]] [[mock:text prose only]]",
            "agent": AGENT,
            "json_schema": schema,
        }),
    )
    .await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["structured_output"], Value::Null, "{record}");
    assert_eq!(
        record["error"], "the agent did not produce a value that fits json_schema",
        "{record}"
    );
}

#[tokio::test]
async fn options_the_policy_turns_off_are_403_naming_them() {
    let gw = Gateway::builder()
        .arg("max-turns", 5)
        .arg("max-effort", "medium")
        .start()
        .await;
    let base = || json!({"prompt": "p", "agent": AGENT});
    for (field, value) in [
        ("mcp_servers", json!({"srv": {"command": "true"}})),
        ("system_prompt", json!("replace it")),
        ("agents", json!({"a": {"description": "d", "prompt": "p"}})),
        ("tools", json!(["Bash"])),
        ("allowed_tools", json!(["Bash"])),
        ("max_turns", json!(6)),
        ("effort", json!("high")),
    ] {
        let mut body = base();
        body[field] = value;
        let (status, answer) = execute(&gw, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{field}: {answer}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(field), "{field}: {detail}");
    }
    // Options that only narrow are open to every caller.
    let (status, answer) = execute(
        &gw,
        json!({"prompt": "p [[mock:text ok]]", "agent": AGENT, "disallowed_tools": ["Bash"],
               "append_system_prompt": "x", "max_turns": 5, "effort": "medium",
               "json_schema": {"type": "object"}, "model": "haiku"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

#[tokio::test]
async fn malformed_options_are_422_naming_the_field() {
    let gw = open_gateway().await;
    for (field, value) in [
        ("model", json!("--dangerously-skip-permissions")),
        ("model", json!("gpt-4o")),
        ("fallback_model", json!(7)),
        ("tools", json!(["-p"])),
        ("allowed_tools", json!("Bash")),
        ("disallowed_tools", json!(["a,b"])),
        ("max_turns", json!(0)),
        ("max_turns", json!("3")),
        ("effort", json!("extreme")),
        ("mcp_servers", json!(["srv"])),
        (
            "agents",
            json!({"../x": {"description": "d", "prompt": "p"}}),
        ),
        ("json_schema", json!("object")),
        ("system_prompt", json!("nul\u{0}byte")),
    ] {
        let mut body = json!({"prompt": "p", "agent": AGENT});
        body[field] = value.clone();
        let detail = refused_as_invalid(&gw, &body).await;
        assert!(detail.starts_with(field), "{field}: {detail}");
    }
}

/// Posts a one-message chat with `extra` fields; its status and body.
async fn chat_with(gw: &Gateway, content: &str, extra: Value) -> (StatusCode, Value) {
    status_and_json(gw.post(CHAT, &chat_body(content, extra)).await).await
}

/// The answer's content, parsed as JSON.
fn content_json(body: &Value) -> Value {
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {body}"));
    serde_json::from_str(content).unwrap_or_else(|e| panic!("not JSON ({e}): {content}"))
}

fn chat_body(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": "haiku", "messages": [{"role": "user", "content": content}]});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    body
}

#[tokio::test]
async fn chat_json_schema_answers_the_structured_value_as_content() {
    let gw = Gateway::start().await;
    let format = json!({"response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": true,
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    }}, "reasoning_effort": "low"});
    let (status, body) = chat_with(
        &gw,
        r#"chat-schema [[mock:structured {"n": 7}]] [[mock:text prose]]"#,
        format.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_json(&body), json!({"n": 7}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let calls = calls_with(&gw, "chat-schema");
    let tools = tool_names(&calls.first().expect("the prompt reached the API").body);
    assert!(tools.contains(&"StructuredOutput".to_owned()), "{tools:?}");

    // Streamed: one content chunk holding the whole value, never the prose around it.
    let mut streamed = chat_body(
        r#"chat-stream [[mock:structured {"n": 8}]] [[mock:text prose]]"#,
        format,
    );
    streamed["stream"] = json!(true);
    let data = common::sse_data(gw.post(CHAT, &streamed).await).await;
    let content: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&content).unwrap(),
        json!({"n": 8}),
        "{data:?}"
    );
}

#[tokio::test]
async fn chat_json_object_and_a_refusing_model() {
    let gw = Gateway::start().await;
    let json_object = json!({"response_format": {"type": "json_object"}});
    let (status, body) = chat_with(
        &gw,
        r#"[[mock:structured {"any": ["thing"]}]]"#,
        json_object.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_json(&body), json!({"any": ["thing"]}));

    // A model that never calls the tool: an OpenAI error, never a 200 with prose.
    let (status, body) = chat_with(
        &gw,
        "[[mock:structured refuse]] [[mock:text just prose]]",
        json_object,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "structured_output_failed", "{body}");
    assert_eq!(body["error"]["param"], "response_format", "{body}");
    assert!(
        !body.to_string().contains("\"content\":\"just prose\""),
        "{body}"
    );
}

#[tokio::test]
async fn chat_effort_over_the_cap_is_403_and_bad_formats_400() {
    let gw = Gateway::builder().arg("max-effort", "low").start().await;
    let (status, body) = chat_with(&gw, "hi", json!({"reasoning_effort": "high"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["param"], "reasoning_effort");
    let (status, body) = chat_with(&gw, "hi", json!({"response_format": {"type": "xml"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "response_format");
}
