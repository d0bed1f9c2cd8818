//! The official OpenAI SDKs (Python from PyPI, JavaScript from npm, pinned under tests/clients)
//! against the gateway, with the real CLI behind it and the mock Anthropic API behind that.

mod common;

use common::sdk::{gateways, run_client, Sdk};

/// Runs the client `script` with `marker`, then checks that each of `turns` (a text the script
/// sent, and which turn it was) reached the API.
async fn check_sdk(sdk: Sdk, script: &str, marker: &str, turns: &[(&str, &str)]) {
    let (gw, full) = gateways().await;
    run_client(sdk, script, &gw, Some(&full), marker).await;
    for (needle, what) in turns {
        assert!(gw.mock_saw(needle), "{what} reached the API");
    }
}

#[tokio::test]
async fn the_python_sdk_works_against_the_gateway() {
    let turns = [
        ("pelican42", "the earlier user turn"),
        ("pelican42-assistant", "the earlier assistant turn"),
    ];
    check_sdk(Sdk::Python, "python_sdk.py", "pelican42", &turns).await;
}

#[tokio::test]
async fn the_node_sdk_works_against_the_gateway() {
    let turns = [("walrus17-node", "the earlier user turn")];
    check_sdk(Sdk::Node, "node_sdk.mjs", "walrus17", &turns).await;
}
