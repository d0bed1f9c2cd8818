//! `mock-anthropic`: serves the mock Anthropic Messages API on `$MOCK_ADDR` (default
//! `127.0.0.1:4010`) until Ctrl-C.

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
