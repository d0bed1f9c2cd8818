//! The official Anthropic SDKs (Python from PyPI, TypeScript from npm, pinned under tests/clients)
//! against the gateway's Messages route, with the real CLI behind it and the mock Anthropic API
//! behind that: create, stream, system prompt, multi-turn, and the SDKs' error classes for a bad
//! key, an unknown model and a full queue.

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

/// Whether a Messages call the CLI made to the mock carried `needle` anywhere in its text.
fn mock_saw(gw: &Gateway, needle: &str) -> bool {
    gw.mock
        .message_requests()
        .iter()
        .any(|request| request.all_text().contains(needle))
}

/// What the client script's system-prompt and multi-turn calls must have brought to the model.
fn assert_mock_saw_the_conversation(gw: &Gateway, marker: &str) {
    for (needle, what) in [
        ("-system", "the system prompt"),
        ("-user", "the earlier user turn"),
        ("-assistant", "the earlier assistant turn"),
    ] {
        assert!(
            mock_saw(gw, &format!("{marker}{needle}")),
            "{what} reached the API"
        );
    }
}

#[tokio::test]
async fn the_anthropic_python_sdk_works_against_the_gateway() {
    let (gw, full) = gateways().await;
    let python = clients_dir().join(".venv/bin/python");
    run_client(
        python.to_str().unwrap(),
        "anthropic_python.py",
        &gw,
        &full,
        "heron61",
    )
    .await;
    assert_mock_saw_the_conversation(&gw, "heron61");
}

#[tokio::test]
async fn the_anthropic_node_sdk_works_against_the_gateway() {
    let (gw, full) = gateways().await;
    run_client("node", "anthropic_node.mjs", &gw, &full, "otter23").await;
    assert_mock_saw_the_conversation(&gw, "otter23");
}
