//! The official OpenAI SDKs (Python and JavaScript, pinned under tests/clients) against the
//! gateway's Responses API and function calling, with the real CLI behind it and the mock
//! Anthropic API behind that: `responses.create`, `responses.stream`, `previous_response_id`, and
//! tool loops on chat completions (both SDKs) and on Responses (Python).

mod common;

use common::sdk::{run_client, Sdk};
use common::Gateway;

/// Runs the client `script` with `marker`, and checks that the turn before
/// `previous_response_id` (tagged `marker` + `tag`) reached the API and that the caller's
/// `get_weather` was offered to the agent as an MCP tool.
async fn check_sdk(sdk: Sdk, script: &str, marker: &str, tag: &str) {
    let gw = Gateway::start().await;
    run_client(sdk, script, &gw, None, marker).await;
    assert!(
        gw.mock_saw(&format!("{marker}{tag}")),
        "the turn before previous_response_id reached the API"
    );
    assert!(
        gw.mock_saw("mcp__caller__get_weather"),
        "the caller's function was offered as a tool"
    );
}

#[tokio::test]
async fn the_python_sdk_speaks_responses_and_tool_calls() {
    check_sdk(Sdk::Python, "python_responses.py", "heron61", "-responses").await;
}

#[tokio::test]
async fn the_node_sdk_speaks_responses_and_tool_calls() {
    check_sdk(Sdk::Node, "node_responses.mjs", "ibis29", "-node-responses").await;
}
