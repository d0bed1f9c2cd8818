//! Measures what the gateway costs: `cargo run --release --example bench`.
//!
//! Prints markdown tables of
//!
//! 1. the overhead per chat completion over running the real CLI directly, both against the mock
//!    Anthropic API (needs `tests/cli/node_modules/.bin/claude`);
//! 2. throughput and latency with an agent that answers at once, with scratch workspaces and with
//!    workspaces cloned from a 5,000-file base repository;
//! 3. how long a job waits for its workspace from that base, one at a time and eight at once,
//!    next to a plain `git clone --local`;
//! 4. memory held per finished job and per queued job;
//! 5. durable submissions: `POST /execute` per second and its latency at 1 and 16 clients, with
//!    the SQLite store (the default) next to the memory store.
//!
//! `cargo run --release --example bench -- durable` runs only the job store's measurements: the
//! submissions of 5, and the memory held with `BENCH_FINISHED` (default 10,000) finished jobs in
//! each store.
//!
//! Sizes can be changed in the environment: `BENCH_RUNS` (direct-vs-gateway runs, default 10),
//! `BENCH_REQUESTS` (throughput requests with scratch workspaces, default 200),
//! `BENCH_BASE_REQUESTS` (throughput requests with the base, default 48), `BENCH_PROVISIONS`
//! (sequential provisions, default 10), `BENCH_ROUNDS` (rounds of eight provisions at once,
//! default 2), `BENCH_JOBS` (jobs in the memory measurements, default 1000), `BENCH_SUBMISSIONS`
//! (submissions measured per store and client count, default 4000) and `BENCH_FINISHED` (finished
//! jobs of the `durable` mode's memory measurement, default 10,000).
//!
//! Temporary directories (workspaces, the base repository) go where `TMPDIR` says; the figures
//! of 2 and 3 are mostly the cost of creating and removing 5,000 files on that filesystem.
//!
//! The memory figures are taken in a child process (this binary re-run with a hidden argument),
//! so that the other measurements' allocations neither inflate nor hide them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use claude_gateway::app::{App, AppState};
use claude_gateway::config::{Config, Settings};
use claude_gateway::workspace::{GitProvisioner, WorkspaceConfig};
use claude_gateway::BoxError;
use gateway_layers::workspace::Provision;
use mock_anthropic::MockAnthropic;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// The token the bench's gateways accept.
const TOKEN: &str = "bench-token";

/// The flags the gateway gives the CLI for a chat completion with `model: haiku` (see
/// `src/agent/command.rs`), so the direct runs do the same work.
const CLI_ARGS: &[&str] = &[
    "-p",
    "--agent",
    "general-purpose",
    "--dangerously-skip-permissions",
    "--max-budget-usd",
    "2",
    "--output-format",
    "stream-json",
    "--verbose",
    "--no-session-persistence",
    "--model",
    "haiku",
];

/// The prompt of every run.
const PROMPT: &str = "Say hello in one short sentence.";

/// A stand-in agent that reads its prompt and answers at once.
const INSTANT_AGENT: &str = r#"#!/bin/bash
cat > /dev/null
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s","total_cost_usd":0,"usage":{"input_tokens":1,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}'
"#;

/// A stand-in agent that never answers, so every job behind it stays queued.
const HANGING_AGENT: &str = "#!/bin/bash\ncat > /dev/null\nexec sleep 600\n";

/// The hidden first argument that makes this binary a memory-measuring child.
const MEMORY_CHILD: &str = "__bench-memory-child";

/// The first argument that runs only the job store's measurements.
const DURABLE_MODE: &str = "durable";

/// The stores compared: a label and the settings that select it.
const STORES: &[(&str, &[(&str, &str)])] = &[
    ("SQLite (default, `SQLITE_SYNCHRONOUS=normal`)", &[]),
    (
        "SQLite, `SQLITE_SYNCHRONOUS=full`",
        &[("--sqlite-synchronous", "full")],
    ),
    (
        "memory (`DATABASE_URL=memory`)",
        &[("--database-url", "memory")],
    ),
];

/// Jobs submitted at once while filling the store with finished jobs.
const FINISHED_ROUND: usize = 100;

/// Client counts of the submission measurement.
const SUBMIT_CLIENTS: [usize; 2] = [1, 16];

/// Files and directories of the large base repository.
const BASE_FILES: usize = 5_000;
const BASE_DIRS: usize = 50;

/// Concurrent clients of the throughput measurement.
const CLIENTS: usize = 16;
/// Runs at once in the throughput measurement.
const THROUGHPUT_CONCURRENCY: usize = 8;
/// Provisions started together.
const PARALLEL_PROVISIONS: usize = 8;

