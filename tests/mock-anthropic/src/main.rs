//! `mock-anthropic`: a mock of the Anthropic Messages API, for trying the gateway without an
//! Anthropic account or network: `cargo run -p mock-anthropic`, then start the gateway with
//! `ANTHROPIC_BASE_URL=http://127.0.0.1:4010` and `ANTHROPIC_API_KEY=anything` in the agent's
//! environment. Listens on `$MOCK_ADDR` (default `127.0.0.1:4010`) until Ctrl-C and prints the
//! `[[mock:...]]` directives a prompt can use to choose the answer.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match mock_anthropic::run_from_env().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-anthropic: {e}");
            ExitCode::FAILURE
        }
    }
}
