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
//! 5. what containment costs a run: sequential chat completions under each isolation mode;
//! 6. the warm pool of checkouts: a chat at concurrency 1 on a warm pool against scratch, how
//!    soon each agent of a burst of `MAX_CONCURRENCY` runs starts, and sustained throughput at
//!    concurrency 8 next to the rate this machine makes checkouts (parallel `git clone --local`),
//!    the two in alternating slices so both see the disk as it is that minute;
//! 7. fair dispatch: the time to pick the next run with 1,000 keys and 100,000 queued runs, in the
//!    gauge's scheduler (memory and SQLite stores, and chat) and in the PostgreSQL store's own claim
//!    (a temporary database on 127.0.0.1:5432 or `TEST_POSTGRES_URL`).
//!
//! Sizes can be changed in the environment (`--help` lists them): `BENCH_RUNS` (direct-vs-gateway
//! runs, default 10),
//! `BENCH_REQUESTS` (throughput requests with scratch workspaces, default 200),
//! `BENCH_BASE_REQUESTS` (throughput requests with the base, default 48), `BENCH_PROVISIONS`
//! (sequential provisions, default 10), `BENCH_ROUNDS` (rounds of eight provisions at once,
//! default 2), `BENCH_JOBS` (jobs in the memory measurements, default 1000) and
//! `BENCH_SUSTAIN_SECONDS` (each sustained-throughput measurement of 6, default 30).
//! `BENCH_ONLY=2,5` runs only the sections named. `BENCH_BASELINE_BIN`, the path of a gateway
//! binary built before containment (commit 7a8aef4), adds to 5 the same chats against it, next to
//! this build's binary (`cargo build --release --bin claude-gateway` first).
//!
//! Temporary directories (workspaces, the base repository) go where `TMPDIR` says; the figures
//! of 2 and 3 are mostly the cost of creating and removing 5,000 files on that filesystem.
//!
//! The memory figures are taken in a child process (this binary re-run with a hidden argument),
//! so that the other measurements' allocations neither inflate nor hide them.
//!
//! The gateways, the git fixture and the waits are the test harness's (`tests/common`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use claude_gateway::workspace::{GitProvisioner, WorkspaceConfig};
use claude_gateway::BoxError;
use common::{eventually, script, secs, Gateway, GatewayBuilder, Repos, CHAT, TOKEN};
use gateway_layers::workspace::Provision;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

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

/// A stand-in agent (bash) that reads its prompt and answers at once.
const INSTANT_AGENT: &str = r#"cat > /dev/null
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s","total_cost_usd":0,"usage":{"input_tokens":1,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}'"#;

/// A stand-in agent (bash) that answers at once with the time it started (Unix nanoseconds).
const STAMPING_AGENT: &str = r#"started=$(date +%s%N)
cat > /dev/null
echo '{"type":"result","subtype":"success","is_error":false,"result":"'"$started"'","session_id":"s"}'"#;

/// A stand-in agent (bash) that never answers, so every job behind it stays queued.
const HANGING_AGENT: &str = "cat > /dev/null\nexec sleep 600";

/// The hidden first argument that makes this binary a memory-measuring child.
const MEMORY_CHILD: &str = "__bench-memory-child";

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
    /// Seconds of each sustained measurement of the warm pool (section 6).
    sustain: u64,
    /// Submissions measured per store and client count (the `durable` mode).
    submissions: usize,
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
            sustain: env_count("BENCH_SUSTAIN_SECONDS", 30)? as u64,
            submissions: env_count("BENCH_SUBMISSIONS", 4000)?,
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
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("durable") => runtime.block_on(durable_bench()),
        Some("replicas") => runtime.block_on(replicas_bench()),
        Some(other) => Err(format!("unexpected argument {other:?}\n\n{USAGE}").into()),
        None => runtime.block_on(bench()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What `--help` prints.
const USAGE: &str = "\
Measures what the gateway costs and prints markdown tables.

usage: cargo run --release --example bench [-- --help | -- durable | -- replicas]

`-- durable` measures only durable submissions (POST /execute per second and latency at 1 and 16
clients, SQLite next to the memory store; BENCH_SUBMISSIONS per row, default 4000).

`-- replicas` measures replicas sharing a PostgreSQL store (on 127.0.0.1:5432, or
TEST_POSTGRES_URL; a database of its own, dropped after): jobs per second with an instant agent on
1 and 3 replicas, database transactions per job, and submit-to-start latency on an idle service
(BENCH_REPLICA_JOBS jobs per row, default 600; BENCH_STARTS idle starts, default 100).

Sizes come from the environment (positive whole numbers):
  BENCH_RUNS           direct-vs-gateway runs of the real CLI, each (default 10)
  BENCH_REQUESTS       throughput requests with scratch workspaces (default 200)
  BENCH_BASE_REQUESTS  throughput requests with the 5,000-file base (default 48)
  BENCH_PROVISIONS     sequential provisions, and as many plain clones (default 10)
  BENCH_ROUNDS         rounds of 8 provisions at once (default 2)
  BENCH_JOBS           jobs in each memory measurement (default 1000)
  BENCH_SUSTAIN_SECONDS  each sustained measurement of the warm pool (default 30)
  BENCH_ONLY=2,5       run only the sections named (comma-separated, 1 to 7)
  BENCH_BASELINE_BIN   a gateway binary from before containment: 5 also times it, next to
                       target/release/claude-gateway (build that first)
  BENCH_SUBMISSIONS    submissions per row of the durable mode (default 4000)
  BENCH_REPLICA_JOBS   jobs per row of the replicas mode (default 600)
  BENCH_STARTS         idle submit-to-start samples of the replicas mode (default 100)

The quickest run: BENCH_RUNS=1 BENCH_REQUESTS=16 BENCH_BASE_REQUESTS=2 BENCH_PROVISIONS=1 \\
BENCH_ROUNDS=1 BENCH_JOBS=20 cargo run --release --example bench

Needs the pinned claude CLI under tests/cli (./scripts/test installs it).";

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

    let cli = common::claude_bin();

    // Scripts are written before anything is spawned: a file still open for writing in one
    // thread while another forks makes exec fail with ETXTBSY.
    let scripts = tempfile::tempdir()?;
    let instant = script(scripts.path(), "instant.sh", INSTANT_AGENT);
    let hanging = script(scripts.path(), "hang.sh", HANGING_AGENT);
    let stamping = script(scripts.path(), "stamp.sh", STAMPING_AGENT);
    let only = Only::from_env()?;

    eprintln!("building the {BASE_FILES}-file base repository...");
    let repos = base_repo();

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

    if only.has(1) {
        eprintln!("1/6 direct CLI vs gateway...");
        out.push_str(&overhead(&cli, sizes.runs).await?);
    }
    if only.has(2) {
        eprintln!("2/6 throughput...");
        out.push_str(&throughput(&instant, &repos.base, &sizes).await?);
    }
    if only.has(3) {
        eprintln!("3/6 workspace provisioning...");
        out.push_str(&provisioning(&repos.base, &sizes).await?);
    }
    if only.has(4) {
        eprintln!("4/6 memory per job...");
        out.push_str(&memory(&instant, &hanging, sizes.jobs).await?);
    }
    if only.has(5) {
        eprintln!("5/6 containment...");
        out.push_str(&containment(&instant, &repos.base, sizes.runs.max(20)).await?);
    }
    if only.has(6) {
        eprintln!("6/6 warm pool...");
        out.push_str(&warm_pool(&instant, &stamping, &repos.base, &sizes).await?);
    }
    if only.has(7) {
        eprintln!("7/7 fair dispatch...");
        out.push_str(&fair_dispatch().await?);
    }
    writeln!(
        out,
        "\nWhole bench: {:.0} s.",
        started.elapsed().as_secs_f64()
    )?;
    println!("{out}");
    Ok(())
}

