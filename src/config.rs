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

use crate::agent::{check_budget, Effort, OptionPolicy};
use crate::contain::{
    CgroupSetting, IsolationSetting, RunUidRange, SettingError, DEFAULT_LOCK_DIR,
};
use crate::policy::{Policies, PolicyBook};

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

/// A `postgres://` URL. It may hold a password, so its `Debug` form shows only the scheme.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl(postgres://…)")
    }
}

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
    /// A PostgreSQL database shared by every replica: one queue, one job store.
    Postgres {
        /// The `postgres://` URL, as given.
        url: DatabaseUrl,
    },
}

/// A setting that is a secret, or may hold one (a token, a password in a URL, a webhook URL whose
/// path is its key): its `Debug` form never shows it, so no `{:?}` of the settings can put it in a
/// log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The gateway's settings as given on the command line or in the environment.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "claude-gateway",
    version,
    about = "Runs the Claude Code CLI behind HTTP: queued jobs (/execute) and an OpenAI-compatible chat API.",
    after_help = "Every flag can also be set by the environment variable shown beside it."
)]
pub struct Settings {
    /// Bearer token callers present (named `default` in logs). Required unless a tokens file is given.
    #[arg(long, env = "API_BEARER_TOKEN", hide_env_values = true)]
    pub api_bearer_token: Option<Secret>,

    /// File of accepted tokens, one per line as `name:token` (or a bare token), `#` comments
    /// allowed. Several tokens at once allow rotation without downtime.
    #[arg(long, env = "API_BEARER_TOKENS_FILE")]
    pub api_bearer_tokens_file: Option<PathBuf>,

    /// TOML file of per-key policy (weight, max_concurrent, max_queued, budgets), keyed by the
    /// tokens' names; reloaded on SIGHUP and when it changes. Without it every key has weight 1
    /// and only the global bounds.
    #[arg(long, env = "API_KEY_POLICY_FILE")]
    pub api_key_policy_file: Option<PathBuf>,

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

    /// Checkouts of the base kept ready in the background, so a run starts without cloning;
    /// 0 clones each run's workspace when it starts [default: MAX_CONCURRENCY].
    #[arg(long, env = "WORKSPACE_POOL_SIZE")]
    pub workspace_pool_size: Option<usize>,

    /// Free space (MiB) on JOBS_DIR below which the warm pool gives back its checkouts and makes
    /// no more (runs still clone their own); 0 never shrinks it.
    #[arg(long, env = "WORKSPACE_POOL_MIN_FREE_MB", default_value_t = 512)]
    pub workspace_pool_min_free_mb: u64,

    /// Recycle used checkouts into the warm pool, proven back to their handed-over state, instead
    /// of removing them (uid isolation only; see the README's Warm pool).
    #[arg(long, env = "WORKSPACE_POOL_RECYCLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub workspace_pool_recycle: bool,

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
    /// or `sqlite://relative/path`), `postgres://USER@HOST/DB` (one database shared by several
    /// replicas: one queue, one job store), or `memory` (gone when the gateway stops) [default:
    /// `sqlite://` JOBS_DIR/claude-gateway.db].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// When a commit to the SQLite store reaches the disk: `normal` keeps every acknowledged job
    /// through a crash of the gateway, `full` through a power loss too (one disk sync per write).
    #[arg(long, env = "SQLITE_SYNCHRONOUS", value_enum, default_value = "normal")]
    pub sqlite_synchronous: SqliteSync,

    /// Most starts a caller may allow a job (`max_attempts` of `POST /execute`); past one, a job
    /// the gateway stopped while it ran is queued again instead of recorded as interrupted.
    #[arg(long, env = "MAX_JOB_ATTEMPTS", default_value_t = 3)]
    pub max_job_attempts: u32,

    /// This replica's name, recorded on every job it runs (`replica`) and its lease in a shared
    /// PostgreSQL store; must differ between replicas [default: the hostname].
    #[arg(long, env = "REPLICA_ID")]
    pub replica_id: Option<String>,

