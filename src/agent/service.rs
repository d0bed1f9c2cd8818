//! The innermost service of the stack: runs the CLI for each request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use gateway_layers::workspace::WorkspacePath;
use gateway_layers::BoxError;
use http::Request;

use super::config::ClaudeConfig;
use super::error::AgentError;
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
}

impl ClaudeService {
    /// A service running the CLI as `config` says.
    pub fn new(config: ClaudeConfig) -> Self {
        Self {
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
        let (mut parts, body) = req.into_parts();
        let workspace = parts.extensions.remove::<WorkspacePath>();
        let progress = parts.extensions.remove::<ProgressSink>();
        Box::pin(async move {
            let WorkspacePath(dir) = workspace.ok_or(AgentError::NoWorkspace)?;
            Ok(run(&config, body, &dir, progress).await?)
        })
    }
}
