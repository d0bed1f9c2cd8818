//! The official OpenAI SDKs (Python from PyPI, JavaScript from npm, pinned under tests/clients)
//! against the gateway, with the real CLI behind it and the mock Anthropic API behind that.

mod common;

use std::time::Duration;

use common::{clients_dir, run_tool, Gateway, TOKEN};

async fn run_client(program: &str, script: &str, gw: &Gateway, full: &Gateway, marker: &str) {
    let stdout = run_tool(
        script,
        Duration::from_secs(240),
        tokio::process::Command::new(program)
            .arg(clients_dir().join(script))
            .current_dir(clients_dir())
            .env("GATEWAY_URL", &gw.url)
            .env("GATEWAY_TOKEN", TOKEN)
            .env("FULL_GATEWAY_URL", &full.url)
            .env("MARKER", marker),
    )
    .await;
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// A gateway for the client's calls, and a full one (one slot, a queue of one) for its full-queue check.
async fn gateways() -> (Gateway, Gateway) {
    let full = Gateway::builder()
        .arg("max-concurrency", 1)
        .arg("max-queue-depth", 1)
        .start();
    tokio::join!(Gateway::start(), full)
}

fn mock_saw(gw: &Gateway, needle: &str) -> bool {
    gw.mock
        .requests()
        .iter()
        .any(|request| request.body.to_string().contains(needle))
}

#[tokio::test]
async fn the_python_sdk_works_against_the_gateway() {
    let (gw, full) = gateways().await;
    let python = clients_dir().join(".venv/bin/python");
    run_client(
        python.to_str().unwrap(),
        "python_sdk.py",
        &gw,
        &full,
        "pelican42",
    )
    .await;
    assert!(
        mock_saw(&gw, "pelican42"),
        "the earlier user turn reached the API"
    );
    assert!(
        mock_saw(&gw, "pelican42-assistant"),
        "the earlier assistant turn reached the API"
    );
}

#[tokio::test]
async fn the_node_sdk_works_against_the_gateway() {
    let (gw, full) = gateways().await;
    run_client("node", "node_sdk.mjs", &gw, &full, "walrus17").await;
    assert!(
        mock_saw(&gw, "walrus17-node"),
        "the earlier user turn reached the API"
    );
}
