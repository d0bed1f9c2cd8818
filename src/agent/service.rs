//! The innermost service of the stack: runs the CLI for each request.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use gateway_layers::workspace::WorkspacePath;
use gateway_layers::BoxError;
use http::Request;

use crate::contain::Cells;

use super::command::{allowed_env, AgentRequest, ProgressSink};
use super::functions::{CallerFunctions, SERVER};
use super::home::{agent_home, HomeLeftovers};
use super::outcome::{AgentError, AgentOutcome};
use super::run::run;
use super::session::{self, KeepSession, ResumeSession, SessionArgs};

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
    /// The agent's HOME, worked out once: each run's leftovers there are removed after it (runs
    /// without a cell of their own share it).
    agent_home: Option<Arc<PathBuf>>,
    /// The runs' cells by workspace, when runs are contained: a run whose workspace has one runs
    /// as that run, with its own HOME.
    cells: Option<Arc<Cells>>,
}

impl ClaudeService {
    /// A service running the CLI as `config` says.
    pub fn new(config: ClaudeConfig) -> Self {
        let agent_env = allowed_env(&config.env_source, &config.extra_env, &config.withheld_env);
        Self {
            agent_home: agent_home(&agent_env).map(Arc::new),
            config: Arc::new(config),
            cells: None,
        }
    }

    /// Runs each request as the run whose cell `cells` files under its workspace.
    pub(crate) fn with_cells(mut self, cells: Arc<Cells>) -> Self {
        self.cells = Some(cells);
        self
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
        let cells = self.cells.clone();
        let (mut parts, body) = req.into_parts();
        let workspace = parts.extensions.remove::<WorkspacePath>();
        let progress = parts.extensions.remove::<ProgressSink>();
        let keep = parts.extensions.remove::<KeepSession>();
        let resume = parts.extensions.remove::<ResumeSession>();
        let functions = parts.extensions.remove::<CallerFunctions>();
        let mut body = body;
        if let Some(functions) = &functions {
            body.options
                .mcp_servers
                .get_or_insert_with(Default::default)
                .insert(SERVER.to_owned(), functions.server_config());
        }
        Box::pin(async move {
            let WorkspacePath(dir) = workspace.ok_or(AgentError::NoWorkspace)?;
            let placed = cells.and_then(|cells| cells.get(&dir));
            // A run with its own HOME leaves nothing in the shared one; that HOME goes with it.
            let mut leftovers = HomeLeftovers::new(home.filter(|_| placed.is_none()), &dir);
            let sessions =
                Sessions::prepare(&config, &dir, placed.as_deref(), keep, resume).await?;
            let mut outcome = run(
                &config,
                body,
                &dir,
                progress,
                placed.as_deref(),
                &sessions.args,
                functions.is_some(),
            )
            .await?;
            sessions.finish(&mut outcome).await;
            leftovers.session(outcome.session_id.as_deref());
            Ok(outcome)
        })
    }
}

/// One run's dealings with sessions: what is restored before it, what is kept after it.
struct Sessions<'a> {
    /// The CLI's session arguments.
    args: SessionArgs,
    /// Keep the session, at most this many bytes, with what is needed to take it.
    keep: Option<Keeping<'a>>,
}

/// What taking a session at the end of a run needs.
struct Keeping<'a> {
    max_bytes: usize,
    workspace: &'a std::path::Path,
    placed: &'a crate::contain::PlacedCell,
    env: Vec<(OsString, OsString)>,
    /// The commit the checkout started at (`None`: a scratch directory).
    start: Option<String>,
}

