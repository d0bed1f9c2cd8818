//! The harness of the SDK tests: runs one of the client scripts under tests/clients (an official
//! SDK, pinned there) against harness gateways, and looks at what reached the mock API.

use std::time::Duration;

use super::{clients_dir, run_tool, Gateway, TOKEN};

/// Which interpreter runs a client script.
#[derive(Clone, Copy)]
pub enum Sdk {
    /// The pinned Python SDKs, in tests/clients/.venv.
    Python,
    /// The pinned JavaScript SDKs, in tests/clients/node_modules.
    Node,
}

/// Runs `script` to its end against `gw` (and `full`, a gateway whose queue is full, for the
/// scripts that check the SDK's error class for it), with `marker` for the script to put in its
/// prompts; panics unless the script says all its checks passed.
pub async fn run_client(
    sdk: Sdk,
    script: &str,
    gw: &Gateway,
    full: Option<&Gateway>,
    marker: &str,
) {
    let mut command = match sdk {
        Sdk::Python => tokio::process::Command::new(clients_dir().join(".venv/bin/python")),
        Sdk::Node => tokio::process::Command::new("node"),
    };
    command
        .arg(clients_dir().join(script))
        .current_dir(clients_dir())
        .env("GATEWAY_URL", &gw.url)
        .env("GATEWAY_TOKEN", TOKEN)
        .env("MARKER", marker);
    if let Some(full) = full {
        command.env("FULL_GATEWAY_URL", &full.url);
    }
    let stdout = run_tool(script, Duration::from_secs(240), &mut command).await;
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// A gateway for the client's calls, and a full one (one slot, a queue of one) for its
/// full-queue check.
pub async fn gateways() -> (Gateway, Gateway) {
    let full = Gateway::builder()
        .arg("max-concurrency", 1)
        .arg("max-queue-depth", 1)
        .start();
    tokio::join!(Gateway::start(), full)
}