/// The sections `BENCH_ONLY` asks for (comma-separated numbers); every section when unset.
struct Only(Option<Vec<u8>>);

impl Only {
    fn from_env() -> Result<Self, BoxError> {
        let Ok(list) = std::env::var("BENCH_ONLY") else {
            return Ok(Self(None));
        };
        let sections = list
            .split(',')
            .map(|n| match n.trim().parse::<u8>() {
                Ok(n @ 1..=7) => Ok(n),
                _ => Err(format!(
                    "BENCH_ONLY={list}: expected section numbers 1 to 7, e.g. 2,5"
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(Some(sections)))
    }

    fn has(&self, section: u8) -> bool {
        self.0.as_ref().is_none_or(|only| only.contains(&section))
    }
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

const LATENCY_HEADER: &str =
    "| what | n | min | median | p90 | mean | max |\n|---|---:|---:|---:|---:|---:|---:|\n";

impl Summary {
    /// The cells `min | median | p90 | p99 | max` of a table row.
    fn tail_cells(&self) -> String {
        let cells = [self.min, self.median, self.p90, self.p99, self.max].map(ms);
        cells.join(" | ")
    }
}

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
// The gateways: the test harness's, served in this process

/// A gateway in front of `agent` (`base`: the repository runs clone, none: scratch workspaces).
fn gateway(
    agent: &Path,
    base: Option<&Path>,
    max_concurrency: usize,
    max_queue_depth: usize,
    fetch_debounce_seconds: u64,
) -> GatewayBuilder {
    let builder = Gateway::builder()
        .claude(agent.to_path_buf())
        .arg("max-concurrency", max_concurrency)
        .arg("max-queue-depth", max_queue_depth)
        .arg("fetch-debounce-seconds", fetch_debounce_seconds)
        .arg("shutdown-grace-seconds", 1);
    match base {
        Some(base) => builder.base(base),
        None => builder,
    }
}

/// Waits (bounded) until the gateway's runs (`active`, `queued`) satisfy `check`, watching its
/// gauge in-process rather than over HTTP.
async fn wait_runs(
    gw: &Gateway,
    what: &str,
    limit: Duration,
    check: impl Fn(usize, usize) -> bool,
) {
    eventually(what, limit, || async {
        let gauge = gw.state.gauge.snapshot();
        if check(gauge.active, gauge.queued) {
            Ok(())
        } else {
            Err(format!("{} active, {} queued", gauge.active, gauge.queued))
        }
    })
    .await;
}

/// Runs `count` calls of `call` from [`CLIENTS`] concurrent clients; answers the wall time and
/// what the calls answered.
async fn from_clients<T, F, Fut>(count: usize, call: F) -> Result<(Duration, Vec<T>), BoxError>
where
    T: Send + 'static,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, BoxError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (next, call) = (next.clone(), call.clone());
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                answers.push(call().await.map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(answers)
        }));
    }
    let mut answers = Vec::with_capacity(count);
    for client in clients {
        answers.extend(client.await??);
    }
    Ok((started.elapsed(), answers))
}

/// A chat completion for [`from_clients`], against `gw`.
fn chats(gw: &Gateway) -> impl Fn() -> ChatLatency + Clone + Send + 'static {
    let (http, url) = (gw.http.clone(), gw.url.clone());
    move || Box::pin(chat(http.clone(), url.clone()))
}

/// Runs `measure` once to warm up, then `runs` times; the latencies it measured.
async fn warm_then_time<F, Fut>(runs: usize, measure: F) -> Result<Vec<Duration>, BoxError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Duration, BoxError>>,
{
    measure().await?;
    let mut latencies = Vec::with_capacity(runs);
    for _ in 0..runs {
        latencies.push(measure().await?);
    }
    Ok(latencies)
}

/// What [`chat`] answers, boxed so that [`chats`] can name it.
type ChatLatency = std::pin::Pin<Box<dyn Future<Output = Result<Duration, BoxError>> + Send>>;

/// Sends one chat completion of [`PROMPT`] to the gateway at `url`.
async fn send_chat(http: &reqwest::Client, url: &str) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{url}{CHAT}"))
        .bearer_auth(TOKEN)
        .json(&Gateway::chat_body(PROMPT))
        .send()
        .await
}