/// How much of each measurement to do, from the environment.
struct Sizes {
    /// Direct and gateway runs of the real CLI, each.
    runs: usize,
    /// Throughput requests with scratch workspaces.
    requests: usize,
    /// Throughput requests with the 5,000-file base (each one clones it).
    base_requests: usize,
    /// Sequential provisions, and as many plain clones.
    provisions: usize,
    /// Rounds of [`PARALLEL_PROVISIONS`] provisions at once.
    rounds: usize,
    /// Jobs submitted in each memory measurement.
    jobs: usize,
    /// Submissions measured per store and client count.
    submissions: usize,
    /// Finished jobs held in the `durable` mode's memory measurement.
    finished: usize,
}

impl Sizes {
    fn from_env() -> Result<Self, BoxError> {
        Ok(Self {
            runs: env_count("BENCH_RUNS", 10)?,
            requests: env_count("BENCH_REQUESTS", 200)?,
            base_requests: env_count("BENCH_BASE_REQUESTS", 48)?,
            provisions: env_count("BENCH_PROVISIONS", 10)?,
            rounds: env_count("BENCH_ROUNDS", 2)?,
            jobs: env_count("BENCH_JOBS", 1000)?,
            submissions: env_count("BENCH_SUBMISSIONS", 4000)?,
            finished: env_count("BENCH_FINISHED", 10_000)?,
        })
    }
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some(MEMORY_CHILD) => runtime.block_on(memory_child(&args[1..])),
        Some(DURABLE_MODE) => runtime.block_on(durable_bench()),
        _ => runtime.block_on(bench()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a positive count from the environment, or `default`.
fn env_count(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} must be a positive whole number, got {value:?}").into()),
        },
        Err(_) => Ok(default),
    }
}

async fn bench() -> Result<(), BoxError> {
    let started = Instant::now();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    let sizes = Sizes::from_env()?;

    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/node_modules/.bin/claude");
    if !cli.exists() {
        return Err(format!(
            "the claude CLI is not installed at {}: install it with `npm ci --prefix tests/cli` \
             (./scripts/test does it) and run the bench again",
            cli.display()
        )
        .into());
    }

    // Scripts are written before anything is spawned: a file still open for writing in one
    // thread while another forks makes exec fail with ETXTBSY.
    let scripts = tempfile::tempdir()?;
    let instant = write_script(scripts.path(), "instant.sh", INSTANT_AGENT)?;
    let hanging = write_script(scripts.path(), "hang.sh", HANGING_AGENT)?;

    eprintln!("building the {BASE_FILES}-file base repository...");
    let repos = BaseRepo::build()?;

    let mut out = String::new();
    writeln!(out, "## claude-gateway bench\n")?;
    writeln!(
        out,
        "Machine: {cpus} CPUs (nproc), load average at start {} (1, 5, 15 min), temporary files on {} ({}), {}, claude CLI {}.\n",
        load.join(" "),
        std::env::temp_dir().display(),
        filesystem_of(&std::env::temp_dir()),
        command_line("git", &["--version"]).await,
        command_line(&cli.display().to_string(), &["--version"]).await,
    )?;

    eprintln!("1/5 direct CLI vs gateway...");
    out.push_str(&overhead(&cli, sizes.runs).await?);
    eprintln!("2/5 throughput...");
    out.push_str(&throughput(&instant, &repos.base, &sizes).await?);
    eprintln!("3/5 workspace provisioning...");
    out.push_str(&provisioning(&repos.base, &sizes).await?);
    eprintln!("4/5 memory per job...");
    out.push_str(&memory(&instant, &hanging, sizes.jobs).await?);
    eprintln!("5/5 durable submissions...");
    out.push_str(&submissions(&hanging, sizes.submissions).await?);

    writeln!(
        out,
        "\nWhole bench: {:.0} s.",
        started.elapsed().as_secs_f64()
    )?;
    println!("{out}");
    Ok(())
}

/// The first line a command prints, or `unknown`.
async fn command_line(program: &str, args: &[&str]) -> String {
    match tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("unknown")
            .trim()
            .to_owned(),
        _ => "unknown".to_owned(),
    }
}

fn write_script(dir: &Path, name: &str, text: &str) -> Result<PathBuf, BoxError> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Statistics and tables

/// Order statistics of a set of durations.
struct Summary {
    n: usize,
    min: Duration,
    median: Duration,
    p90: Duration,
    p99: Duration,
    mean: Duration,
    max: Duration,
}

