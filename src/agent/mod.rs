//! The claude service: runs the Claude Code CLI as a child process, one run per request.
//!
//! [`ClaudeService`] is the innermost `tower::Service` of the gateway's stack. For each
//! `http::Request<`[`AgentRequest`]`>` it starts `claude -p --agent A --output-format stream-json
//! --verbose --no-session-persistence ...` in the request's workspace and answers an
//! [`AgentOutcome`] or an [`AgentError`] (boxed).
//!
//! What it guarantees, each the fix of a defect of the service it replaces:
//!
//! - the prompt goes to stdin, never to argv, so it may be any size and start with `-`;
//! - stdout and stderr are read concurrently, each capped in bytes, so a chatty agent can neither
//!   deadlock the run nor exhaust memory;
//! - the child gets an allow-listed environment (`allowed_env`) and never the gateway's secrets;
//! - the child leads its own process group, and the whole group is killed with SIGKILL when the
//!   run ends or its future is dropped (timeout, cancel, client gone, shutdown);
//! - an agent silent for [`ClaudeConfig::inactivity_timeout`] is stopped as hung;
//! - the token usage and cost the CLI reports are kept.
//!
//! # Example
//!
//! ```no_run
//! use claude_gateway::agent::{AgentRequest, ClaudeConfig, ClaudeService};
//! use gateway_layers::workspace::WorkspacePath;
//! use tower::ServiceExt;
//!
//! # async fn demo() -> Result<(), gateway_layers::BoxError> {
//! let svc = ClaudeService::new(ClaudeConfig::default());
//! let mut req = http::Request::new(AgentRequest {
//!     prompt: "Summarise the README".into(),
//!     agent: "general-purpose".into(),
//!     model: None,
//!     max_budget_usd: 1.0,
//!     partial_messages: false,
//!     options: Default::default(),
//! });
//! req.extensions_mut().insert(WorkspacePath("/tmp/job".into()));
//! let outcome = svc.oneshot(req).await?;
//! println!("{:?} cost ${:?}", outcome.text, outcome.cost_usd);
//! # Ok(())
//! # }
//! ```

mod command;
pub mod functions;
mod home;
mod options;
mod outcome;
mod output;
mod run;
mod service;
mod session;
mod step;

#[cfg(test)]
mod fixture_tests;

#[cfg(test)]
pub(crate) use command::allowed_env;
pub(crate) use command::check_agent_name;
pub use command::{claude_args, AgentRequest, ProgressSink};
pub use functions::{CallerFunctions, Function, FunctionCall};
pub use options::{check_budget, Effort, OptionError, OptionPolicy, RunOptions};
pub(crate) use outcome::one_line;
pub use outcome::{AgentError, AgentOutcome, RateLimit, Usage};
pub use service::{
    ClaudeConfig, ClaudeService, ResponseFuture, DEFAULT_INACTIVITY_TIMEOUT, DEFAULT_STDERR_CAP,
    DEFAULT_STDOUT_CAP,
};
pub use session::{KeepSession, ResumeSession, SavedSession};
pub(crate) use step::{Below, RunFuture, RunStep, StepLayer};
