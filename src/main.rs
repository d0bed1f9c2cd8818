//! The `claude-gateway` binary: settings from flags and environment, then serve until SIGTERM or
//! SIGINT.

use std::process::ExitCode;

use clap::Parser;
use claude_gateway::agent::functions;
use claude_gateway::app::App;
use claude_gateway::config::Settings;
use claude_gateway::{serve, telemetry};

fn main() -> ExitCode {
    // Not a setting: how a run's CLI starts the MCP server of the caller's functions (see
    // `claude_gateway::agent::functions`); hidden from `--help`.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(functions::SUBCOMMAND)) {
        let definitions = args.next().unwrap_or_default();
        return match functions::serve_stdio(&definitions.to_string_lossy()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("claude-gateway {}: {error}", functions::SUBCOMMAND);
                ExitCode::FAILURE
            }
        };
    }
    // clap itself exits with status 2 on a malformed flag or value.
    let config = match Settings::parse().validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("claude-gateway: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("claude-gateway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = config.listen_addr;
        let app = match App::build(config).await {
            Ok(app) => app,
            Err(error) => {
                eprintln!("claude-gateway: {error}");
                return ExitCode::from(2);
            }
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("claude-gateway: cannot listen on {addr}: {error}");
                return ExitCode::FAILURE;
            }
        };
        serve(app, listener, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the gateway");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