    /// With PostgreSQL: seconds a replica's lease lasts without renewal (it renews every third
    /// of it). A replica silent that long (killed, node lost) is taken for dead, and the jobs it
    /// ran are handled as after a restart (interrupted, or queued again).
    #[arg(long, env = "REPLICA_LEASE_SECONDS", default_value_t = 15)]
    pub replica_lease_seconds: u64,

    /// Bytes of agent output kept per job (and of agent events in its event log); longer output
    /// is cut and the record says so.
    #[arg(long, env = "MAX_OUTPUT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_output_bytes: usize,

    /// Bytes of session kept per job for `continue_from` (the agent's transcript and the run's
    /// workspace changes together); a larger session is not kept, and 0 keeps none. Counted in
    /// MAX_STORED_BYTES.
    #[arg(long, env = "MAX_SESSION_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_session_bytes: usize,

    /// Bytes of a job's patch (`GET /jobs/{id}/diff`) kept; a longer one is cut at a file
    /// boundary and `changes.truncated` says so.
    #[arg(long, env = "MAX_DIFF_BYTES", default_value_t = 1024 * 1024)]
    pub max_diff_bytes: usize,

    /// Author (and committer) of the commits delivery makes, as `Name <email>`.
    #[arg(
        long,
        env = "DELIVERY_AUTHOR",
        default_value = "claude-gateway <claude-gateway@localhost>"
    )]
    pub delivery_author: String,

    /// Whether `deliver` may push to the base branch itself.
    #[arg(long, env = "DELIVERY_ALLOW_BASE_BRANCH", default_value_t = false, action = clap::ArgAction::Set)]
    pub delivery_allow_base_branch: bool,

    /// Webhook URL for jobs that give no `callback_url`; unset: none.
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<Secret>,

    /// Secret webhooks are signed with (Standard Webhooks): `whsec_<base64>`, or any other text
    /// used as it is. Unset: webhooks are sent unsigned.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Where webhooks may go, comma-separated: host names (exact) and networks (`10.0.0.0/8`,
    /// `127.0.0.1/32`). Empty: no webhooks. Link-local and metadata addresses are refused
    /// whatever it says.
    #[arg(long, env = "WEBHOOK_ALLOW", default_value = "")]
    pub webhook_allow: String,

    /// Tries of one webhook before it is given up.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,

    /// Milliseconds before a failed webhook's first retry; each later wait doubles (at most an
    /// hour).
    #[arg(long, env = "WEBHOOK_RETRY_MS", default_value_t = 5000)]
    pub webhook_retry_ms: u64,

    /// Seconds one webhook request may take.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10)]
    pub webhook_timeout_seconds: u64,

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

    /// Seconds the gateway keeps answering after SIGTERM even when nothing runs (`/health` 503
    /// `shutting_down`, new runs 503), so a readiness probe fails and the endpoint is removed
    /// before the listener closes.
    #[arg(long, env = "SHUTDOWN_DELAY_SECONDS", default_value_t = 0)]
    pub shutdown_delay_seconds: u64,

    /// Seconds a client has to send a whole request body; past it the request is answered 408.
    /// No queue slot is taken before the body is in.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECONDS", default_value_t = 30)]
    pub body_read_timeout_seconds: u64,

    /// Bytes of prompts that queued runs may hold together; past it new runs are refused (429
    /// with `Retry-After`).
    #[arg(long, env = "MAX_QUEUED_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_queued_bytes: usize,

    /// Bytes that large responses (job records) may hold in memory together while they are
    /// sent; past it a record read waits briefly, then is answered 503 with `Retry-After`.
    #[arg(long, env = "MAX_RESPONSE_BYTES_IN_FLIGHT", default_value_t = 256 * 1024 * 1024)]
    pub max_response_bytes_in_flight: usize,

    /// Seconds a write to a client may stay blocked (the client stopped reading) before its
    /// connection is closed.
    #[arg(long, env = "WRITE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub write_timeout_seconds: u64,

    /// Connections served at once; further clients wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,

    /// Seconds a connection (HTTP/1 keep-alive or HTTP/2) may stay open with no request in
    /// flight before it is closed.
    #[arg(long, env = "CONNECTION_IDLE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub connection_idle_timeout_seconds: u64,

    /// Bytes of stream-json the agent may print that are forwarded as events; past it later
    /// events are dropped (the run goes on and keeps its final result).
    #[arg(long, env = "MAX_AGENT_STDOUT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_agent_stdout_bytes: usize,

    /// Largest `timeout_seconds` a job may ask for; more is answered 422.
    #[arg(long, env = "MAX_TIMEOUT_SECONDS", default_value_t = 24 * 60 * 60)]
    pub max_timeout_seconds: u64,

    /// Largest `max_budget_usd` a job may ask for; more is answered 422.
    #[arg(long, env = "MAX_BUDGET_USD", default_value_t = 100.0)]
    pub max_budget_usd: f64,

    /// Let jobs give `mcp_servers`: each is a program the run starts or a remote endpoint it
    /// calls, beyond what the operator installed. Off unless the operator trusts every caller.
    #[arg(long, env = "ALLOW_MCP_SERVERS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_mcp_servers: bool,

    /// Let jobs give `system_prompt`, replacing the default system prompt (and the agent's own
    /// instructions). `append_system_prompt` is always allowed.
    #[arg(long, env = "ALLOW_SYSTEM_PROMPT", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_system_prompt: bool,

    /// Let jobs define `agents` inline, with their own prompts and tools, instead of using the
    /// agents the repository ships.
    #[arg(long, env = "ALLOW_INLINE_AGENTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_inline_agents: bool,

    /// Let jobs choose `tools` and `allowed_tools`, which may offer tools the agent's definition
    /// leaves out. `disallowed_tools` only narrows and is always allowed.
    #[arg(long, env = "ALLOW_TOOLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_tools: bool,

    /// Largest `max_turns` a job may ask for; more is answered 403.
    #[arg(long, env = "MAX_TURNS", default_value_t = 200)]
    pub max_turns: u32,

    /// Highest `effort` (and chat `reasoning_effort`) a request may ask for: low, medium, high,
    /// xhigh or max; more is answered 403.
    #[arg(long, env = "MAX_EFFORT", default_value = "high")]
    pub max_effort: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// How runs are kept apart: `uid` (each run its own uid, HOME and workspace; needs root, or
    /// CAP_SETUID, CAP_SETGID and CAP_CHOWN; refuses to start without them), `process` (runs share
    /// the gateway's uid; their processes are still stopped with them) or `auto` (uid when
    /// possible, else process with a warning).
    #[arg(long, env = "ISOLATION", default_value = "auto")]
    pub isolation: String,

    /// Uids given to runs under uid isolation, one per run at a time, as FIRST-LAST; no account
    /// or group may use them (those are skipped).
    #[arg(long, env = "RUN_UID_RANGE", default_value = "61000-61999")]
    pub run_uid_range: String,

    /// Directory of the per-uid lock files that keep gateways on one host from sharing a run uid
    /// (made 0700 if missing; refused if others can write it).
    #[arg(long, env = "RUN_LOCK_DIR", default_value = DEFAULT_LOCK_DIR)]
    pub run_lock_dir: PathBuf,

    /// Where each run gets a cgroup (v2) of its own, which holds every process of the run and
    /// kills them all at once: `auto` (under the gateway's own cgroup when it is writable, as for
    /// root on a host or a delegated subtree; else runs are found through /proc), `off`, or a
    /// cgroup v2 directory (refuses to start if run cgroups cannot be made there).
    #[arg(long, env = "RUN_CGROUP", default_value = "auto")]
    pub run_cgroup: String,
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

