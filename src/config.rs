//! Settings: every one is an environment variable (the names and defaults of the service this
//! gateway replaces) and a command-line flag. [`Settings`] is what clap parses; [`Config`] is the
//! validated form the rest of the gateway reads.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use gateway_layers::auth::Tokens;

/// The models the OpenAI-compatible route accepts unless `SUPPORTED_MODELS` says otherwise.
pub const DEFAULT_SUPPORTED_MODELS: &str =
    "haiku,sonnet,opus,claude-haiku-4-5,claude-sonnet-4-6,claude-opus-4-7";

/// The chat agent when a base repository is configured: the one the replaced service used.
pub const CONTRACT_CHAT_AGENT: &str = "recruiter-triage";

/// The chat agent when no base repository is configured: built into the CLI, so chat works out
/// of the box with nothing but the `claude` binary.
pub const BUILTIN_CHAT_AGENT: &str = "general-purpose";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// When a commit to the SQLite store reaches the disk (`SQLITE_SYNCHRONOUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    /// `synchronous=NORMAL`: an acknowledged job survives a crash of the gateway (kill -9, OOM,
    /// a container restart); a power loss may lose the last moments, never the file.
    Normal,
    /// `synchronous=FULL`: the log is synced to the disk on every commit, so an acknowledged job
    /// survives a power loss too.
    Full,
}

/// The file name of the default store, inside `JOBS_DIR`.
pub const DEFAULT_DATABASE_FILE: &str = "claude-gateway.db";

/// Where jobs are stored (`DATABASE_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In memory: gone when the process ends.
    Memory,
    /// A SQLite file, created if missing.
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// When a commit reaches the disk.
        sync: SqliteSync,
    },
}

/// The gateway's settings as given on the command line or in the environment.
#[derive(Clone, Parser)]
#[command(
    name = "claude-gateway",
    version,
    about = "Runs the Claude Code CLI behind HTTP: queued jobs (/execute) and an OpenAI-compatible chat API.",
    after_help = "Every flag can also be set by the environment variable shown beside it."
)]
pub struct Settings {
    /// Bearer token callers present (named `default` in logs). Required unless a tokens file is given.
    #[arg(long, env = "API_BEARER_TOKEN", hide_env_values = true)]
    pub api_bearer_token: Option<String>,

    /// File of accepted tokens, one per line as `name:token` (or a bare token), `#` comments
    /// allowed. Several tokens at once allow rotation without downtime.
    #[arg(long, env = "API_BEARER_TOKENS_FILE")]
    pub api_bearer_tokens_file: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// Warm base clone each run is cloned from; when missing, runs get an empty scratch directory.
    #[arg(long, env = "WORKSPACE_DIR", default_value = "/workspace/infra")]
    pub workspace_dir: PathBuf,

    /// Where per-run workspaces are created.
    #[arg(long, env = "JOBS_DIR", default_value = "/workspace/jobs")]
    pub jobs_dir: PathBuf,

    /// git-crypt key; when the file exists each workspace is unlocked with it.
    #[arg(long, env = "GIT_CRYPT_KEY", default_value = "/secrets/git-crypt/key")]
    pub git_crypt_key: PathBuf,

    /// Branch of `origin` the base is reset to after a fetch; default: the remote's default branch.
    #[arg(long, env = "BASE_BRANCH")]
    pub base_branch: Option<String>,

    /// Simultaneous agent runs.
    #[arg(long, env = "MAX_CONCURRENCY", default_value_t = 10)]
    pub max_concurrency: usize,

    /// Active plus queued runs past which callers are turned away.
    #[arg(long, env = "MAX_QUEUE_DEPTH", default_value_t = 100)]
    pub max_queue_depth: usize,

    /// Seconds a finished job is kept.
    #[arg(long, env = "JOB_TTL_SECONDS", default_value_t = 3600)]
    pub job_ttl_seconds: u64,

    /// Finished jobs kept at most; the oldest are forgotten first.
    #[arg(long, env = "MAX_FINISHED_JOBS", default_value_t = 10_000)]
    pub max_finished_jobs: usize,

    /// Bytes all finished jobs may hold together (prompts, outputs, stderr, events); past it the
    /// oldest finished jobs are forgotten first.
    #[arg(long, env = "MAX_STORED_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_stored_bytes: usize,