/// One chat completion; its latency when it answered 200 with content.
async fn chat(http: reqwest::Client, url: String) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let response = send_chat(&http, &url).await?;
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
    // The direct runs use the gateway's agent environment: the same mock, the same HOME.
    let mut gateway = gateway(cli, None, 10, 100, 15).start().await;
    let agent_env = gateway.agent_env();
    let direct = warm_then_time(runs, || run_cli_directly(cli, &agent_env)).await?;
    let via_gateway = warm_then_time(runs, chats(&gateway)).await?;
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
        let mut gateway = gateway(instant, base, THROUGHPUT_CONCURRENCY, 1000, 3600)
            .start()
            .await;
        // The warm-up also makes the one fetch of the base, so none happens during the run.
        let chat = chats(&gateway);
        chat().await?;
        let (wall, latencies) = from_clients(requests, chat).await?;
        wait_runs(&gateway, "the gateway is idle", secs(30), |a, q| a + q == 0).await;
        gateway.shutdown().await;
        let s = Summary::of(&latencies);
        writeln!(
            out,
            "| {label} | {requests} | {:.2} s | {:.1} | {} |",
            wall.as_secs_f64(),
            requests as f64 / wall.as_secs_f64(),
            s.tail_cells(),
        )?;
    }
    out.push('\n');
    Ok(out)
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
    wait_empty(jobs_dir.path()).await;

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
        wait_empty(jobs_dir.path()).await;

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
        wait_empty(jobs_dir.path()).await;

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
    let (provision, clone) = ("`GitProvisioner::provision`", "`git clone --local`");
    let at_once = format!("{PARALLEL_PROVISIONS} at once");
    for (label, samples) in [
        (format!("{provision}, one at a time"), &sequential),
        (format!("{clone}, one at a time"), &plain_sequential),
        (format!("{provision}, {at_once} (each)"), &parallel),
        (format!("{clone}, {at_once} (each)"), &plain_parallel),
        (
            format!("{provision}, {at_once} (whole round)"),
            &parallel_rounds,
        ),
        (format!("{clone}, {at_once} (whole round)"), &plain_rounds),
    ] {
        out.push_str(&latency_row(&label, &Summary::of(samples)));
    }
    writeln!(
        out,
        "\nThe provisioner fetched the base {fetches} time(s), all in the warm-up. A provision is the clone plus `git remote set-url origin`.\n"
    )?;
    Ok(out)
}