impl<'a> Sessions<'a> {
    /// Restores the session to resume (failing the run when it cannot be), and notes what
    /// keeping one will need. Sessions need a run of its own (a cell and a HOME).
    async fn prepare(
        config: &ClaudeConfig,
        workspace: &'a std::path::Path,
        placed: Option<&'a crate::contain::PlacedCell>,
        keep: Option<KeepSession>,
        resume: Option<ResumeSession>,
    ) -> Result<Sessions<'a>, AgentError> {
        let mut args = SessionArgs::default();
        if keep.is_none() && resume.is_none() {
            return Ok(Self { args, keep: None });
        }
        let env = allowed_env(&config.env_source, &config.extra_env, &config.withheld_env);
        let Some(placed) = placed else {
            if resume.is_some() {
                return Err(AgentError::Resume {
                    reason: "runs without a cell of their own cannot resume sessions".into(),
                });
            }
            return Ok(Self { args, keep: None });
        };
        args.persist = true;
        // Read before the earlier changes are applied and before the agent commits anything.
        let start = match keep {
            Some(_) => session::start_commit(workspace, placed, &env).await,
            None => None,
        };
        if let Some(ResumeSession(saved)) = resume {
            session::restore(&saved, workspace, placed, &env)
                .await
                .map_err(|reason| AgentError::Resume { reason })?;
            args.resume = Some(saved.session_id);
        }
        let keep = keep.map(|keep| Keeping {
            max_bytes: keep.max_bytes,
            workspace,
            placed,
            env,
            start,
        });
        Ok(Self { args, keep })
    }

    /// Takes the session the run leaves into `outcome`, when asked to.
    async fn finish(self, outcome: &mut AgentOutcome) {
        let Some(keep) = self.keep else {
            return;
        };
        let Some(id) = outcome.session_id.clone() else {
            outcome.session_not_kept = Some("the CLI reported no session".into());
            return;
        };
        match session::capture(
            &id,
            keep.start.as_deref(),
            keep.workspace,
            keep.placed,
            &keep.env,
            keep.max_bytes,
        )
        .await
        {
            Ok(saved) => outcome.session = Some(saved),
            Err(reason) => {
                tracing::warn!(session_id = %id, %reason, "session not kept");
                outcome.session_not_kept = Some(reason);
            }
        }
    }
}

/// Default cap on the agent events a run forwards (and on one stdout line).
pub const DEFAULT_STDOUT_CAP: usize = 16 * 1024 * 1024;
/// Default cap on the stderr kept for the caller; the rest is read and dropped.
pub const DEFAULT_STDERR_CAP: usize = 1024 * 1024;
/// Default time without a byte on stdout or stderr after which the agent is considered hung.
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);

/// Settings of the [`ClaudeService`](super::ClaudeService), fixed at start-up.
#[derive(Clone)]
pub struct ClaudeConfig {
    /// The CLI to run (`CLAUDE_BIN`); a bare name is looked up on the `PATH` the agent receives.
    pub bin: PathBuf,
    /// Extra variable names a setting passes through to the agent, beyond the built-in allow-list.
    pub extra_env: Vec<String>,
    /// Names never passed through, whatever `extra_env` says: the embedding application's own
    /// settings (the gateway lists every variable its flags read).
    pub withheld_env: Vec<String>,
    /// Bytes of stream-json events forwarded to the run's progress sink; later events are dropped
    /// (the run goes on and keeps its final result). Also the longest stdout line kept: a run
    /// whose only lines are longer ends with
    /// [`AgentError::OutputTooLarge`](super::AgentError::OutputTooLarge), so a flood is never
    /// held in memory.
    pub stdout_cap: usize,
    /// Bytes of stderr kept; the rest is drained and dropped so the agent never blocks on a full pipe.
    pub stderr_cap: usize,
    /// No byte on stdout or stderr for this long means the agent hung: the run is stopped with
    /// [`AgentError::Hung`](super::AgentError::Hung) long before its deadline.
    pub inactivity_timeout: Duration,
    /// The parent environment the allow-list picks from, snapshotted at start-up so tests can inject
    /// their own and a later `set_var` cannot change what agents see.
    pub env_source: Vec<(OsString, OsString)>,
}

impl Default for ClaudeConfig {
    /// `claude` on `PATH`, default caps and timeout, and the current process environment.
    fn default() -> Self {
        Self {
            bin: PathBuf::from("claude"),
            extra_env: Vec::new(),
            withheld_env: Vec::new(),
            stdout_cap: DEFAULT_STDOUT_CAP,
            stderr_cap: DEFAULT_STDERR_CAP,
            inactivity_timeout: DEFAULT_INACTIVITY_TIMEOUT,
            env_source: std::env::vars_os().collect(),
        }
    }
}

impl fmt::Debug for ClaudeConfig {
    // The environment holds API keys: print only how many variables the snapshot has.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaudeConfig")
            .field("bin", &self.bin)
            .field("extra_env", &self.extra_env)
            .field("withheld_env", &self.withheld_env)
            .field("stdout_cap", &self.stdout_cap)
            .field("stderr_cap", &self.stderr_cap)
            .field("inactivity_timeout", &self.inactivity_timeout)
            .field(
                "env_source",
                &format_args!("<{} variables>", self.env_source.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_environment_values() {
        let config = ClaudeConfig {
            env_source: vec![("ANTHROPIC_API_KEY".into(), "sk-secret".into())],
            ..ClaudeConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<1 variables>"), "{shown}");
    }
}