    /// Where jobs are stored: `sqlite://PATH` (a file, created if missing; `sqlite:///abs/path`
    /// or `sqlite://relative/path`), or `memory` (gone when the gateway stops) [default:
    /// `sqlite://` JOBS_DIR/claude-gateway.db].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// When a commit to the SQLite store reaches the disk: `normal` keeps every acknowledged job
    /// through a crash of the gateway, `full` through a power loss too (one disk sync per write).
    #[arg(long, env = "SQLITE_SYNCHRONOUS", value_enum, default_value = "normal")]
    pub sqlite_synchronous: SqliteSync,

    /// Most starts a caller may allow a job (`max_attempts` of `POST /execute`); past one, a job
    /// the gateway stopped while it ran is queued again instead of recorded as interrupted.
    #[arg(long, env = "MAX_JOB_ATTEMPTS", default_value_t = 3)]
    pub max_job_attempts: u32,

    /// Bytes of agent output kept per job (and of agent events in its event log); longer output
    /// is cut and the record says so.
    #[arg(long, env = "MAX_OUTPUT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_output_bytes: usize,

    /// A burst of runs shares one `git fetch` of the base within this many seconds.
    #[arg(long, env = "FETCH_DEBOUNCE_SECONDS", default_value_t = 15)]
    pub fetch_debounce_seconds: u64,

    /// Model ids `/v1/chat/completions` accepts, comma-separated.
    #[arg(long, env = "SUPPORTED_MODELS", default_value = DEFAULT_SUPPORTED_MODELS)]
    pub supported_models: String,

    /// Model used when a chat request names none.
    #[arg(long, env = "DEFAULT_MODEL", default_value = "sonnet")]
    pub default_model: String,

    /// Agent that serves chat completions [default: recruiter-triage with a base repository,
    /// general-purpose (built into the CLI) without one].
    #[arg(long, env = "OPENAI_COMPAT_AGENT")]
    pub openai_compat_agent: Option<String>,

    /// Budget in USD of one chat completion.
    #[arg(long, env = "OPENAI_COMPAT_BUDGET_USD", default_value_t = 2.0)]
    pub openai_compat_budget_usd: f64,

    /// Deadline in seconds of one chat completion's run (queue time not counted).
    #[arg(long, env = "OPENAI_COMPAT_TIMEOUT_SECONDS", default_value_t = 900)]
    pub openai_compat_timeout_seconds: u64,

    /// The claude CLI to run.
    #[arg(long, env = "CLAUDE_BIN", default_value = "claude")]
    pub claude_bin: PathBuf,

    /// Extra environment variable names passed to the agent, comma-separated (the gateway's own
    /// settings are never passed).
    #[arg(long, env = "AGENT_ENV_PASSTHROUGH", default_value = "")]
    pub agent_env_passthrough: String,

    /// An agent silent on stdout and stderr for this many seconds is taken as hung and killed.
    #[arg(long, env = "AGENT_INACTIVITY_TIMEOUT_SECONDS", default_value_t = 600)]
    pub agent_inactivity_timeout_seconds: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds a client has to send its request headers.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value_t = 30)]
    pub header_read_timeout_seconds: u64,

    /// Seconds in-flight work may take to finish after SIGTERM before it is stopped.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl fmt::Debug for Settings {
    // Written by hand so the token can never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field(
                "api_bearer_token",
                &self.api_bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("api_bearer_tokens_file", &self.api_bearer_tokens_file)
            .field("listen_addr", &self.listen_addr)
            .field("workspace_dir", &self.workspace_dir)
            .field("jobs_dir", &self.jobs_dir)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_queue_depth", &self.max_queue_depth)
            .finish_non_exhaustive()
    }
}

