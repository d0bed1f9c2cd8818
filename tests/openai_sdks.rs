//! The official OpenAI SDKs (Python from PyPI, JavaScript from npm, pinned under tests/clients)
//! against the gateway, with the real CLI behind it and the mock Anthropic API behind that.

mod common;

use common::sdk::{gateways, run_client, Sdk};

#[tokio::test]
async fn the_python_sdk_works_against_the_gateway() {
    let (gw, full) = gateways().await;
    run_client(Sdk::Python, "python_sdk.py", &gw, Some(&full), "pelican42").await;
    assert!(
        gw.mock_saw("pelican42"),
        "the earlier user turn reached the API"
    );
    assert!(
        gw.mock_saw("pelican42-assistant"),
        "the earlier assistant turn reached the API"
    );
}

#[tokio::test]
async fn the_node_sdk_works_against_the_gateway() {
    let (gw, full) = gateways().await;
    run_client(Sdk::Node, "node_sdk.mjs", &gw, Some(&full), "walrus17").await;
    assert!(
        gw.mock_saw("walrus17-node"),
        "the earlier user turn reached the API"
    );
}
