//! The official OpenAI SDKs (Python and JavaScript, pinned under tests/clients) against the
//! gateway's Responses API and function calling, with the real CLI behind it and the mock
//! Anthropic API behind that: `responses.create`, `responses.stream`, `previous_response_id`, and
//! tool loops on chat completions (both SDKs) and on Responses (Python).

mod common;

use std::time::Duration;

use common::{clients_dir, run_tool, Gateway, TOKEN};

async fn run_client(program: &str, script: &str, gw: &Gateway, marker: &str) {
    let stdout = run_tool(
        script,
        Duration::from_secs(240),
        tokio::process::Command::new(program)
            .arg(clients_dir().join(script))
            .current_dir(clients_dir())
            .env("GATEWAY_URL", &gw.url)
            .env("GATEWAY_TOKEN", TOKEN)
            .env("MARKER", marker),
    )
    .await;
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// Whether a request the mock received holds `needle`.
fn mock_saw(gw: &Gateway, needle: &str) -> bool {
    gw.mock
        .requests()
        .iter()
        .any(|request| request.body.to_string().contains(needle))
}

/// Whether a request offered the agent the caller's `get_weather` as an MCP tool.
fn offered_get_weather(gw: &Gateway) -> bool {
    mock_saw(gw, "mcp__caller__get_weather")
}

#[tokio::test]
async fn the_python_sdk_speaks_responses_and_tool_calls() {
    let gw = Gateway::start().await;
    let python = clients_dir().join(".venv/bin/python");
    run_client(
        python.to_str().unwrap(),
        "python_responses.py",
        &gw,
        "heron61",
    )
    .await;
    assert!(
        mock_saw(&gw, "heron61-responses"),
        "the turn before previous_response_id reached the API"
    );
    assert!(
        offered_get_weather(&gw),
        "the caller's function was offered as a tool"
    );
}

#[tokio::test]
async fn the_node_sdk_speaks_responses_and_tool_calls() {
    let gw = Gateway::start().await;
    run_client("node", "node_responses.mjs", &gw, "ibis29").await;
    assert!(
        mock_saw(&gw, "ibis29-node-responses"),
        "the turn before previous_response_id reached the API"
    );
    assert!(
        offered_get_weather(&gw),
        "the caller's function was offered as a tool"
    );
}