/// `Name <email>` split in two.
fn parse_author(text: &str) -> Result<(String, String), ConfigError> {
    let bad = || invalid(format!("DELIVERY_AUTHOR {text:?} is not `Name <email>`"));
    let (name, rest) = text.split_once('<').ok_or_else(bad)?;
    let email = rest.strip_suffix('>').ok_or_else(bad)?;
    let name = name.trim();
    if name.is_empty() || email.trim().is_empty() || email.contains(['<', '>', '\n']) {
        return Err(bad());
    }
    Ok((name.to_owned(), email.trim().to_owned()))
}

/// The webhook settings.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `WEBHOOK_URL`: for jobs that give no `callback_url`.
    pub default_url: Option<Secret>,
    /// `WEBHOOK_SECRET`.
    pub secret: Option<WebhookSecret>,
    /// `WEBHOOK_ALLOW`.
    pub allow: WebhookAllow,
    /// `WEBHOOK_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// `WEBHOOK_RETRY_MS`.
    pub first_retry: Duration,
    /// `WEBHOOK_TIMEOUT_SECONDS`.
    pub timeout: Duration,
}

/// The key webhooks are signed with. Its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(pub Vec<u8>);

impl WebhookSecret {
    /// `whsec_<base64>` is the Standard Webhooks form (the key is the decoded bytes); any other
    /// text is the key as it is.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        use base64::Engine as _;
        match text.strip_prefix("whsec_") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(Self)
                .map_err(|_| {
                    invalid("WEBHOOK_SECRET starts with whsec_ but the rest is not base64")
                }),
            None => Ok(Self(text.as_bytes().to_vec())),
        }
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Where webhooks may go (`WEBHOOK_ALLOW`): host names, matched exactly, and networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookAllow {
    /// Host names, lowercase.
    pub hosts: Vec<String>,
    /// Networks an address may be in.
    pub networks: Vec<ipnet::IpNet>,
}