/// A setting that cannot be used; the binary prints it on one line and exits with status 2.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Accepted tokens, by name.
    pub tokens: Tokens,
    /// Address to listen on.
    pub listen_addr: SocketAddr,
    /// The warm base clone, when it exists; `None` means scratch workspaces.
    pub base_dir: Option<PathBuf>,
    /// Where per-run workspaces are created.
    pub jobs_dir: PathBuf,
    /// git-crypt key path.
    pub git_crypt_key: PathBuf,
    /// Branch the base is reset to, when not the remote's default.
    pub base_branch: Option<String>,
    /// Simultaneous runs.
    pub max_concurrency: usize,
    /// Active plus queued runs admitted at most.
    pub max_queue_depth: usize,
    /// How long finished jobs are kept.
    pub job_ttl: Duration,
    /// How many finished jobs are kept.
    pub max_finished_jobs: usize,
    /// Bytes all finished jobs may hold together.
    pub max_stored_bytes: usize,
    /// Bytes of output kept per job.
    pub max_output_bytes: usize,
    /// Where jobs are stored.
    pub store: StoreConfig,
    /// Most starts a job may be allowed.
    pub max_job_attempts: u32,
    /// Debounce window of the base refresh.
    pub fetch_debounce: Duration,
    /// Model ids chat accepts, in the order given.
    pub supported_models: Arc<[String]>,
    /// Model used when chat names none.
    pub default_model: String,
    /// Agent that serves chat.
    pub chat_agent: String,
    /// Budget of one chat run.
    pub chat_budget_usd: f64,
    /// Deadline of one chat run.
    pub chat_timeout: Duration,
    /// The claude CLI.
    pub claude_bin: PathBuf,
    /// Extra environment variable names passed to the agent.
    pub agent_env_passthrough: Vec<String>,
    /// Silence after which an agent is taken as hung.
    pub agent_inactivity_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time allowed for request headers.
    pub header_read_timeout: Duration,
    /// Grace period at shutdown.
    pub shutdown_grace: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Variables set in the agent's environment on top of what the allow-list picks from the
    /// gateway's own. Not a setting: for embedders and tests that run several gateways in one
    /// process, each against its own API endpoint.
    pub agent_env_overrides: Vec<(String, String)>,
}

impl Settings {
    /// Checks every setting and builds the [`Config`], or says in one line what to fix.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let tokens = load_tokens(
            self.api_bearer_token.as_deref(),
            self.api_bearer_tokens_file.as_deref(),
        )?;
        positive("MAX_CONCURRENCY", self.max_concurrency as u64)?;
        positive("MAX_QUEUE_DEPTH", self.max_queue_depth as u64)?;
        positive("JOB_TTL_SECONDS", self.job_ttl_seconds)?;
        positive("MAX_FINISHED_JOBS", self.max_finished_jobs as u64)?;
        positive("MAX_OUTPUT_BYTES", self.max_output_bytes as u64)?;
        positive("MAX_STORED_BYTES", self.max_stored_bytes as u64)?;
        positive("MAX_JOB_ATTEMPTS", u64::from(self.max_job_attempts))?;
        let store = store_config(
            self.database_url.as_deref(),
            &self.jobs_dir,
            self.sqlite_synchronous,
        )?;
        positive(
            "OPENAI_COMPAT_TIMEOUT_SECONDS",
            self.openai_compat_timeout_seconds,
        )?;
        positive(
            "AGENT_INACTIVITY_TIMEOUT_SECONDS",
            self.agent_inactivity_timeout_seconds,
        )?;
        positive("MAX_BODY_BYTES", self.max_body_bytes as u64)?;
        positive(
            "HEADER_READ_TIMEOUT_SECONDS",
            self.header_read_timeout_seconds,
        )?;
        if !(self.openai_compat_budget_usd.is_finite() && self.openai_compat_budget_usd > 0.0) {
            return Err(invalid(format!(
                "OPENAI_COMPAT_BUDGET_USD must be a positive number of dollars, got {}",
                self.openai_compat_budget_usd
            )));
        }
        let supported_models: Vec<String> = split_list(&self.supported_models);
        if supported_models.is_empty() {
            return Err(invalid("SUPPORTED_MODELS must list at least one model id"));
        }
        if !supported_models.contains(&self.default_model) {
            return Err(invalid(format!(
                "DEFAULT_MODEL {:?} is not in SUPPORTED_MODELS ({})",
                self.default_model,
                supported_models.join(",")
            )));
        }
        let base_dir = self.workspace_dir.is_dir().then_some(self.workspace_dir);
        let chat_agent = match self.openai_compat_agent {
            Some(agent) => {
                crate::agent::check_agent_name(&agent).map_err(|why| {
                    invalid(format!(
                        "OPENAI_COMPAT_AGENT {agent:?} is not usable: {why}"
                    ))
                })?;
                agent
            }
            None if base_dir.is_some() => CONTRACT_CHAT_AGENT.to_owned(),
            None => BUILTIN_CHAT_AGENT.to_owned(),
        };
        Ok(Config {
            tokens,
            listen_addr: self.listen_addr,
            base_dir,
            jobs_dir: self.jobs_dir,
            git_crypt_key: self.git_crypt_key,
            base_branch: self.base_branch.filter(|b| !b.trim().is_empty()),
            max_concurrency: self.max_concurrency,
            max_queue_depth: self.max_queue_depth,
            job_ttl: Duration::from_secs(self.job_ttl_seconds),
            max_finished_jobs: self.max_finished_jobs,
            max_stored_bytes: self.max_stored_bytes,
            max_output_bytes: self.max_output_bytes,
            store,
            max_job_attempts: self.max_job_attempts,
            fetch_debounce: Duration::from_secs(self.fetch_debounce_seconds),
            supported_models: supported_models.into(),
            default_model: self.default_model,
            chat_agent,
            chat_budget_usd: self.openai_compat_budget_usd,
            chat_timeout: Duration::from_secs(self.openai_compat_timeout_seconds),
            claude_bin: self.claude_bin,
            agent_env_passthrough: split_list(&self.agent_env_passthrough),
            agent_inactivity_timeout: Duration::from_secs(self.agent_inactivity_timeout_seconds),
            max_body_bytes: self.max_body_bytes,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            log_format: self.log_format,
            agent_env_overrides: Vec::new(),
        })
    }
}