impl Summary {
    fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let n = sorted.len();
        if n == 0 {
            return Self {
                n,
                min: Duration::ZERO,
                median: Duration::ZERO,
                p90: Duration::ZERO,
                p99: Duration::ZERO,
                mean: Duration::ZERO,
                max: Duration::ZERO,
            };
        }
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let rank = |p: f64| sorted[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        };
        let total: Duration = sorted.iter().sum();
        Self {
            n,
            min: sorted[0],
            median,
            p90: rank(90.0),
            p99: rank(99.0),
            mean: total / n as u32,
            max: sorted[n - 1],
        }
    }
}

/// Milliseconds with one decimal.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Min, median, p90, p99 and max as table cells.
fn spread(s: &Summary) -> String {
    format!(
        "{} | {} | {} | {} | {}",
        ms(s.min),
        ms(s.median),
        ms(s.p90),
        ms(s.p99),
        ms(s.max)
    )
}

const LATENCY_HEADER: &str =
    "| what | n | min | median | p90 | mean | max |\n|---|---:|---:|---:|---:|---:|---:|\n";

fn latency_row(label: &str, s: &Summary) -> String {
    format!(
        "| {label} | {} | {} | {} | {} | {} | {} |\n",
        s.n,
        ms(s.min),
        ms(s.median),
        ms(s.p90),
        ms(s.mean),
        ms(s.max)
    )
}

// ---------------------------------------------------------------------------------------------
// An in-process gateway

/// A gateway served on 127.0.0.1 in this process.
struct Gateway {
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// Its shared state, to watch the queue without going through HTTP.
    state: AppState,
    /// Asks it to shut down.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task, awaited at shutdown.
    server: tokio::task::JoinHandle<()>,
    /// Its `JOBS_DIR`, removed after it.
    _jobs_dir: tempfile::TempDir,
}

/// What differs between the bench's gateways.
struct GatewaySpec<'a> {
    claude_bin: &'a Path,
    base: Option<&'a Path>,
    max_concurrency: usize,
    max_queue_depth: usize,
    fetch_debounce_seconds: u64,
    /// Set in the agent's environment.
    agent_env: Vec<(String, String)>,
}

impl Gateway {
    async fn start(spec: GatewaySpec<'_>) -> Result<Self, BoxError> {
        Self::start_with(spec, &[]).await
    }

    /// Starts a gateway with `extra` flags (`("--flag", "value")`) after the spec's.
    async fn start_with(spec: GatewaySpec<'_>, extra: &[(&str, &str)]) -> Result<Self, BoxError> {
        let jobs_dir = tempfile::tempdir()?;
        let argv: Vec<String> = vec![
            "claude-gateway".into(),
            "--api-bearer-token".into(),
            TOKEN.into(),
            "--listen-addr".into(),
            "127.0.0.1:0".into(),
            "--jobs-dir".into(),
            jobs_dir.path().display().to_string(),
            "--claude-bin".into(),
            spec.claude_bin.display().to_string(),
            "--workspace-dir".into(),
            spec.base.map_or_else(
                || "/nonexistent/claude-gateway-bench-base".into(),
                |b| b.display().to_string(),
            ),
            "--git-crypt-key".into(),
            "/nonexistent/claude-gateway-bench-key".into(),
            "--max-concurrency".into(),
            spec.max_concurrency.to_string(),
            "--max-queue-depth".into(),
            spec.max_queue_depth.to_string(),
            "--fetch-debounce-seconds".into(),
            spec.fetch_debounce_seconds.to_string(),
            "--shutdown-grace-seconds".into(),
            "1".into(),
        ];
        let mut argv = argv;
        for (flag, value) in extra {
            argv.push((*flag).to_owned());
            argv.push((*value).to_owned());
        }
        let mut config: Config = Settings::try_parse_from(argv)?.validate()?;
        config.agent_env_overrides = spec.agent_env;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = App::build(config).await?;
        let state = app.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(claude_gateway::serve(app, listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            state,
            stop: Some(stop),
            server,
            _jobs_dir: jobs_dir,
        })
    }

