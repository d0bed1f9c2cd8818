//! claude-gateway: the Claude Code CLI behind HTTP.
//!
//! A stack of tower layers (from the `gateway-layers` crate) ends in [`agent::ClaudeService`],
//! which runs `claude -p` in a fresh workspace. Two entry points share that stack:
//! `POST /v1/chat/completions` awaits a run, `POST /execute` starts one as a job. See
//! [`stack`] for the whole request path in order, and [`server::run`] to serve it.
#![deny(unsafe_code)]
#![warn(rust_2018_idioms)]

pub mod agent;
pub mod agent_name;
pub mod app;
pub mod config;
pub(crate) mod contain;
pub mod jobs;
pub mod metrics;
pub mod openai;
pub mod rescue;
pub mod routes;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod workspace;

pub use gateway_layers::BoxError;
pub use server::{run, serve};
