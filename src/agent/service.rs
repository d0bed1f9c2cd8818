//! The innermost service of the stack: runs the CLI for each request.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use gateway_layers::workspace::WorkspacePath;
use gateway_layers::BoxError;
use http::Request;

use super::config::ClaudeConfig;
use super::env::allowed_env;
use super::error::AgentError;
use super::home::{agent_home, HomeLeftovers};
use super::outcome::AgentOutcome;
use super::request::{AgentRequest, ProgressSink};
use super::run::run;

/// The response future of [`ClaudeService`]. Dropping it kills the agent's process group.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<AgentOutcome, BoxError>> + Send + 'static>>;

/// Runs the `claude` CLI for an [`AgentRequest`] in the request's workspace.
///
/// Reads two request extensions: [`WorkspacePath`] (required; put there by the workspace layer, the
/// run's working directory) and [`ProgressSink`] (optional; receives every stream-json event as it
/// arrives). Always ready: admission and concurrency are the layers' business. Cloning is cheap.
#[derive(Clone)]
pub struct ClaudeService {
    config: Arc<ClaudeConfig>,
    /// The agent's HOME, worked out once: each run's leftovers there are removed after it.
    agent_home: Option<Arc<PathBuf>>,
}

impl ClaudeService {
    /// A service running the CLI as `config` says.
    pub fn new(config: ClaudeConfig) -> Self {
        let agent_env = allowed_env(&config.env_source, &config.extra_env, &config.deny_env);
        Self {
            agent_home: agent_home(&agent_env).map(Arc::new),
            config: Arc::new(config),
        }
    }

    /// The settings this service runs with.
    pub fn config(&self) -> &ClaudeConfig {
        &self.config
    }
}

impl fmt::Debug for ClaudeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaudeService")
            .field("config", &self.config)
            .finish()
    }
}

impl tower::Service<Request<AgentRequest>> for ClaudeService {
    type Response = AgentOutcome;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<AgentRequest>) -> Self::Future {
        let config = Arc::clone(&self.config);
        let home = self.agent_home.as_deref().cloned();
        let (mut parts, body) = req.into_parts();
        let workspace = parts.extensions.remove::<WorkspacePath>();
        let progress = parts.extensions.remove::<ProgressSink>();
        Box::pin(async move {
            let WorkspacePath(dir) = workspace.ok_or(AgentError::NoWorkspace)?;
            let mut leftovers = HomeLeftovers::new(home, &dir);
            let outcome = run(&config, body, &dir, progress).await?;
            leftovers.session(outcome.session_id.as_deref());
            Ok(outcome)
        })
    }
}