impl WebhookAllow {
    /// Reads the comma-separated list.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut allow = Self::default();
        for item in split_list(text) {
            if let Ok(net) = item.parse::<ipnet::IpNet>() {
                allow.networks.push(net);
            } else if let Ok(ip) = item.parse::<std::net::IpAddr>() {
                allow.networks.push(ipnet::IpNet::from(ip));
            } else if item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                allow.hosts.push(item.to_ascii_lowercase());
            } else {
                return Err(invalid(format!(
                    "WEBHOOK_ALLOW: {item:?} is neither a host name nor a network"
                )));
            }
        }
        Ok(allow)
    }

    /// Whether nothing is allowed (no webhooks at all).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.networks.is_empty()
    }

    /// Whether `host` is listed by name.
    pub fn lists_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Whether a webhook may connect to `addr` of a host that is (`listed`) or is not listed by
    /// name: never a link-local, metadata, unspecified, multicast or broadcast address; else
    /// when the host is listed or the address is in a listed network.
    pub fn permits(&self, addr: std::net::IpAddr, listed: bool) -> bool {
        if never_called(addr) {
            return false;
        }
        listed || self.networks.iter().any(|net| net.contains(&addr))
    }
}

/// Addresses no webhook ever goes to: link-local (the cloud metadata services live there), the
/// other known metadata addresses, and addresses that are not one host.
pub fn never_called(addr: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 0
                // Alibaba Cloud's metadata service.
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return never_called(IpAddr::V4(v4));
            }
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6.is_multicast()
                // AWS's metadata service over IPv6.
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Accepted tokens, by name.
    pub tokens: Tokens,
    /// Per-key policy, read from `API_KEY_POLICY_FILE` (every key on the defaults without it).
    pub policies: Arc<Policies>,
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
    /// Checkouts the warm pool keeps ready (0: none).
    pub workspace_pool_size: usize,
    /// Free bytes on `JOBS_DIR` below which the pool shrinks.
    pub workspace_pool_min_free_bytes: u64,
    /// Whether used checkouts are recycled into the pool.
    pub workspace_pool_recycle: bool,
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
    /// Bytes of session (transcript and changes) kept per job; 0 keeps none.
    pub max_session_bytes: usize,
    /// Bytes of a job's patch kept.
    pub max_diff_bytes: usize,
    /// Name and e-mail of delivery commits' author.
    pub delivery_author: (String, String),
    /// Whether delivery may push to the base branch.
    pub delivery_allow_base_branch: bool,
    /// Webhooks: default URL, secret, allow-list, retries.
    pub webhooks: WebhookSettings,
    /// Where jobs are stored.
    pub store: StoreConfig,
    /// Most starts a job may be allowed.
    pub max_job_attempts: u32,
    /// This replica's name (`REPLICA_ID`, by default the hostname).
    pub replica_id: String,
    /// How long a replica's lease lasts without renewal (`REPLICA_LEASE_SECONDS`).
    pub replica_lease: Duration,
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
    /// The executable that serves a run's caller functions as an MCP server
    /// (`<bin> functions-mcp …`): not a setting, the gateway's own executable; an embedder whose
    /// process is not the gateway's binary points it at one.
    pub functions_bin: PathBuf,
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
    /// Time the gateway keeps answering (as shutting down) after SIGTERM before closing.
    pub shutdown_delay: Duration,
    /// Time allowed for a whole request body.
    pub body_read_timeout: Duration,
    /// Bytes of prompts queued runs may hold together.
    pub max_queued_bytes: usize,
    /// Bytes large responses may hold together while they are sent.
    pub max_response_bytes_in_flight: usize,
    /// Time a blocked write may take before the connection is closed.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a connection may stay open with no request in flight.
    pub connection_idle_timeout: Duration,
    /// Bytes of agent stdout forwarded as events.
    pub max_agent_stdout_bytes: usize,
    /// Largest `timeout_seconds` of a job.
    pub max_timeout_seconds: u64,
    /// Largest `max_budget_usd` of a job.
    pub max_budget_usd: f64,
    /// Which caller options are allowed, and their caps.
    pub option_policy: OptionPolicy,
    /// Log format.
    pub log_format: LogFormat,
    /// The tokens file, when one is used: a secret that no run may read.
    pub(crate) tokens_file: Option<PathBuf>,
    /// How runs are kept apart.
    pub(crate) isolation: IsolationSetting,
    /// Uids runs may take under uid isolation.
    pub(crate) run_uid_range: RunUidRange,
    /// Where the per-uid locks live.
    pub(crate) run_lock_dir: PathBuf,
    /// Where run cgroups are made.
    pub(crate) run_cgroup: CgroupSetting,
    /// Variables set in the agent's environment on top of what the allow-list picks from the
    /// gateway's own. Not a setting: for embedders and tests that run several gateways in one
    /// process, each against its own API endpoint.
    pub agent_env_overrides: Vec<(String, String)>,
}