    /// Waits (bounded) until no run is active or queued.
    async fn wait_idle(&self, limit: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + limit;
        loop {
            let gauge = self.state.gauge.snapshot();
            if gauge.active == 0 && gauge.queued == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the gateway is still busy after {}s: {} active, {} queued",
                    limit.as_secs(),
                    gauge.active,
                    gauge.queued
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (bounded) until `queued` runs wait for a slot.
    async fn wait_queued(&self, queued: usize, limit: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + limit;
        loop {
            let gauge = self.state.gauge.snapshot();
            if gauge.queued >= queued {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "only {} of {queued} jobs queued after {}s",
                    gauge.queued,
                    limit.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), &mut self.server).await;
    }
}

/// One chat completion; its latency when it answered 200 with content.
async fn chat(http: &reqwest::Client, url: &str) -> Result<Duration, BoxError> {
    let body = json!({"model": "haiku", "messages": [{"role": "user", "content": PROMPT}]});
    let started = Instant::now();
    let response = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        return Err(format!("chat completion answered {status}: {text}").into());
    }
    let value: Value = serde_json::from_str(&text)?;
    match value["choices"][0]["message"]["content"].as_str() {
        Some(content) if !content.is_empty() => Ok(elapsed),
        _ => Err(format!("chat completion without content: {text}").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Overhead over the CLI run directly

async fn overhead(cli: &Path, runs: usize) -> Result<String, BoxError> {
    let mock = MockAnthropic::start().await;
    let home = tempfile::tempdir()?;
    let agent_env = vec![
        ("ANTHROPIC_BASE_URL".to_owned(), mock.url()),
        ("ANTHROPIC_API_KEY".to_owned(), "x".to_owned()),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
            "1".to_owned(),
        ),
        ("IS_SANDBOX".to_owned(), "1".to_owned()),
        ("HOME".to_owned(), home.path().display().to_string()),
    ];

    run_cli_directly(cli, &agent_env).await?;
    let mut direct = Vec::with_capacity(runs);
    for _ in 0..runs {
        direct.push(run_cli_directly(cli, &agent_env).await?);
    }

    let gateway = Gateway::start(GatewaySpec {
        claude_bin: cli,
        base: None,
        max_concurrency: 10,
        max_queue_depth: 100,
        fetch_debounce_seconds: 15,
        agent_env,
    })
    .await?;
    let http = reqwest::Client::new();
    chat(&http, &gateway.url).await?;
    let mut via_gateway = Vec::with_capacity(runs);
    for _ in 0..runs {
        via_gateway.push(chat(&http, &gateway.url).await?);
    }
    gateway.shutdown().await;

    let direct = Summary::of(&direct);
    let via_gateway = Summary::of(&via_gateway);
    let median_overhead = via_gateway.median.as_secs_f64() - direct.median.as_secs_f64();
    let mean_overhead = via_gateway.mean.as_secs_f64() - direct.mean.as_secs_f64();

    let mut out = String::new();
    writeln!(
        out,
        "### 1. Chat completion vs the same CLI run directly (real CLI, mock API, sequential, after one warm-up each)\n"
    )?;
    out.push_str(LATENCY_HEADER);
    out.push_str(&latency_row("`claude -p` run directly", &direct));
    out.push_str(&latency_row(
        "`POST /v1/chat/completions` (scratch workspace)",
        &via_gateway,
    ));
    writeln!(
        out,
        "\nGateway overhead per completion: {:+.1} ms median difference ({:+.1}% of the direct median), {:+.1} ms mean difference.\n",
        median_overhead * 1000.0,
        median_overhead / direct.median.as_secs_f64().max(f64::EPSILON) * 100.0,
        mean_overhead * 1000.0,
    )?;
    Ok(out)
}

/// Runs the CLI as the gateway would, in a fresh empty directory; its wall time when it answered.
async fn run_cli_directly(cli: &Path, env: &[(String, String)]) -> Result<Duration, BoxError> {
    let cwd = tempfile::tempdir()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(cli)
        .args(CLI_ARGS)
        .current_dir(cwd.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(PROMPT.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answered = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|v| v["type"] == "result" && v["is_error"] == false);
    if !out.status.success() || !answered {
        return Err(format!(
            "the CLI run directly failed ({}): {}{}",
            out.status,
            stdout.lines().last().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------------
// 2. Throughput with an instant agent

async fn throughput(instant: &Path, base: &Path, sizes: &Sizes) -> Result<String, BoxError> {
    let mut out = String::new();
    writeln!(
        out,
        "### 2. Throughput with an instant stand-in agent (chat completions, {CLIENTS} concurrent clients, MAX_CONCURRENCY={THROUGHPUT_CONCURRENCY}, after one warm-up)\n"
    )?;
    writeln!(
        out,
        "| workspaces | requests | wall | requests/s | min | median | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for (label, base, requests) in [
        ("scratch (empty dir)", None, sizes.requests),
        (
            "clone of a 5,000-file base",
            Some(base),
            sizes.base_requests,
        ),
    ] {
        let home = tempfile::tempdir()?;
        let gateway = Gateway::start(GatewaySpec {
            claude_bin: instant,
            base,
            max_concurrency: THROUGHPUT_CONCURRENCY,
            max_queue_depth: 1000,
            fetch_debounce_seconds: 3600,
            agent_env: vec![("HOME".to_owned(), home.path().display().to_string())],
        })
        .await?;
        // The warm-up also makes the one fetch of the base, so none happens during the run.
        let http = reqwest::Client::new();
        chat(&http, &gateway.url).await?;
        let (wall, latencies) = load(&http, &gateway.url, requests).await?;
        gateway.wait_idle(Duration::from_secs(30)).await?;
        gateway.shutdown().await;
        writeln!(
            out,
            "| {label} | {requests} | {:.2} s | {:.1} | {} |",
            wall.as_secs_f64(),
            requests as f64 / wall.as_secs_f64(),
            spread(&Summary::of(&latencies)),
        )?;
    }
    out.push('\n');
    Ok(out)
}

/// Fires `requests` chat completions from [`CLIENTS`] concurrent clients; the wall time and
/// every latency.
async fn load(
    http: &reqwest::Client,
    url: &str,
    requests: usize,
) -> Result<(Duration, Vec<Duration>), BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                latencies.push(chat(&http, &url).await.map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for client in clients {
        latencies.extend(client.await??);
    }
    Ok((started.elapsed(), latencies))
}

// ---------------------------------------------------------------------------------------------
// 3. Workspace provisioning

async fn provisioning(base: &Path, sizes: &Sizes) -> Result<String, BoxError> {
    let jobs_dir = tempfile::tempdir()?;
    let provisioner = GitProvisioner::new(WorkspaceConfig {
        base_dir: Some(base.to_path_buf()),
        jobs_dir: jobs_dir.path().to_path_buf(),
        git_crypt_key: "/nonexistent/claude-gateway-bench-key".into(),
        fetch_debounce: Duration::from_secs(3600),
        ..WorkspaceConfig::default()
    })
    .await?;
    let provisioner = Arc::new(provisioner);
    let clones = tempfile::tempdir()?;

    // Warm-up: the first provision fetches the base; the measured ones do not.
    let path = provisioner.provision().await?;
    provisioner.release(path);
    wait_empty(jobs_dir.path()).await?;

    // The provisioner and the plain clone take turns, so a burst of load from elsewhere on the
    // machine lands on both rather than on one. Every directory is removed before the next
    // measurement: removal is off a job's path, but it would compete with the next clone.
    let mut sequential = Vec::with_capacity(sizes.provisions);
    let mut plain_sequential = Vec::with_capacity(sizes.provisions);
    for i in 0..sizes.provisions {
        let started = Instant::now();
        let path = provisioner.provision().await?;
        sequential.push(started.elapsed());
        provisioner.release(path);
        wait_empty(jobs_dir.path()).await?;

        let dest = clones.path().join(format!("seq-{i}"));
        plain_sequential.push(plain_clone(base, &dest).await?);
        tokio::fs::remove_dir_all(&dest).await?;
    }

    let rounds = sizes.rounds;
    let mut parallel = Vec::with_capacity(PARALLEL_PROVISIONS * rounds);
    let mut parallel_rounds = Vec::with_capacity(rounds);
    let mut plain_parallel = Vec::with_capacity(PARALLEL_PROVISIONS * rounds);
    let mut plain_rounds = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        let tasks: Vec<_> = (0..PARALLEL_PROVISIONS)
            .map(|_| {
                let provisioner = provisioner.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let path = provisioner.provision().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((started.elapsed(), path))
                })
            })
            .collect();
        let mut paths = Vec::with_capacity(PARALLEL_PROVISIONS);
        for task in tasks {
            let (elapsed, path) = task.await??;
            parallel.push(elapsed);
            paths.push(path);
        }
        parallel_rounds.push(started.elapsed());
        for path in paths {
            provisioner.release(path);
        }
        wait_empty(jobs_dir.path()).await?;

        let started = Instant::now();
        let dests: Vec<PathBuf> = (0..PARALLEL_PROVISIONS)
            .map(|i| clones.path().join(format!("par-{round}-{i}")))
            .collect();
        let tasks: Vec<_> = dests
            .iter()
            .map(|dest| {
                let (base, dest) = (base.to_path_buf(), dest.clone());
                tokio::spawn(
                    async move { plain_clone(&base, &dest).await.map_err(|e| e.to_string()) },
                )
            })
            .collect();
        for task in tasks {
            plain_parallel.push(task.await??);
        }
        plain_rounds.push(started.elapsed());
        for dest in dests {
            tokio::fs::remove_dir_all(dest).await?;
        }
    }
    let fetches = provisioner.stats().fetches;

    let mut out = String::new();
    writeln!(
        out,
        "### 3. Time a job waits for its workspace (5,000-file base; {rounds} rounds of {PARALLEL_PROVISIONS} at once; provisioner and plain clone alternate; each directory removed before the next)\n"
    )?;
    out.push_str(LATENCY_HEADER);
    out.push_str(&latency_row(
        "`GitProvisioner::provision`, one at a time",
        &Summary::of(&sequential),
    ));
    out.push_str(&latency_row(
        "`git clone --local`, one at a time",
        &Summary::of(&plain_sequential),
    ));
    out.push_str(&latency_row(
        &format!("`GitProvisioner::provision`, {PARALLEL_PROVISIONS} at once (each)"),
        &Summary::of(&parallel),
    ));
    out.push_str(&latency_row(
        &format!("`git clone --local`, {PARALLEL_PROVISIONS} at once (each)"),
        &Summary::of(&plain_parallel),
    ));
    out.push_str(&latency_row(
        &format!("`GitProvisioner::provision`, {PARALLEL_PROVISIONS} at once (whole round)"),
        &Summary::of(&parallel_rounds),
    ));
    out.push_str(&latency_row(
        &format!("`git clone --local`, {PARALLEL_PROVISIONS} at once (whole round)"),
        &Summary::of(&plain_rounds),
    ));
    writeln!(
        out,
        "\nThe provisioner fetched the base {fetches} time(s), all in the warm-up. A provision is the clone plus `git remote set-url origin`.\n"
    )?;
    Ok(out)
}

/// Waits (bounded) until `dir` is empty: workspaces are removed in the background.
async fn wait_empty(dir: &Path) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_dir(dir)?.next().is_none() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("workspaces under {} were never removed", dir.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `git clone --local --quiet base dest`; its wall time.
async fn plain_clone(base: &Path, dest: &Path) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let out = tokio::process::Command::new("git")
        .args(["clone", "--local", "--quiet", "--"])
        .arg(base)
        .arg(dest)
        .stdin(Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!("git clone failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(started.elapsed())
}

/// A repository of [`BASE_FILES`] small files in [`BASE_DIRS`] directories, pushed to a bare
/// remote, and a base cloned from that remote, as an operator's `WORKSPACE_DIR` would be.
struct BaseRepo {
    /// Holds everything; removed on drop.
    _root: tempfile::TempDir,
    /// The warm base clone.
    base: PathBuf,
}

impl BaseRepo {
    fn build() -> Result<Self, BoxError> {
        let root = tempfile::tempdir()?;
        let seed = root.path().join("seed");
        for d in 0..BASE_DIRS {
            let dir = seed.join(format!("dir-{d:02}"));
            std::fs::create_dir_all(&dir)?;
            for f in 0..BASE_FILES / BASE_DIRS {
                std::fs::write(
                    dir.join(format!("file-{f:03}.txt")),
                    format!("directory {d}, file {f}\nsome content to make it a real file\n"),
                )?;
            }
        }
        git(&seed, &["init", "-q"])?;
        git(&seed, &["add", "."])?;
        git(&seed, &["commit", "-qm", "5,000 files"])?;
        let remote = root.path().join("remote.git");
        let base = root.path().join("base");
        git(
            root.path(),
            &[
                "clone",
                "-q",
                "--bare",
                path_str(&seed)?,
                path_str(&remote)?,
            ],
        )?;
        git(
            root.path(),
            &["clone", "-q", path_str(&remote)?, path_str(&base)?],
        )?;
        Ok(Self { _root: root, base })
    }
}

fn path_str(path: &Path) -> Result<&str, BoxError> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()).into())
}

/// The type of the filesystem `path` is on (the longest mount point above it), or `unknown`.
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), fs_type.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_owned(), |(_, fs_type)| fs_type)
}

/// Runs git with a fixed identity in `dir`.
fn git(dir: &Path, args: &[&str]) -> Result<(), BoxError> {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Memory per job

async fn memory(instant: &Path, hanging: &Path, jobs: usize) -> Result<String, BoxError> {
    let finished = memory_in_child("finished", instant, jobs, "sqlite").await?;
    let finished_in_memory = memory_in_child("finished", instant, jobs, "memory").await?;
    let queued = memory_in_child("queued", hanging, jobs, "sqlite").await?;
    let mut out = String::new();
    writeln!(
        out,
        "### 4. Memory per job (RSS of a fresh process, {jobs} jobs via `POST /execute`, prompt of {} bytes, stand-in agents)\n",
        PROMPT.len()
    )?;
    out.push_str(&rss_table(
        jobs,
        &[
            (
                "finished, SQLite store (instant agent, one output line, kept in the store)",
                finished,
            ),
            (
                "finished, memory store (`DATABASE_URL=memory`)",
                finished_in_memory,
            ),
            ("queued (MAX_CONCURRENCY=1, the running one hangs)", queued),
        ],
    )?);
    Ok(out)
}

/// A table of RSS readings, `jobs` jobs each.
fn rss_table(jobs: usize, rows: &[(&str, Rss)]) -> Result<String, BoxError> {
    let mut out = String::new();
    writeln!(
        out,
        "| jobs held | RSS before | RSS after | per job |\n|---|---:|---:|---:|"
    )?;
    for (label, m) in rows {
        writeln!(
            out,
            "| {label} | {:.1} MiB | {:.1} MiB | {:.2} KiB |",
            m.before as f64 / 1024.0 / 1024.0,
            m.after as f64 / 1024.0 / 1024.0,
            m.after.saturating_sub(m.before) as f64 / jobs as f64 / 1024.0,
        )?;
    }
    out.push('\n');
    Ok(out)
}

/// Resident set sizes before and after the jobs, in bytes.
struct Rss {
    before: u64,
    after: u64,
}

/// Runs this binary as a child that measures one kind of job in one store (`sqlite` or
/// `memory`) and prints two numbers.
async fn memory_in_child(
    kind: &str,
    agent: &Path,
    jobs: usize,
    store: &str,
) -> Result<Rss, BoxError> {
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg(MEMORY_CHILD)
        .arg(kind)
        .arg(agent)
        .arg(jobs.to_string())
        .arg(store)
        .stdin(Stdio::null())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = stdout
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    match (out.status.success(), numbers.as_slice()) {
        (true, [before, after]) => Ok(Rss {
            before: *before,
            after: *after,
        }),
        _ => Err(format!(
            "the {kind} memory measurement failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into()),
    }
}

/// The child's side: `<finished|queued> <agent> <jobs> <sqlite|memory>`; prints
/// `RSS_BEFORE RSS_AFTER`.
async fn memory_child(args: &[String]) -> Result<(), BoxError> {
    let [kind, agent, jobs, store] = args else {
        return Err(
            "usage: bench __bench-memory-child <finished|queued> AGENT JOBS <sqlite|memory>".into(),
        );
    };
    // Every finished job is kept, so the reading is of all of them.
    let keep = (jobs.parse::<usize>()? * 2 + 1000).to_string();
    let mut extra = vec![("--max-finished-jobs", keep.as_str())];
    match store.as_str() {
        "sqlite" => {}
        "memory" => extra.push(("--database-url", "memory")),
        other => return Err(format!("unknown store {other:?}").into()),
    }
    let jobs: usize = jobs.parse()?;
    let queued = match kind.as_str() {
        "finished" => false,
        "queued" => true,
        other => return Err(format!("unknown measurement {other:?}").into()),
    };
    let home = tempfile::tempdir()?;
    let spec = GatewaySpec {
        claude_bin: Path::new(agent),
        base: None,
        max_concurrency: if queued { 1 } else { THROUGHPUT_CONCURRENCY },
        max_queue_depth: jobs * 2 + 100,
        fetch_debounce_seconds: 15,
        agent_env: vec![("HOME".to_owned(), home.path().display().to_string())],
    };
    let gateway = Gateway::start_with(spec, &extra).await?;
    let http = reqwest::Client::new();

    // Warm-up: the client's connections, the runtime's threads and the allocator's arenas are
    // in place before the first reading.
    if queued {
        submit(&http, &gateway.url, 1).await?;
        wait_active(&gateway).await?;
    } else {
        submit(&http, &gateway.url, 100).await?;
        gateway.wait_idle(Duration::from_secs(60)).await?;
    }
    let before = rss()?;
    if queued {
        submit(&http, &gateway.url, jobs).await?;
        gateway.wait_queued(jobs, Duration::from_secs(60)).await?;
    } else {
        // In rounds that end idle, so the queue never holds more than a round: the reading is of
        // what finished jobs hold, not of the allocator's high-water mark of a long queue.
        let mut left = jobs;
        while left > 0 {
            let round = left.min(FINISHED_ROUND);
            submit(&http, &gateway.url, round).await?;
            gateway.wait_idle(Duration::from_secs(120)).await?;
            left -= round;
        }
    }
    let after = rss()?;
    println!("{before} {after}");
    gateway.shutdown().await;
    Ok(())
}

/// Waits (bounded) until a run holds a slot.
async fn wait_active(gateway: &Gateway) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.state.gauge.snapshot().active == 0 {
        if Instant::now() >= deadline {
            return Err("the first job never started".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Submits `jobs` jobs to `/execute` from [`CLIENTS`] concurrent clients.
async fn submit(http: &reqwest::Client, url: &str, jobs: usize) -> Result<(), BoxError> {
    timed_submissions(http, url, CLIENTS, jobs).await.map(drop)
}

/// This process's resident set size in bytes, from `/proc/self/status`.
fn rss() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

// ---------------------------------------------------------------------------------------------
// 5. Durable submissions

/// `cargo run --release --example bench -- durable`: the job store's measurements alone.
async fn durable_bench() -> Result<(), BoxError> {
    let started = Instant::now();
    let sizes = Sizes::from_env()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let scripts = tempfile::tempdir()?;
    let instant = write_script(scripts.path(), "instant.sh", INSTANT_AGENT)?;
    let hanging = write_script(scripts.path(), "hang.sh", HANGING_AGENT)?;

    let mut out = String::new();
    writeln!(out, "## claude-gateway bench: the job store\n")?;
    writeln!(
        out,
        "Machine: {cpus} CPUs (nproc), load average at start {} (1, 5, 15 min), `JOBS_DIR` (and the SQLite file) on {} ({}).\n",
        load.join(" "),
        std::env::temp_dir().display(),
        filesystem_of(&std::env::temp_dir()),
    )?;
    eprintln!("1/2 durable submissions...");
    out.push_str(&submissions(&hanging, sizes.submissions).await?);
    eprintln!("2/2 memory with {} finished jobs...", sizes.finished);
    let jobs = sizes.finished;
    let sqlite = memory_in_child("finished", &instant, jobs, "sqlite").await?;
    let memory = memory_in_child("finished", &instant, jobs, "memory").await?;
    writeln!(
        out,
        "### Memory with {jobs} finished jobs stored (RSS of a fresh process, via `POST /execute`, instant agent)\n"
    )?;
    out.push_str(&rss_table(
        jobs,
        &[("SQLite store (default)", sqlite), ("memory store", memory)],
    )?);
    writeln!(
        out,
        "Whole bench: {:.0} s.",
        started.elapsed().as_secs_f64()
    )?;
    println!("{out}");
    Ok(())
}

/// Durable submissions: `POST /execute` answered 202 per second, and the latency of each, at 1
/// and 16 clients, in each store. The agent hangs and `MAX_CONCURRENCY=1`, so every job but the
/// first stays queued and the figures are the submission path alone: admission, the body, the
/// store's commit, the job's place in the queue, the answer.
async fn submissions(hanging: &Path, n: usize) -> Result<String, BoxError> {
    let mut out = String::new();
    writeln!(
        out,
        "### 5. Durable submissions (`POST /execute` to 202, {n} per row after 200 to warm up; one job runs, the rest stay queued)\n"
    )?;
    writeln!(
        out,
        "| store | clients | submissions/s | min | median | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for (label, flags) in STORES {
        for clients in SUBMIT_CLIENTS {
            let home = tempfile::tempdir()?;
            let gateway = Gateway::start_with(
                GatewaySpec {
                    claude_bin: hanging,
                    base: None,
                    max_concurrency: 1,
                    max_queue_depth: n + 1000,
                    fetch_debounce_seconds: 15,
                    agent_env: vec![("HOME".to_owned(), home.path().display().to_string())],
                },
                flags,
            )
            .await?;
            let http = reqwest::Client::new();
            timed_submissions(&http, &gateway.url, clients, 200).await?;
            let started = Instant::now();
            let latencies = timed_submissions(&http, &gateway.url, clients, n).await?;
            let wall = started.elapsed();
            gateway.shutdown().await;
            writeln!(
                out,
                "| {label} | {clients} | {:.0} | {} |",
                n as f64 / wall.as_secs_f64(),
                spread(&Summary::of(&latencies)),
            )?;
        }
    }
    out.push('\n');
    Ok(out)
}

/// Submits `jobs` jobs from `clients` concurrent clients; answers each one's latency.
async fn timed_submissions(
    http: &reqwest::Client,
    url: &str,
    clients: usize,
    jobs: usize,
) -> Result<Vec<Duration>, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                let started = Instant::now();
                let response = http
                    .post(format!("{url}/execute"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"prompt": PROMPT, "agent": "general-purpose"}))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                if status != reqwest::StatusCode::ACCEPTED {
                    return Err(format!(
                        "/execute answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                latencies.push(started.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(jobs);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}