/// The environment variable of every setting, taken from the flags themselves, so a setting can
/// never be missing here: the gateway withholds all of them from the agent.
pub(crate) fn setting_names() -> Vec<String> {
    use clap::CommandFactory;
    Settings::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

fn positive(name: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(invalid(format!("{name} must be at least 1")));
    }
    Ok(())
}

/// Reads `DATABASE_URL`: `memory`, `sqlite://PATH` (or `sqlite:PATH`), or by default the file
/// [`DEFAULT_DATABASE_FILE`] inside `jobs_dir`.
fn store_config(
    url: Option<&str>,
    jobs_dir: &Path,
    sync: SqliteSync,
) -> Result<StoreConfig, ConfigError> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(StoreConfig::Sqlite {
            path: jobs_dir.join(DEFAULT_DATABASE_FILE),
            sync,
        });
    };
    if url == "memory" {
        return Ok(StoreConfig::Memory);
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.contains('?') {
            return Err(invalid(
                "DATABASE_URL: options after `?` are not read; set SQLITE_SYNCHRONOUS instead",
            ));
        }
        if path.is_empty() || path == ":memory:" {
            return Err(invalid(
                "DATABASE_URL must name a file (sqlite:///var/lib/gateway/jobs.db), or be `memory`",
            ));
        }
        return Ok(StoreConfig::Sqlite {
            path: PathBuf::from(path),
            sync,
        });
    }
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    if matches!(scheme, "postgres" | "postgresql") {
        return Err(invalid(
            "DATABASE_URL: a PostgreSQL store is not available in this version; use sqlite://PATH or memory",
        ));
    }
    Err(invalid(
        "DATABASE_URL must be sqlite://PATH or memory (the scheme was not recognised)",
    ))
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Gathers the accepted tokens from `API_BEARER_TOKEN` and the tokens file.
fn load_tokens(single: Option<&str>, file: Option<&Path>) -> Result<Tokens, ConfigError> {
    let mut tokens = Tokens::new();
    if let Some(token) = single.map(str::trim).filter(|t| !t.is_empty()) {
        tokens.insert("default", token);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            invalid(format!(
                "API_BEARER_TOKENS_FILE {} cannot be read: {e}",
                path.display()
            ))
        })?;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, secret) = match line.split_once(':') {
                Some((name, secret)) => (name.trim().to_owned(), secret.trim()),
                None => (format!("token-{}", index + 1), line),
            };
            if name.is_empty() || secret.is_empty() {
                return Err(invalid(format!(
                    "API_BEARER_TOKENS_FILE {} line {}: expected `name:token`",
                    path.display(),
                    index + 1
                )));
            }
            tokens.insert(name, secret);
        }
    }
    if tokens.is_empty() {
        return Err(invalid(
            "no bearer token configured: set API_BEARER_TOKEN (or API_BEARER_TOKENS_FILE) so callers can authenticate",
        ));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["claude-gateway"];
        argv.extend_from_slice(args);
        Settings::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_setting_is_named_and_withheld_from_the_agent() {
        let names = setting_names();
        for name in [
            "API_BEARER_TOKEN",
            "API_BEARER_TOKENS_FILE",
            "GIT_CRYPT_KEY",
            "LOG_FORMAT",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        let source: Vec<(std::ffi::OsString, std::ffi::OsString)> = names
            .iter()
            .map(|name| (name.into(), "x".into()))
            .chain([("PATH".into(), "/bin".into())])
            .collect();
        let passed = crate::agent::allowed_env(&source, &names, &names);
        assert_eq!(passed, [("PATH".into(), "/bin".into())]);
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = parse(&["--api-bearer-token", "t"]).unwrap();
        assert_eq!(config.max_concurrency, 10);
        assert_eq!(config.max_queue_depth, 100);
        assert_eq!(config.job_ttl, Duration::from_secs(3600));
        assert_eq!(config.fetch_debounce, Duration::from_secs(15));
        assert_eq!(config.default_model, "sonnet");
        assert_eq!(config.supported_models.len(), 6);
        assert_eq!(config.chat_budget_usd, 2.0);
        assert_eq!(config.chat_timeout, Duration::from_secs(900));
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.jobs_dir, PathBuf::from("/workspace/jobs"));
    }

    #[test]
    fn the_store_defaults_to_a_file_in_jobs_dir_and_reads_database_url() {
        let config = parse(&["--api-bearer-token", "t", "--jobs-dir", "/srv/jobs"]).unwrap();
        assert_eq!(
            config.store,
            StoreConfig::Sqlite {
                path: PathBuf::from("/srv/jobs/claude-gateway.db"),
                sync: SqliteSync::Normal,
            }
        );
        assert_eq!(config.max_job_attempts, 3);
        let with = |url: &str| parse(&["--api-bearer-token", "t", "--database-url", url]);
        assert_eq!(with("memory").unwrap().store, StoreConfig::Memory);
        for (url, path) in [
            ("sqlite:///var/lib/gw/jobs.db", "/var/lib/gw/jobs.db"),
            ("sqlite://jobs.db", "jobs.db"),
            ("sqlite:jobs.db", "jobs.db"),
        ] {
            assert_eq!(
                with(url).unwrap().store,
                StoreConfig::Sqlite {
                    path: PathBuf::from(path),
                    sync: SqliteSync::Normal
                },
                "{url}"
            );
        }
        for bad in [
            "sqlite://",
            "sqlite::memory:",
            "sqlite://x.db?mode=rwc",
            "postgres://u:secret@db/jobs",
            "mysql://db",
            "jobs.db",
        ] {
            let err = with(bad).unwrap_err();
            assert!(err.starts_with("DATABASE_URL"), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let full = parse(&["--api-bearer-token", "t", "--sqlite-synchronous", "full"]).unwrap();
        assert!(matches!(
            full.store,
            StoreConfig::Sqlite {
                sync: SqliteSync::Full,
                ..
            }
        ));
    }

    #[test]
    fn no_token_says_what_to_set() {
        let err = parse(&[]).unwrap_err();
        assert!(err.contains("API_BEARER_TOKEN"), "{err}");
    }

    #[test]
    fn zero_capacity_is_refused() {
        let err = parse(&["--api-bearer-token", "t", "--max-concurrency", "0"]).unwrap_err();
        assert!(err.contains("MAX_CONCURRENCY"), "{err}");
    }

    #[test]
    fn default_model_must_be_supported() {
        let err = parse(&["--api-bearer-token", "t", "--default-model", "gpt-4"]).unwrap_err();
        assert!(err.contains("DEFAULT_MODEL"), "{err}");
    }

    #[test]
    fn tokens_file_accepts_named_and_bare_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# rotation\nold:abc\n\nxyz\n").unwrap();
        let config = parse(&["--api-bearer-tokens-file", file.to_str().unwrap()]).unwrap();
        assert_eq!(config.tokens.len(), 2);
    }

    #[test]
    fn chat_agent_defaults_to_a_builtin_without_a_base() {
        let config = parse(&[
            "--api-bearer-token",
            "t",
            "--workspace-dir",
            "/nonexistent/base",
        ])
        .unwrap();
        assert_eq!(config.chat_agent, BUILTIN_CHAT_AGENT);
        assert!(config.base_dir.is_none());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let settings = Settings::parse_from(["gw", "--api-bearer-token", "sekrit-value"]);
        assert!(!format!("{settings:?}").contains("sekrit-value"));
        let config = settings.validate().unwrap();
        assert!(!format!("{config:?}").contains("sekrit-value"));
    }
}