impl Settings {
    /// Checks every setting and builds the [`Config`], or says in one line what to fix.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let tokens = load_tokens(
            self.api_bearer_token.as_ref().map(Secret::expose),
            self.api_bearer_tokens_file.as_deref(),
        )?;
        let policies = match &self.api_key_policy_file {
            Some(path) => {
                let known = tokens.names().map(str::to_owned).collect();
                Policies::load(path, known)
                    .map_err(|e| invalid(format!("API_KEY_POLICY_FILE {}: {e}", path.display())))?
            }
            None => Policies::fixed(PolicyBook::default()),
        };
        positive("MAX_CONCURRENCY", self.max_concurrency as u64)?;
        positive("MAX_QUEUE_DEPTH", self.max_queue_depth as u64)?;
        positive("JOB_TTL_SECONDS", self.job_ttl_seconds)?;
        positive("MAX_FINISHED_JOBS", self.max_finished_jobs as u64)?;
        positive("MAX_OUTPUT_BYTES", self.max_output_bytes as u64)?;
        positive("MAX_STORED_BYTES", self.max_stored_bytes as u64)?;
        positive("MAX_JOB_ATTEMPTS", u64::from(self.max_job_attempts))?;
        positive("REPLICA_LEASE_SECONDS", self.replica_lease_seconds)?;
        let replica_id = replica_id(self.replica_id.as_deref())?;
        let store = store_config(
            self.database_url.as_ref().map(Secret::expose),
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
        positive("BODY_READ_TIMEOUT_SECONDS", self.body_read_timeout_seconds)?;
        positive("MAX_QUEUED_BYTES", self.max_queued_bytes as u64)?;
        positive(
            "MAX_RESPONSE_BYTES_IN_FLIGHT",
            self.max_response_bytes_in_flight as u64,
        )?;
        positive("WRITE_TIMEOUT_SECONDS", self.write_timeout_seconds)?;
        positive("MAX_CONNECTIONS", self.max_connections as u64)?;
        positive(
            "CONNECTION_IDLE_TIMEOUT_SECONDS",
            self.connection_idle_timeout_seconds,
        )?;
        positive("MAX_AGENT_STDOUT_BYTES", self.max_agent_stdout_bytes as u64)?;
        positive("MAX_TIMEOUT_SECONDS", self.max_timeout_seconds)?;
        positive("MAX_TURNS", u64::from(self.max_turns))?;
        let max_effort: Effort = self
            .max_effort
            .parse()
            .map_err(|e: String| invalid(format!("MAX_EFFORT: {e}")))?;
        check_budget("MAX_BUDGET_USD", self.max_budget_usd).map_err(invalid)?;
        check_budget("OPENAI_COMPAT_BUDGET_USD", self.openai_compat_budget_usd).map_err(invalid)?;
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
        let isolation: IsolationSetting = self
            .isolation
            .parse()
            .map_err(|e: SettingError| invalid(e.to_string()))?;
        let run_uid_range: RunUidRange = self
            .run_uid_range
            .parse()
            .map_err(|e: SettingError| invalid(format!("RUN_UID_RANGE: {e}")))?;
        let run_cgroup: CgroupSetting = self
            .run_cgroup
            .parse()
            .map_err(|e: SettingError| invalid(e.to_string()))?;
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
            policies: Arc::new(policies),
            listen_addr: self.listen_addr,
            base_dir,
            jobs_dir: self.jobs_dir,
            git_crypt_key: self.git_crypt_key,
            base_branch: self.base_branch.filter(|b| !b.trim().is_empty()),
            max_concurrency: self.max_concurrency,
            workspace_pool_size: self.workspace_pool_size.unwrap_or(self.max_concurrency),
            workspace_pool_min_free_bytes: self
                .workspace_pool_min_free_mb
                .saturating_mul(1024 * 1024),
            workspace_pool_recycle: self.workspace_pool_recycle,
            max_queue_depth: self.max_queue_depth,
            job_ttl: Duration::from_secs(self.job_ttl_seconds),
            max_finished_jobs: self.max_finished_jobs,
            max_stored_bytes: self.max_stored_bytes,
            max_output_bytes: self.max_output_bytes,
            max_session_bytes: self.max_session_bytes,
            max_diff_bytes: self.max_diff_bytes,
            delivery_author: parse_author(&self.delivery_author)?,
            delivery_allow_base_branch: self.delivery_allow_base_branch,
            webhooks: WebhookSettings {
                default_url: self.webhook_url.filter(|u| !u.expose().trim().is_empty()),
                secret: self
                    .webhook_secret
                    .filter(|s| !s.expose().is_empty())
                    .map(|s| WebhookSecret::parse(s.expose()))
                    .transpose()?,
                allow: WebhookAllow::parse(&self.webhook_allow)?,
                max_attempts: self.webhook_max_attempts.max(1),
                first_retry: Duration::from_millis(self.webhook_retry_ms.max(1)),
                timeout: Duration::from_secs(self.webhook_timeout_seconds.max(1)),
            },
            store,
            max_job_attempts: self.max_job_attempts,
            replica_id,
            replica_lease: Duration::from_secs(self.replica_lease_seconds),
            fetch_debounce: Duration::from_secs(self.fetch_debounce_seconds),
            supported_models: supported_models.into(),
            default_model: self.default_model,
            chat_agent,
            chat_budget_usd: self.openai_compat_budget_usd,
            chat_timeout: Duration::from_secs(self.openai_compat_timeout_seconds),
            claude_bin: self.claude_bin,
            functions_bin: std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("claude-gateway")),
            agent_env_passthrough: split_list(&self.agent_env_passthrough),
            agent_inactivity_timeout: Duration::from_secs(self.agent_inactivity_timeout_seconds),
            max_body_bytes: self.max_body_bytes,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            shutdown_delay: Duration::from_secs(self.shutdown_delay_seconds),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_seconds),
            max_queued_bytes: self.max_queued_bytes,
            max_response_bytes_in_flight: self.max_response_bytes_in_flight,
            write_timeout: Duration::from_secs(self.write_timeout_seconds),
            max_connections: self.max_connections,
            connection_idle_timeout: Duration::from_secs(self.connection_idle_timeout_seconds),
            max_agent_stdout_bytes: self.max_agent_stdout_bytes,
            max_timeout_seconds: self.max_timeout_seconds,
            max_budget_usd: self.max_budget_usd,
            option_policy: OptionPolicy {
                allow_mcp_servers: self.allow_mcp_servers,
                allow_system_prompt: self.allow_system_prompt,
                allow_inline_agents: self.allow_inline_agents,
                allow_tools: self.allow_tools,
                max_turns: self.max_turns,
                max_effort,
            },
            log_format: self.log_format,
            tokens_file: self.api_bearer_tokens_file,
            isolation,
            run_uid_range,
            run_lock_dir: self.run_lock_dir,
            run_cgroup,
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
        url.parse::<sqlx::postgres::PgConnectOptions>().map_err(|_| {
            invalid("DATABASE_URL: not a valid postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        })?;
        return Ok(StoreConfig::Postgres {
            url: DatabaseUrl(url.to_owned()),
        });
    }
    Err(invalid(
        "DATABASE_URL must be sqlite://PATH, postgres://... or memory (the scheme was not recognised)",
    ))
}

/// The longest `REPLICA_ID`.
const MAX_REPLICA_ID: usize = 128;

/// `REPLICA_ID`, or the hostname: printable, without spaces, at most [`MAX_REPLICA_ID`] bytes.
fn replica_id(given: Option<&str>) -> Result<String, ConfigError> {
    let id = match given.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "claude-gateway".to_owned()),
    };
    if id.len() > MAX_REPLICA_ID || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(format!(
            "REPLICA_ID must be at most {MAX_REPLICA_ID} printable ASCII characters without spaces"
        )));
    }
    Ok(id)
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Shortest token accepted, in bytes: a one-character token is a typo or a placeholder, and
/// guessable.
pub const MIN_TOKEN_BYTES: usize = 8;