/// Waits (bounded) until `dir` is empty: workspaces are removed in the background.
async fn wait_empty(dir: &Path) {
    let what = format!("the workspaces under {} are removed", dir.display());
    eventually(what, secs(60), || async {
        std::fs::read_dir(dir).map(|mut entries| entries.next().is_none())
    })
    .await;
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
fn base_repo() -> Repos {
    let files = (0..BASE_DIRS).flat_map(|d| {
        (0..BASE_FILES / BASE_DIRS).map(move |f| {
            (
                format!("dir-{d:02}/file-{f:03}.txt"),
                format!("directory {d}, file {f}\nsome content to make it a real file\n"),
            )
        })
    });
    Repos::seeded("main", files)
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

// ---------------------------------------------------------------------------------------------
// 4. Memory per job

async fn memory(instant: &Path, hanging: &Path, jobs: usize) -> Result<String, BoxError> {
    let finished = memory_in_child("finished", instant, jobs).await?;
    let queued = memory_in_child("queued", hanging, jobs).await?;
    let mut out = String::new();
    writeln!(
        out,
        "### 4. Memory per job (RSS of a fresh process, {jobs} jobs via `POST /execute`, prompt of {} bytes, stand-in agents)\n",
        PROMPT.len()
    )?;
    writeln!(
        out,
        "| jobs held | RSS before | RSS after | per job |\n|---|---:|---:|---:|"
    )?;
    for (label, m) in [
        (
            "finished (instant agent, one output line, kept in the store)",
            finished,
        ),
        ("queued (MAX_CONCURRENCY=1, the running one hangs)", queued),
    ] {
        writeln!(
            out,
            "| {label} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
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

/// Runs this binary as a child that measures one kind of job and prints two numbers.
async fn memory_in_child(kind: &str, agent: &Path, jobs: usize) -> Result<Rss, BoxError> {
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg(MEMORY_CHILD)
        .arg(kind)
        .arg(agent)
        .arg(jobs.to_string())
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

/// The child's side: `<finished|queued> <agent> <jobs>`; prints `RSS_BEFORE RSS_AFTER`.
async fn memory_child(args: &[String]) -> Result<(), BoxError> {
    let [kind, agent, jobs] = args else {
        return Err("usage: bench __bench-memory-child <finished|queued> AGENT JOBS".into());
    };
    let jobs: usize = jobs.parse()?;
    let queued = match kind.as_str() {
        "finished" => false,
        "queued" => true,
        other => return Err(format!("unknown measurement {other:?}").into()),
    };
    let concurrency = if queued { 1 } else { THROUGHPUT_CONCURRENCY };
    let mut gateway = gateway(Path::new(agent), None, concurrency, jobs * 2 + 100, 15)
        .start()
        .await;
    let idle = |a, q| a + q == 0;

    // Warm-up: the client's connections, the runtime's threads and the allocator's arenas are
    // in place before the first reading.
    if queued {
        submit(&gateway, 1).await?;
        wait_runs(&gateway, "the first job starts", secs(30), |a, _| a > 0).await;
    } else {
        submit(&gateway, 100).await?;
        wait_runs(&gateway, "the warm-up jobs end", secs(60), idle).await;
    }
    let before = rss()?;
    submit(&gateway, jobs).await?;
    if queued {
        wait_runs(&gateway, "the jobs are queued", secs(60), |_, q| q >= jobs).await;
    } else {
        wait_runs(&gateway, "the jobs end", secs(120), idle).await;
    }
    let after = rss()?;
    println!("{before} {after}");
    gateway.shutdown().await;
    Ok(())
}

/// Submits `jobs` jobs to `/execute` from [`CLIENTS`] concurrent clients.
async fn submit(gw: &Gateway, jobs: usize) -> Result<(), BoxError> {
    let (http, url) = (gw.http.clone(), gw.url.clone());
    let execute = move || {
        let request = http
            .post(format!("{url}/execute"))
            .bearer_auth(TOKEN)
            .json(&json!({"prompt": PROMPT, "agent": common::AGENT}));
        async move {
            let response = request.send().await?;
            let status = response.status();
            let text = response.text().await?;
            if status != reqwest::StatusCode::ACCEPTED {
                return Err(format!("/execute answered {status}: {text}").into());
            }
            Ok(())
        }
    };
    from_clients(jobs, execute).await?;
    Ok(())
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
// 5. What containment costs a run

/// Sequential chat completions (one client, MAX_CONCURRENCY=1) with the instant stand-in agent,
/// under each isolation mode: the run's identity, its directories handed over, its HOME made and
/// every process of it killed and waited for, on top of the rest of a run.
async fn containment(instant: &Path, base: &Path, runs: usize) -> Result<String, BoxError> {
    let mut out = String::new();
    writeln!(
        out,
        "### 5. Containment: sequential chat completions with the instant stand-in agent (one client, MAX_CONCURRENCY=1, {runs} runs after one warm-up)\n"
    )?;
    writeln!(
        out,
        "| isolation | run cgroups | workspaces | min | median | p90 | p99 | max |\n|---|---|---|---:|---:|---:|---:|---:|"
    )?;
    let root = nix::unistd::geteuid().is_root();
    let modes: &[&str] = if root {
        &["process", "uid"]
    } else {
        &["process"]
    };
    // `auto` gives each run a cgroup where the machine allows it (root on a cgroup v2 host);
    // `off` is the /proc path every other machine takes.
    for (label, base) in [("scratch", None), ("5,000-file base", Some(base))] {
        for mode in modes {
            for cgroups in ["auto", "off"] {
                let mut gateway = gateway(instant, base, 1, 100, 3600)
                    .arg("isolation", mode)
                    .arg("run-cgroup", cgroups)
                    .start()
                    .await;
                let latencies = warm_then_time(runs, chats(&gateway)).await?;
                let health: Value = gateway.get_open("/health").await.json().await?;
                let used = health["run_cgroups"] == Value::Bool(true);
                gateway.shutdown().await;
                let s = Summary::of(&latencies);
                let cgroups = if used { "yes" } else { "no" };
                writeln!(out, "| {mode} | {cgroups} | {label} | {} |", s.tail_cells())?;
            }
        }
    }
    if !root {
        writeln!(out, "\n(uid isolation needs root: not measured.)")?;
    }
    out.push('\n');
    out.push_str(&against_baseline(instant, runs).await?);
    Ok(out)
}

/// The gateways [`against_baseline`] compares: a label, the binary, and its extra settings.
type Contender = (
    &'static str,
    PathBuf,
    &'static [(&'static str, &'static str)],
);

/// With `BENCH_BASELINE_BIN` set to a gateway binary built before containment (commit 7a8aef4,
/// whose runs shared the gateway's uid and were killed by process group only), the same
/// sequential chats against it and against this build's binary (`target/release/claude-gateway`,
/// next to this example), both as processes on scratch workspaces, in alternating rounds so that
/// a change in the machine's load falls on every contender alike. The difference of the medians
/// is what containment costs a run.
async fn against_baseline(instant: &Path, runs: usize) -> Result<String, BoxError> {
    let Some(baseline) = std::env::var_os("BENCH_BASELINE_BIN").map(PathBuf::from) else {
        return Ok(
            "(Set BENCH_BASELINE_BIN to a gateway binary built before containment, e.g. \
                   commit 7a8aef4, to compare against it.)\n\n"
                .to_owned(),
        );
    };
    let current = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("claude-gateway"))
        .filter(|bin| bin.is_file())
        .ok_or("BENCH_BASELINE_BIN needs this build's binary beside the example: cargo build --release --bin claude-gateway")?;
    let contenders: [Contender; 3] = [
        ("baseline (before containment)", baseline, &[]),
        (
            "this build, ISOLATION=uid, RUN_CGROUP=auto",
            current.clone(),
            &[("ISOLATION", "uid")],
        ),
        (
            "this build, ISOLATION=process, RUN_CGROUP=auto",
            current,
            &[("ISOLATION", "process")],
        ),
    ];
    const ROUNDS: usize = 4;
    let per_round = runs.div_ceil(ROUNDS);
    let mut latencies = vec![Vec::new(); contenders.len()];
    for _ in 0..ROUNDS {
        for ((_, bin, settings), into) in contenders.iter().zip(latencies.iter_mut()) {
            into.extend(time_binary(bin, settings, instant, per_round).await?);
        }
    }
    let mut out = format!(
        "Against the gateway before containment, both as processes on scratch workspaces, {ROUNDS} alternating rounds of {per_round} chats after a warm-up each:\n\n{LATENCY_HEADER}"
    );
    let summaries: Vec<Summary> = latencies.iter().map(|l| Summary::of(l)).collect();
    for ((label, _, _), summary) in contenders.iter().zip(&summaries) {
        out.push_str(&latency_row(label, summary));
    }
    let base = summaries[0].median.as_secs_f64();
    out.push('\n');
    for ((label, _, _), summary) in contenders.iter().zip(&summaries).skip(1) {
        writeln!(
            out,
            "Containment's cost at the median, {label}: {:+.1} ms (target: under 5 ms).",
            (summary.median.as_secs_f64() - base) * 1000.0
        )?;
    }
    out.push('\n');
    Ok(out)
}

/// Starts the gateway binary `bin` with the instant agent and `settings`, times `runs`
/// sequential chats after one warm-up, and stops it with SIGTERM.
async fn time_binary(
    bin: &Path,
    settings: &[(&str, &str)],
    instant: &Path,
    runs: usize,
) -> Result<Vec<Duration>, BoxError> {
    let jobs = tempfile::tempdir()?;
    let home = tempfile::tempdir()?;
    let mut env: Vec<(String, String)> = [
        ("API_BEARER_TOKEN", TOKEN),
        ("CLAUDE_BIN", &*instant.to_string_lossy()),
        ("JOBS_DIR", &*jobs.path().to_string_lossy()),
        ("HOME", &*home.path().to_string_lossy()),
        ("WORKSPACE_DIR", "/nonexistent/claude-gateway-base"),
        ("GIT_CRYPT_KEY", "/nonexistent/git-crypt-key"),
        ("MAX_CONCURRENCY", "1"),
        ("SHUTDOWN_GRACE_SECONDS", "1"),
        ("RUST_LOG", "warn"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    env.extend(settings.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let (mut child, url) = common::spawn_binary(&bin.to_string_lossy(), env).await;
    let http = reqwest::Client::new();
    let latencies = warm_then_time(runs, || chat(http.clone(), url.clone())).await;
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    latencies
}

// ---------------------------------------------------------------------------------------------
// 6. The warm pool of checkouts

async fn warm_pool(
    instant: &Path,
    stamping: &Path,
    base: &Path,
    sizes: &Sizes,
) -> Result<String, BoxError> {
    let mut out = String::new();
    let runs = sizes.runs.max(20);
    writeln!(
        out,
        "### 6. Warm pool of checkouts (instant stand-in agent, 5,000-file base, isolation as the machine allows)\n"
    )?;

    // a. Concurrency 1: each request arrives when the pool is warm again (a steady trickle).
    writeln!(
        out,
        "a. One client, MAX_CONCURRENCY=1 (pool of 1), {runs} chat completions after one warm-up; with the base, each sent once the pool is warm again:\n"
    )?;
    out.push_str(LATENCY_HEADER);
    let mut medians = Vec::new();
    for (label, base) in [
        ("scratch (no base)", None),
        ("5,000-file base, warm pool", Some(base)),
    ] {
        let mut gw = gateway(instant, base, 1, 100, 3600).start().await;
        let chat = chats(&gw);
        chat().await?;
        let mut latencies = Vec::with_capacity(runs);
        for _ in 0..runs {
            if base.is_some() {
                wait_pool_full(&gw, 1).await;
            }
            latencies.push(chat().await?);
        }
        let (hits, misses) = takes(&gw).await;
        gw.shutdown().await;
        let s = Summary::of(&latencies);
        medians.push(s.median);
        out.push_str(&latency_row(
            &format!("{label} (pool hits {hits}, misses {misses})"),
            &s,
        ));
    }
    let gap = medians[1].as_secs_f64() - medians[0].as_secs_f64();
    writeln!(
        out,
        "\nMedian with the base minus median without: {:.1} ms (target: within 5 ms).\n",
        gap * 1000.0
    )?;

    // b. A burst of MAX_CONCURRENCY runs on a full pool: how soon each agent starts.
    let burst = THROUGHPUT_CONCURRENCY;
    let mut gw = gateway(stamping, Some(base), burst, 1000, 3600)
        .start()
        .await;
    chats(&gw)().await?;
    wait_pool_full(&gw, burst).await;
    let (hits_before, _) = takes(&gw).await;
    let starts = futures_util::future::join_all((0..burst).map(|_| {
        let (http, url) = (gw.http.clone(), gw.url.clone());
        agent_start_delay(http, url)
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let (hits, misses) = takes(&gw).await;
    gw.shutdown().await;
    let s = Summary::of(&starts);
    let (min, median, max) = (ms(s.min), ms(s.median), ms(s.max));
    let hits = hits - hits_before;
    writeln!(
        out,
        "b. A burst of {burst} chat completions at once (MAX_CONCURRENCY={burst}, pool of {burst}, full): time from sending the request to the agent starting — min {min}, median {median}, max {max} (target: every one within 50 ms); pool hits {hits}, misses {misses} (the warm-up's included).\n",
    )?;

    // c. Sustained throughput at concurrency 8, next to this machine's rate of checkouts, with
    // used checkouts recycled and without. The disk of a shared machine changes speed from minute
    // to minute, so the three alternate: a slice of parallel clones, then (its pool full again) a
    // slice of each gateway, three times over.
    const SLICES: u32 = 3;
    let slice = Duration::from_secs(sizes.sustain) / SLICES;
    let mut gateways = Vec::new();
    for recycle in ["true", "false"] {
        let gw = gateway(instant, Some(base), THROUGHPUT_CONCURRENCY, 1000, 3600)
            .arg("workspace-pool-recycle", recycle)
            .start()
            .await;
        chats(&gw)().await?;
        gateways.push(gw);
    }
    let (mut cloned, mut cloning) = (0usize, Duration::ZERO);
    let mut served = [(0usize, Duration::ZERO); 2];
    let mut rounds = Vec::new();
    for _ in 0..SLICES {
        for gw in &gateways {
            wait_pool_full(gw, THROUGHPUT_CONCURRENCY).await;
        }
        let (made, took) = clone_rate(base, THROUGHPUT_CONCURRENCY, slice).await?;
        (cloned, cloning) = (cloned + made, cloning + took);
        let mut round = vec![format!("clones {:.2}", made as f64 / took.as_secs_f64())];
        for ((gw, into), label) in gateways.iter().zip(&mut served).zip(["recycling", "not"]) {
            wait_pool_full(gw, THROUGHPUT_CONCURRENCY).await;
            let (finished, wall) = sustained(gw, THROUGHPUT_CONCURRENCY, slice).await?;
            *into = (into.0 + finished, into.1 + wall);
            round.push(format!(
                "{label} {:.2}",
                finished as f64 / wall.as_secs_f64()
            ));
        }
        rounds.push(round.join(", "));
    }
    let clones = cloned as f64 / cloning.as_secs_f64();
    let mut summary = Vec::new();
    for ((gw, (done, wall)), label) in gateways.iter().zip(served).zip([
        "recycling used checkouts (the default)",
        "WORKSPACE_POOL_RECYCLE=false (every used checkout removed, the pool clones)",
    ]) {
        let rate = done as f64 / wall.as_secs_f64();
        let (hits, misses) = takes(gw).await;
        summary.push(format!(
            "| {label} | {done} | {rate:.2} | {hits} / {misses} | **{:.0}%** |",
            100.0 * rate / clones
        ));
    }
    // What making and handing over a checkout cost in the recycling gateway, from its histograms.
    let gw = &gateways[0];
    let timings = [
        histogram_mean(
            gw,
            "claude_gateway_workspace_checkout_seconds",
            "{by=\"pool\"}",
        )
        .await,
        histogram_mean(
            gw,
            "claude_gateway_workspace_checkout_seconds",
            "{by=\"run\"}",
        )
        .await,
        histogram_mean(
            gw,
            "claude_gateway_workspace_checkout_seconds",
            "{by=\"recycle\"}",
        )
        .await,
        histogram_mean(gw, "claude_gateway_workspace_handover_seconds", "").await,
    ];
    for mut gw in gateways {
        gw.shutdown().await;
    }
    writeln!(
        out,
        "c. Sustained, {SLICES} rounds of alternating slices of {} s each: {THROUGHPUT_CONCURRENCY} clients, MAX_CONCURRENCY={THROUGHPUT_CONCURRENCY}, pool of {THROUGHPUT_CONCURRENCY} (full at each slice's start). This machine, {THROUGHPUT_CONCURRENCY} parallel `git clone --local` of the base in its slices: {cloned} checkouts, {clones:.2}/s. Per round (/s): {}.\n\n| gateway | chats | chats/s | pool hits / misses | vs clones (target: at least 90%) |\n|---|---:|---:|---:|---:|\n{}\n",
        slice.as_secs_f64(),
        rounds.join("; "),
        summary.join("\n"),
    )?;
    let [pool, run, recycled, handover] = timings;
    writeln!(
        out,
        "In that run, the recycling gateway's own timings (mean over count): a checkout made by the pool (clone, then handed to the run uid leased with it, off the request path) {pool}; a used checkout recycled by the pool (proven, rebuilt, off the request path) {recycled}; a checkout cloned by a run that found none ready {run}; the hand-over on a run's path (its HOME, plus the walk that gives a run-cloned checkout to its uid) {handover}.\n",
    )?;
    Ok(out)
}

/// `mean ms over n` of the histogram `name` with `labels` (`{a="b"}`, or empty) on `gw`.
async fn histogram_mean(gw: &Gateway, name: &str, labels: &str) -> String {
    let sum = gw.metric(&format!("{name}_sum{labels}")).await;
    let count = gw.metric(&format!("{name}_count{labels}")).await;
    if count > 0.0 {
        format!("{:.1} ms over {count}", 1000.0 * sum / count)
    } else {
        "not recorded".to_owned()
    }
}

/// Waits (bounded) until the gateway's pool holds `size` ready checkouts (its size: full).
async fn wait_pool_full(gw: &Gateway, size: usize) {
    eventually("the pool is full", secs(120), || async {
        let health: Value = gw
            .request_as(None, reqwest::Method::GET, "/health")
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if health["pool_ready"].as_u64() == Some(size as u64) {
            Ok(())
        } else {
            Err(health.to_string())
        }
    })
    .await;
}

/// The pool's hits and misses so far, from `/metrics`.
async fn takes(gw: &Gateway) -> (u64, u64) {
    let series =
        |result: &str| format!("claude_gateway_workspace_pool_takes_total{{result=\"{result}\"}}");
    let hits = gw.metric(&series("hit")).await;
    let misses = gw.metric(&series("miss")).await;
    (hits as u64, misses as u64)
}

/// One chat completion with the stamping agent: the time from sending it to the agent's start.
async fn agent_start_delay(http: reqwest::Client, url: String) -> Result<Duration, BoxError> {
    let sent = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let response = send_chat(&http, &url).await?;
    let value: Value = response.json().await?;
    let started: u64 = value["choices"][0]["message"]["content"]
        .as_str()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("no start time in {value}"))?;
    Ok(Duration::from_nanos(started).saturating_sub(sent))
}

/// Chat completions from `clients` clients for `window`; how many finished and the wall time.
async fn sustained(
    gw: &Gateway,
    clients: usize,
    window: Duration,
) -> Result<(usize, Duration), BoxError> {
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let chat = chats(gw);
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            while Instant::now() < deadline {
                chat().await.map_err(|e| e.to_string())?;
                done += 1;
            }
            Ok::<_, String>(done)
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    Ok((done, started.elapsed()))
}

/// Checkouts this machine makes of `base` with `parallel` concurrent `git clone --local` for
/// `window` (each removed in the background after), and the time they took: the rate a pool
/// could at best refill at by cloning.
async fn clone_rate(
    base: &Path,
    parallel: usize,
    window: Duration,
) -> Result<(usize, Duration), BoxError> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let deadline = started + window;
    let made = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(parallel);
    for worker in 0..parallel {
        let (base, root, made) = (base.to_path_buf(), dir.path().to_path_buf(), made.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let dest = root.join(format!("clone-{worker}-{n}"));
                plain_clone(&base, &dest).await.map_err(|e| e.to_string())?;
                made.fetch_add(1, Ordering::Relaxed);
                // Removed in the background, as the gateway removes finished workspaces.
                tokio::spawn(async move {
                    let _ = tokio::fs::remove_dir_all(&dest).await;
                });
                n += 1;
            }
            Ok::<_, String>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok((made.load(Ordering::Relaxed), started.elapsed()))
}

// ---------------------------------------------------------------------------------------------
// The `durable` mode: what acknowledging a job costs in each store

/// The stores compared, and the `--database-url` each takes (none: the default SQLite file).
const STORES: [(&str, Option<&str>); 2] = [("SQLite (default)", None), ("memory", Some("memory"))];

/// Concurrent submitters in each row.
const SUBMIT_CLIENTS: [usize; 2] = [1, 16];

/// `cargo run --release --example bench -- durable`: durable submissions only.
async fn durable_bench() -> Result<(), BoxError> {
    let sizes = Sizes::from_env()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let scripts = tempfile::tempdir()?;
    let hanging = script(scripts.path(), "hang.sh", HANGING_AGENT);
    let mut out = String::new();
    writeln!(
        out,
        "## claude-gateway bench: the job store\n\nLoad average at start {}, `JOBS_DIR` on {} ({}).\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        std::env::temp_dir().display(),
        filesystem_of(&std::env::temp_dir()),
    )?;
    out.push_str(&submissions(&hanging, sizes.submissions).await?);
    println!("{out}");
    Ok(())
}

/// `POST /execute` answered 202 per second, and each one's latency, at 1 and 16 clients in each
/// store. The agent hangs and `MAX_CONCURRENCY=1`, so every job but the first stays queued and the
/// figures are the submission path alone: the body, the store's commit, the queue, the answer.
async fn submissions(hanging: &Path, n: usize) -> Result<String, BoxError> {
    let mut out = String::new();
    writeln!(
        out,
        "### Durable submissions (`POST /execute` to 202, {n} per row after 200 to warm up)\n"
    )?;
    writeln!(
        out,
        "| store | clients | submissions/s | min | median | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for (label, url) in STORES {
        for clients in SUBMIT_CLIENTS {
            let mut builder = gateway(hanging, None, 1, n + 1000, 15);
            if let Some(url) = url {
                builder = builder.arg("database-url", url);
            }
            let mut gateway = builder.start().await;
            timed_submissions(&gateway, clients, 200).await?;
            let started = Instant::now();
            let latencies = timed_submissions(&gateway, clients, n).await?;
            let wall = started.elapsed();
            gateway.shutdown().await;
            let s = Summary::of(&latencies);
            writeln!(
                out,
                "| {label} | {clients} | {:.0} | {} |",
                n as f64 / wall.as_secs_f64(),
                s.tail_cells(),
            )?;
        }
    }
    out.push('\n');
    Ok(out)
}

/// Submits `jobs` jobs from `clients` concurrent clients; answers each one's latency.
async fn timed_submissions(
    gw: &Gateway,
    clients: usize,
    jobs: usize,
) -> Result<Vec<Duration>, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (http, url, next) = (gw.http.clone(), gw.url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                let started = Instant::now();
                post_job(&http, &url).await?;
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

// ---------------------------------------------------------------------------------------------
// The `replicas` mode: several replicas on one PostgreSQL store

/// Runs at once on each replica in the replicas mode.
const REPLICA_CONCURRENCY: usize = 4;

/// `cargo run --release --example bench -- replicas`.
async fn replicas_bench() -> Result<(), BoxError> {
    let jobs = env_count("BENCH_REPLICA_JOBS", 600)?;
    let starts = env_count("BENCH_STARTS", 100)?;
    let scripts = tempfile::tempdir()?;
    let instant = script(scripts.path(), "instant.sh", INSTANT_AGENT);
    let mut out = format!(
        "## claude-gateway bench: replicas on PostgreSQL\n\nLoad average at start {}; {} cores; the replicas are served in this process, each with its own store connections.\n\n",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    writeln!(
        out,
        "### Throughput with an instant agent ({CLIENTS} clients spread over the replicas, MAX_CONCURRENCY={REPLICA_CONCURRENCY} each)\n"
    )?;
    writeln!(
        out,
        "| replicas | jobs | wall (first submit to last end) | jobs/s | transactions/job | idle transactions/s |\n|---:|---:|---:|---:|---:|---:|"
    )?;
    for replicas in [1, 3] {
        let db = common::postgres::TestDb::create().await;
        let gateways = replica_set(&instant, &db, replicas).await;
        run_through(&gateways, &db, 20).await?;
        // What the replicas do with nothing to do (lease, poll), to take off the figures below.
        let (idle_from, idle_at) = transactions(&db).await?;
        let (from, at) = transactions(&db).await?;
        let idle = (from - idle_from) as f64 / (at - idle_at).as_secs_f64();
        let (wall, watching) = run_through(&gateways, &db, jobs).await?;
        let (to, end) = transactions(&db).await?;
        let total = (to - from - watching) as f64 - idle * (end - at).as_secs_f64();
        let per_job = total / jobs as f64;
        writeln!(
            out,
            "| {replicas} | {jobs} | {:.2} s | {:.1} | {per_job:.1} | {idle:.1} |",
            wall.as_secs_f64(),
            jobs as f64 / wall.as_secs_f64(),
        )?;
        for mut gateway in gateways {
            gateway.shutdown().await;
        }
    }
    out.push('\n');
    let db = common::postgres::TestDb::create().await;
    let gateways = replica_set(&instant, &db, 3).await;
    run_through(&gateways, &db, 20).await?;
    let mut waits = Vec::with_capacity(starts);
    for i in 0..starts {
        let gateway = &gateways[i % gateways.len()];
        let id = submit_one(gateway).await?;
        let record = wait_finished(gateway, &id).await?;
        let at = |field: &str| {
            record[field]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .ok_or_else(|| format!("no {field} in {record}"))
        };
        let waited = at("started_at")? - at("created_at")?;
        waits.push(waited.to_std().unwrap_or_default());
    }
    writeln!(
        out,
        "### Submit-to-start on an idle service of 3 replicas (`started_at` less `created_at`, one job at a time)\n\n{LATENCY_HEADER}{}",
        latency_row("submit to start", &Summary::of(&waits))
    )?;
    for mut gateway in gateways {
        gateway.shutdown().await;
    }
    println!("{out}");
    Ok(())
}

/// `n` replicas of a service on `db`, in front of `agent`.
async fn replica_set(agent: &Path, db: &common::postgres::TestDb, n: usize) -> Vec<Gateway> {
    let mut gateways = Vec::with_capacity(n);
    for i in 0..n {
        gateways.push(
            gateway(agent, None, REPLICA_CONCURRENCY, 100_000, 3600)
                .arg("database-url", db.url())
                .arg("replica-id", format!("bench-{i}"))
                .start()
                .await,
        );
    }
    gateways
}

/// Transactions committed and rolled back in `db` so far, and when they were read. A backend
/// flushes its statistics within a second while busy and within ten once idle: the wait before
/// reading covers both, and makes each reading its own idle window too.
async fn transactions(db: &common::postgres::TestDb) -> Result<(i64, Instant), BoxError> {
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url()).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = $1",
    )
    .bind(&db.name)
    .fetch_one(&mut conn)
    .await?;
    // This connection's own transaction is not among them yet.
    Ok((n, Instant::now()))
}

/// Submits `jobs` jobs from [`CLIENTS`] clients over the replicas and waits until every job in
/// `db` has ended, watching the database every 20 ms (so the wait adds few transactions of its
/// own); answers the wall time and the transactions the watching took.
async fn run_through(
    gateways: &[Gateway],
    db: &common::postgres::TestDb,
    jobs: usize,
) -> Result<(Duration, i64), BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for c in 0..CLIENTS {
        let gateway = &gateways[c % gateways.len()];
        let (http, url, next) = (gateway.http.clone(), gateway.url.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                post_job(&http, &url).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for client in clients {
        client.await??;
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    // Each poll is a transaction of its own, counted to be taken off.
    let mut polls = 1;
    loop {
        polls += 1;
        let (left, failed): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE finished_at IS NULL), \
                    COUNT(*) FILTER (WHERE finished_at IS NOT NULL AND status <> 'completed') \
             FROM jobs",
        )
        .fetch_one(&mut conn)
        .await?;
        if failed > 0 {
            return Err(format!("{failed} jobs did not complete").into());
        }
        if left == 0 {
            return Ok((started.elapsed(), polls));
        }
        if Instant::now() > deadline {
            return Err(format!("{left} jobs still unfinished after 300 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /execute` of one job; its id.
async fn post_job(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = http
        .post(format!("{url}/execute"))
        .bearer_auth(TOKEN)
        .json(&json!({"prompt": PROMPT, "agent": "general-purpose"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(format!("/execute answered {status}: {body}"));
    }
    Ok(body["job_id"].as_str().unwrap_or_default().to_owned())
}

async fn submit_one(gateway: &Gateway) -> Result<String, BoxError> {
    Ok(post_job(&gateway.http, &gateway.url).await?)
}

/// Polls the job every 5 ms until it has ended (bounded); its record.
async fn wait_finished(gateway: &Gateway, id: &str) -> Result<Value, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let record: Value = gateway
            .http
            .get(format!("{}/jobs/{id}", gateway.url))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if !matches!(record["status"].as_str(), Some("queued" | "running")) {
            return Ok(record);
        }
        if Instant::now() > deadline {
            return Err(format!("job {id} did not end within 120 s").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The load averages of the last 1, 5 and 15 minutes, as `/proc/loadavg` has them.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Keys and queued runs of section 7.
const FAIR_KEYS: usize = 1_000;
const FAIR_QUEUED: usize = 100_000;
/// Claims timed in each store.
const FAIR_CLAIMS: usize = 2_000;

/// Section 7: how long picking the next run takes with [`FAIR_KEYS`] keys and [`FAIR_QUEUED`]
/// queued runs, in each store's dispatcher.
async fn fair_dispatch() -> Result<String, BoxError> {
    let mut out = format!(
        "\n### 7. Fair dispatch: picking the next run among {FAIR_QUEUED} queued runs of {FAIR_KEYS} keys\n\n| store | what is timed | claims | p50 | p99 |\n|---|---|---:|---:|---:|\n"
    );
    let mut row = |store: &str, timed: &str, mut times: Vec<Duration>| {
        times.sort();
        writeln!(
            out,
            "| {store} | {timed} | {} | {} | {} |",
            times.len(),
            micros(percentile(&times, 50)),
            micros(percentile(&times, 99)),
        )
    };
    row(
        "memory, SQLite (and chat)",
        "a slot freed to the next run's start, through the concurrency layer (one slot, every key weight 1-4, a third capped at 1 running)",
        fair_gauge().await?,
    )?;
    row(
        "PostgreSQL",
        "the store's claim of one job (`PgStore::claim`: one statement, SKIP LOCKED, owners at max_concurrent passed over on their locked `key_running` row, the record read back), from this process over loopback",
        fair_claims_pg().await?,
    )?;
    Ok(out)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// The gauge: 100,000 runs of 1,000 keys queued behind one slot, through the concurrency layer;
/// answers the gaps between one run's start and the next's (the run itself does nothing).
async fn fair_gauge() -> Result<Vec<Duration>, BoxError> {
    use gateway_layers::admission::{Gauge, KeyLimits};
    use gateway_layers::concurrency::ConcurrencyLimitLayer;
    use tower::{Layer as _, Service as _};

    let gauge = Gauge::new(1, FAIR_QUEUED + 1);
    let starts = Arc::new(std::sync::Mutex::new(Vec::with_capacity(FAIR_QUEUED)));
    let record = starts.clone();
    let svc = ConcurrencyLimitLayer::new(gauge.clone()).layer(tower::service_fn(
        move |_req: http::Request<()>| {
            record
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Instant::now());
            async { Ok::<_, std::convert::Infallible>(()) }
        },
    ));
    // Hold the slot while the queue fills, so every run is queued before the first claim.
    let hold = gauge.admit().map_err(|e| e.to_string())?;
    let release = Arc::new(tokio::sync::Notify::new());
    let held = {
        let mut req = http::Request::new(());
        req.extensions_mut().insert(hold);
        let released = release.clone();
        let mut svc = ConcurrencyLimitLayer::new(gauge.clone()).layer(tower::service_fn(
            move |_req: http::Request<()>| {
                let released = released.clone();
                async move {
                    released.notified().await;
                    Ok::<_, std::convert::Infallible>(())
                }
            },
        ));
        tokio::spawn(svc.call(req))
    };
    let keys: Vec<Arc<str>> = (0..FAIR_KEYS)
        .map(|k| Arc::from(format!("key{k}")))
        .collect();
    let mut runs = Vec::with_capacity(FAIR_QUEUED);
    for i in 0..FAIR_QUEUED {
        let k = (i * 7919) % FAIR_KEYS;
        let limits = KeyLimits {
            weight: 1 + (k % 4) as u32,
            max_concurrent: k.is_multiple_of(3).then_some(1),
            max_queued: None,
        };
        let ticket = gauge
            .admit_for(keys[k].clone(), limits)
            .map_err(|e| e.to_string())?;
        let mut req = http::Request::new(());
        req.extensions_mut().insert(ticket);
        // The call takes the run's place in the line at once; the task then waits for its slot.
        let mut svc = svc.clone();
        runs.push(tokio::spawn(svc.call(req)));
    }
    release.notify_one();
    held.await?.map_err(|e| e.to_string())?;
    for run in runs {
        run.await?.map_err(|e| e.to_string())?;
    }
    let starts = starts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(starts
        .windows(2)
        .map(|w| w[1] - w[0])
        .take(FAIR_QUEUED)
        .collect())
}

/// PostgreSQL: 100,000 queued jobs of 1,000 owners in a database of its own, tagged as the
/// gateway tags them; times the store's own claim (`PgStore::claim` of one job, through
/// `claude_gateway::jobs::bench`), each claimed job then finished so the held counts stay as in a
/// running service.
async fn fair_claims_pg() -> Result<Vec<Duration>, BoxError> {
    use claude_gateway::jobs::bench::PgClaims;
    use claude_gateway::jobs::{JobRecord, NewJob};

    let db = common::postgres::TestDb::create().await;
    // A third of the owners capped at one running job, as in the gauge's run.
    let (owners, caps): (Vec<String>, Vec<i64>) = (0..FAIR_KEYS)
        .filter(|k| k.is_multiple_of(3))
        .map(|k| (format!("key{k}"), 1))
        .unzip();
    // Opened as a replica opens it: the schema is migrated here.
    let claims = PgClaims::open(&db.url(), "bench", owners, caps).await?;
    let pool = sqlx::PgPool::connect(&db.url()).await?;
    // Every row holds a record the claim reads back, naming its row's job.
    let record = serde_json::to_string(&JobRecord::queued(
        "JOBID".into(),
        NewJob::new("key0", "p", "a", 1.0, 60),
        chrono::Utc::now(),
    ))?;
    // Tags as SFQ gives them to 1,000 owners of weights 1-4 submitting in turn: the owner's nth
    // job starts at n/weight.
    sqlx::query(
        "INSERT INTO jobs (job_id, owner, status, created_at, record_bytes, summary, record, vtag) \
         SELECT 'job' || i, 'key' || (i % $2), 'queued', i, 2, '{}', \
                replace($3, 'JOBID', 'job' || i), \
                (i / $2)::DOUBLE PRECISION / (1 + (i % $2) % 4) \
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(FAIR_QUEUED as i64)
    .bind(FAIR_KEYS as i64)
    .bind(&record)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE jobs").execute(&pool).await?;
    let mut times = Vec::with_capacity(FAIR_CLAIMS);
    for _ in 0..FAIR_CLAIMS {
        let started = Instant::now();
        let claimed = claims.claim_one().await?;
        times.push(started.elapsed());
        let Some(job_id) = claimed else { break };
        sqlx::query("UPDATE jobs SET status = 'completed', finished_at = 1 WHERE job_id = $1")
            .bind(job_id)
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    Ok(times)
}
