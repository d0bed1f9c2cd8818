//! claude-gateway: the Claude Code CLI behind HTTP.
//!
//! A stack of tower layers (from the `gateway-layers` crate) ends in [`agent::ClaudeService`],
//! which runs `claude -p` in a fresh workspace. Two entry points share that stack:
//! `POST /v1/chat/completions` and `POST /v1/responses` await a run, `POST /execute` starts one as
//! a job.
//!
//! The modules, from the bottom of the house up (each imports only from below it):
//!
//! | module | what it holds |
//! |---|---|
//! | `contain` | run containment: per-run uids or markers, kill-everything, per-run directories |
//! | [`agent`] | the claude service: command line, allow-listed environment, process, output, the caller's functions as MCP tools; the shape of the gateway's own steps around a run (`RunStep`) |
//! | [`policy`] | per-key policy (weights, per-key limits, budgets) from `API_KEY_POLICY_FILE`, reloaded while running |
//! | [`config`] | the settings, as flags and environment variables |
//! | [`workspace`] | the git provisioner: a fresh checkout of the warm base per run; what a run changed, and its delivery |
//! | `metrics` | Prometheus counters and the run timer |
//! | `requeue` | a chat run refused by the account's rate limit goes back to the queue once |
//! | `run` | one home for a run: the agent stack, its error classification, its metrics |
//! | [`jobs`] | job records, stores, event logs, the task that runs a job, webhooks |
//! | `openai` | OpenAI wire types (chat, Responses), function calling, prompt rendering, errors, streaming |
//! | `bounds` | what a caller can make the gateway hold: the intake of run requests (body deadline, queue slot, queued bytes) and the budget of large responses |
//! | `anthropic` | Anthropic Messages wire types, prompt rendering, errors, stream events |
//! | `state`, `routes`, `telemetry`, `stack` | the HTTP side: handlers and the stack around them |
//! | [`app`], [`server`] | the composition root, and serving it with graceful shutdown |
//!
//! [`app::App::build`] makes a gateway from a [`config::Config`]; [`serve`] or [`run`] serve it.
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod agent;
mod anthropic;
pub mod app;
mod bounds;
pub mod config;
mod contain;
pub mod jobs;
mod metrics;
mod openai;
pub mod policy;
mod quota;
mod requeue;
mod routes;
mod run;
pub mod server;
mod stack;
mod state;
pub mod telemetry;
pub mod workspace;

pub use gateway_layers::BoxError;
pub use server::{run, serve};