/// The tokens read so far, checked as they come: no token shorter than [`MIN_TOKEN_BYTES`], no
/// name twice, no token under two names (it would be logged under either, at random).
#[derive(Default)]
struct TokenSet {
    /// What the gateway accepts.
    tokens: Tokens,
    /// Names and tokens read so far; dropped with the set once loading is done.
    seen: Vec<(String, String)>,
}

impl TokenSet {
    fn insert(&mut self, name: String, secret: &str, origin: &str) -> Result<(), ConfigError> {
        if secret.len() < MIN_TOKEN_BYTES {
            return Err(invalid(format!(
                "{origin}: the token named {name:?} is shorter than {MIN_TOKEN_BYTES} characters"
            )));
        }
        for (other, other_secret) in &self.seen {
            if *other == name {
                return Err(invalid(format!(
                    "{origin}: the name {name:?} is given to two tokens"
                )));
            }
            if other_secret == secret {
                return Err(invalid(format!(
                    "{origin}: the token named {name:?} is the same as the one named {other:?}"
                )));
            }
        }
        self.seen.push((name.clone(), secret.to_owned()));
        self.tokens.insert(name, secret);
        Ok(())
    }
}

/// Gathers the accepted tokens from `API_BEARER_TOKEN` and the tokens file.
fn load_tokens(single: Option<&str>, file: Option<&Path>) -> Result<Tokens, ConfigError> {
    let mut tokens = TokenSet::default();
    if let Some(token) = single.map(str::trim).filter(|t| !t.is_empty()) {
        tokens.insert("default".to_owned(), token, "API_BEARER_TOKEN")?;
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
            let origin = format!(
                "API_BEARER_TOKENS_FILE {} line {}",
                path.display(),
                index + 1
            );
            tokens.insert(name, secret, &origin)?;
        }
    }
    let tokens = tokens.tokens;
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
        let config = parse(&["--api-bearer-token", "test-token"]).unwrap();
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
        let config = parse(&[
            "--api-bearer-token",
            "test-token",
            "--jobs-dir",
            "/srv/jobs",
        ])
        .unwrap();
        assert_eq!(
            config.store,
            StoreConfig::Sqlite {
                path: PathBuf::from("/srv/jobs/claude-gateway.db"),
                sync: SqliteSync::Normal,
            }
        );
        assert_eq!(config.max_job_attempts, 3);
        let with = |url: &str| parse(&["--api-bearer-token", "test-token", "--database-url", url]);
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
            "postgres://u:secret@db:notaport/jobs",
            "mysql://db",
            "jobs.db",
        ] {
            let err = with(bad).unwrap_err();
            assert!(err.starts_with("DATABASE_URL"), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let shared = with("postgres://u:secret@db:5432/jobs").unwrap().store;
        assert_eq!(
            shared,
            StoreConfig::Postgres {
                url: DatabaseUrl("postgres://u:secret@db:5432/jobs".into())
            }
        );
        assert!(!format!("{shared:?}").contains("secret"));
        let full = parse(&[
            "--api-bearer-token",
            "test-token",
            "--sqlite-synchronous",
            "full",
        ])
        .unwrap();
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
        let err =
            parse(&["--api-bearer-token", "test-token", "--max-concurrency", "0"]).unwrap_err();
        assert!(err.contains("MAX_CONCURRENCY"), "{err}");
    }

    #[test]
    fn default_model_must_be_supported() {
        let err = parse(&[
            "--api-bearer-token",
            "test-token",
            "--default-model",
            "gpt-4",
        ])
        .unwrap_err();
        assert!(err.contains("DEFAULT_MODEL"), "{err}");
    }

    #[test]
    fn tokens_file_accepts_named_and_bare_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# rotation\nold:abc-defgh\n\nxyz-uvwxy\n").unwrap();
        let config = parse(&["--api-bearer-tokens-file", file.to_str().unwrap()]).unwrap();
        assert_eq!(config.tokens.len(), 2);
    }

    #[test]
    fn chat_agent_defaults_to_a_builtin_without_a_base() {
        let config = parse(&[
            "--api-bearer-token",
            "test-token",
            "--workspace-dir",
            "/nonexistent/base",
        ])
        .unwrap();
        assert_eq!(config.chat_agent, BUILTIN_CHAT_AGENT);
        assert!(config.base_dir.is_none());
    }

    #[test]
    fn debug_shows_every_setting_but_never_a_secret() {
        let settings = Settings::parse_from([
            "gw",
            "--api-bearer-token",
            "sekrit-token",
            "--database-url",
            "postgres://gw:sekrit-password@db/jobs",
            "--webhook-url",
            "https://hooks.example/sekrit-path",
            "--webhook-secret",
            "sekrit-key",
            "--webhook-allow",
            "hooks.example",
        ]);
        let shown = format!("{settings:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        // Derived: every setting is there, down to the last one.
        assert!(shown.contains("run_cgroup: \"auto\""), "{shown}");
        assert!(
            shown.contains("api_bearer_token: Some(<redacted>)"),
            "{shown}"
        );
        let config = settings.validate().unwrap();
        assert!(!format!("{config:?}").contains("sekrit"), "{config:?}");
    }
}
