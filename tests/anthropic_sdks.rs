//! The official Anthropic SDKs (Python from PyPI, TypeScript from npm, pinned under tests/clients)
//! against the gateway's Messages route, with the real CLI behind it and the mock Anthropic API
//! behind that: create, stream, system prompt, multi-turn, and the SDKs' error classes for a bad
//! key, an unknown model and a full queue.

mod common;

use common::sdk::{gateways, run_client, Sdk};
use common::Gateway;

/// Whether a Messages call the CLI made to the mock carried `needle` anywhere in its text.
fn mock_saw(gw: &Gateway, needle: &str) -> bool {
    gw.mock
        .message_requests()
        .iter()
        .any(|request| request.all_text().contains(needle))
}

/// Runs the client `script` with `marker`, and checks that its system-prompt and multi-turn calls
/// brought the whole conversation to the model.
async fn check_sdk(sdk: Sdk, script: &str, marker: &str) {
    let (gw, full) = gateways().await;
    run_client(sdk, script, &gw, Some(&full), marker).await;
    for (needle, what) in [
        ("-system", "the system prompt"),
        ("-user", "the earlier user turn"),
        ("-assistant", "the earlier assistant turn"),
    ] {
        assert!(
            mock_saw(&gw, &format!("{marker}{needle}")),
            "{what} reached the API"
        );
    }
}

#[tokio::test]
async fn the_anthropic_python_sdk_works_against_the_gateway() {
    check_sdk(Sdk::Python, "anthropic_python.py", "heron61").await;
}

#[tokio::test]
async fn the_anthropic_node_sdk_works_against_the_gateway() {
    check_sdk(Sdk::Node, "anthropic_node.mjs", "otter23").await;
}
