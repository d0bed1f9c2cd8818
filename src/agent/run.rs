//! One agent run, start to finish: spawn, feed the prompt, drain both streams, decide the outcome.
//!
//! Everything happens inside one future. The process guard lives in it, so dropping the future at
//! any await point (timeout, cancel, client gone, shutdown) kills the agent's whole process group.

use std::io;
use std::path::Path;
use std::pin::{pin, Pin};
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::time::{sleep, Instant, Sleep};

use crate::contain::{Capped, PlacedCell, Supervised};

use super::command::{build_command, AgentRequest, ProgressSink};
use super::functions::{calls_in, FunctionCall};
use super::outcome::{AgentError, AgentOutcome};
use super::output::{self, Line, LineSplitter};
use super::service::ClaudeConfig;
use super::session::SessionArgs;

/// Size of each read from the agent's pipes.
const READ_CHUNK: usize = 64 * 1024;

/// How long to keep draining the pipes once the agent exited and its group was killed. They close
/// at once unless a process that left the group still holds them; the run does not wait for it.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Runs the CLI for `request` in `workspace` and waits for it to end.
///
/// Every stream-json event goes to `progress` as it arrives. Dropping the returned future kills the
/// agent's process group. With `stop_at_calls`, the run ends at the first `assistant` event that
/// calls the caller's functions (see [`super::functions`]): the group is killed and the outcome
/// holds the calls.
pub(crate) async fn run(
    config: &ClaudeConfig,
    request: AgentRequest,
    workspace: &Path,
    progress: Option<ProgressSink>,
    placed: Option<&PlacedCell>,
    session: &SessionArgs,
    stop_at_calls: bool,
) -> Result<AgentOutcome, AgentError> {
    let started = Instant::now();
    let mut cmd = build_command(config, &request, workspace, placed, session);
    let mut group = Supervised::spawn_run(&mut cmd).map_err(|source| AgentError::Spawn {
        bin: config.bin.clone(),
        source,
    })?;
    let pgid = group.pgid().as_raw();
    tracing::debug!(pgid, agent = %request.agent, "agent started");
    let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
        (group.take_stdin(), group.take_stdout(), group.take_stderr())
    else {
        // Built by build_command with piped stdio, so unreachable; dropping the group kills it.
        return Err(AgentError::Io(io::Error::other(
            "the agent's stdio was not piped",
        )));
    };

    // The prompt is written while both streams are read: a child that prints before it has read
    // all of a large prompt must never find us blocked on its stdin.
    let mut feed = pin!(feed_stdin(stdin, request.prompt));
    let mut feeding = true;

    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK];
    let (mut stdout_open, mut stderr_open) = (true, true);
    let mut status: Option<ExitStatus> = None;
    let mut lines = LineSplitter::new(config.stdout_cap);
    let mut errors = Capped::new(config.stderr_cap);
    let mut events = Events::new(progress, config.stdout_cap);
    events.watch_calls = stop_at_calls;
    let mut watchdog = Watchdog::new(config.inactivity_timeout);

    while stdout_open || stderr_open || status.is_none() {
        tokio::select! {
            () = &mut feed, if feeding => feeding = false,
            read = stdout.read(&mut out_buf), if stdout_open => {
                let Some(n) = pipe_read(read, &mut stdout_open, &mut watchdog)? else {
                    continue;
                };
                lines.push(&out_buf[..n], |line| events.line(line));
                if !events.calls.is_empty() {
                    // The caller runs the function: the run ends here, as a deadline ends it.
                    kill_the_rest(placed, pgid).await;
                    tracing::debug!(pgid, calls = events.calls.len(), "agent called the caller's functions; run ended");
                    return Ok(AgentOutcome {
                        tool_calls: std::mem::take(&mut events.calls),
                        usage: events.call_usage.take(),
                        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        ..AgentOutcome::default()
                    });
                }
            }
            read = stderr.read(&mut err_buf), if stderr_open => {
                let Some(n) = pipe_read(read, &mut stderr_open, &mut watchdog)? else {
                    continue;
                };
                // Past the cap the bytes are dropped, but reading goes on so the agent never
                // blocks on a full pipe.
                errors.push(&err_buf[..n]);
            }
            waited = group.wait(), if status.is_none() => {
                status = Some(waited.map_err(AgentError::Io)?);
                // The group is dead now, and with the run's cell so is every process that left
                // it (`setsid`, daemons): what is left in the pipes comes at once.
                kill_the_rest(placed, pgid).await;
                feeding = false;
                watchdog.set_period(DRAIN_GRACE.min(config.inactivity_timeout));
            }
            () = watchdog.expired() => {
                if status.is_some() {
                    tracing::debug!(pgid, "agent pipes still open after exit; stopped draining");
                    break;
                }
                tracing::warn!(pgid, after = ?config.inactivity_timeout, "agent produced no output; killing it");
                return Err(AgentError::Hung { after: config.inactivity_timeout });
            }
        }
    }

    let skipped_lines = lines.skipped();
    // The loop only ends once the leader was reaped.
    let Some(status) = status else {
        return Err(AgentError::Io(io::Error::other(
            "the agent's exit status was lost",
        )));
    };
    let cut_line = lines.finish();
    let (stderr, stderr_truncated) = (errors.lossy(), errors.truncated());
    let mut outcome = AgentOutcome {
        exit_code: status.code(),
        stderr,
        stderr_truncated,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..AgentOutcome::default()
    };
    tracing::debug!(pgid, exit_code = ?outcome.exit_code, duration_ms = outcome.duration_ms, "agent ended");

    // A final line without its newline: complete JSON counts, a fragment only if the agent chose
    // to exit (a crash mid-write leaves a fragment that says nothing about the format).
    if let Some(line) = cut_line {
        match output::classify(&line) {
            Line::Event(_) => events.line(&line),
            Line::NotJson if status.code().is_some() => events.line(&line),
            _ => {}
        }
    }

    let Events {
        result,
        garbage,
        dropped,
        rate_limit,
        ..
    } = events;
    outcome.rate_limit = rate_limit;
    if dropped > 0 {
        tracing::debug!(
            pgid,
            dropped,
            limit = config.stdout_cap,
            "agent events past the stdout limit were not forwarded"
        );
    }
    if let Some((event, raw)) = result {
        output::fill_from_result(&mut outcome, event, raw);
        return Ok(outcome);
    }
    if skipped_lines > 0 {
        // A line longer than the whole limit, and no result: nothing of the run can be told.
        return Err(AgentError::OutputTooLarge {
            limit: config.stdout_cap,
        });
    }
    if !status.success() {
        if let Some(available) = output::unknown_agent(&outcome.stderr, &request.agent) {
            return Err(AgentError::UnknownAgent {
                agent: request.agent,
                available: Some(available),
            });
        }
    }
    // Killed by a signal: the crash is the news, whatever it printed before.
    if status.code().is_some() {
        if let Some(sample) = garbage {
            return Err(AgentError::MalformedOutput { sample });
        }
    }
    Ok(outcome)
}

/// What a read from one of the agent's pipes brought: `Some(bytes read)`, the agent being active
/// (the watchdog is kicked), or `None` at the pipe's end (`open` is cleared).
fn pipe_read(
    read: io::Result<usize>,
    open: &mut bool,
    watchdog: &mut Watchdog,
) -> Result<Option<usize>, AgentError> {
    let n = read.map_err(AgentError::Io)?;
    if n == 0 {
        *open = false;
        return Ok(None);
    }
    watchdog.kick();
    Ok(Some(n))
}

/// Kills every process of the run's cell (what left the agent's group, `setsid`, daemons), if the
/// run has one; a failure is logged.
async fn kill_the_rest(placed: Option<&PlacedCell>, pgid: i32) {
    if let Some(placed) = placed {
        if let Err(error) = placed.cell.kill_all().await {
            tracing::error!(pgid, %error, "processes of the run survived its agent");
        }
    }
}

/// Writes the whole prompt, then closes stdin so the CLI sees the end of it.
async fn feed_stdin(mut stdin: ChildStdin, prompt: std::sync::Arc<str>) {
    match stdin.write_all(prompt.as_bytes()).await {
        Ok(()) => {}
        // The agent exited (or closed stdin) without reading everything: its exit tells the story.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
        Err(err) => tracing::warn!(%err, "writing the prompt to the agent failed"),
    }
    drop(stdin);
}

/// What the run keeps from stdout: the last `result` event and the first line that was not JSON;
/// and what it forwards: each event's line, as text (a parsed event would take many times its
/// size in memory), until `limit` bytes have been forwarded. Past that, events are dropped (once
/// said with a `gateway_truncated` event) but the lines are still read, so the run goes on and
/// its final result is kept.
struct Events {
    progress: Option<ProgressSink>,
    result: Option<(Value, String)>,
    garbage: Option<String>,
    /// Bytes of events forwarded so far.
    forwarded: usize,
    /// Bytes of events forwarded at most (`MAX_AGENT_STDOUT_BYTES`).
    limit: usize,
    /// Events not forwarded because the limit was reached.
    dropped: usize,
    /// Look for calls of the caller's functions.
    watch_calls: bool,
    /// The calls of the caller's functions seen so far.
    calls: Vec<FunctionCall>,
    /// The usage of the message that made them.
    call_usage: Option<super::outcome::Usage>,
    /// The last `rate_limit_event`.
    rate_limit: Option<super::outcome::RateLimit>,
}

impl Events {
    fn new(progress: Option<ProgressSink>, limit: usize) -> Self {
        Self {
            progress,
            result: None,
            garbage: None,
            forwarded: 0,
            limit,
            dropped: 0,
            watch_calls: false,
            calls: Vec::new(),
            call_usage: None,
            rate_limit: None,
        }
    }

    fn line(&mut self, line: &[u8]) {
        let within = self.forwarded.saturating_add(line.len()) <= self.limit;
        if !within && !output::may_be_result(line) && !output::may_be_rate_limit(line) {
            // Past the limit only the result matters: other lines are not even parsed.
            if !line.iter().all(u8::is_ascii_whitespace) {
                self.drop_event();
            }
            return;
        }
        match output::classify(line) {
            Line::Event(event) => {
                if self.watch_calls {
                    let calls = calls_in(&event);
                    if !calls.is_empty() {
                        self.call_usage = event.pointer("/message/usage").and_then(output::usage);
                        self.calls.extend(calls);
                    }
                }
                if let Some(limit) = super::outcome::RateLimit::from_event(&event) {
                    self.rate_limit = Some(limit);
                }
                if output::is_result(&event) {
                    self.result = Some((event, String::from_utf8_lossy(line).into_owned()));
                }
                if !within {
                    self.drop_event();
                    return;
                }
                self.forwarded += line.len();
                if let Some(ProgressSink(tx)) = &self.progress {
                    // A consumer that went away does not stop the run.
                    let _ = tx.send(String::from_utf8_lossy(line).into());
                }
            }
            Line::NotJson => {
                if self.garbage.is_none() {
                    self.garbage = Some(output::sample(line));
                }
            }
            Line::Blank => {}
        }
    }

    /// Counts an event not forwarded; the first one is announced to the consumer.
    fn drop_event(&mut self) {
        self.dropped += 1;
        if self.dropped > 1 {
            return;
        }
        if let Some(ProgressSink(tx)) = &self.progress {
            let note = serde_json::json!({
                "type": "gateway_truncated",
                "reason": "the agent's events went past MAX_AGENT_STDOUT_BYTES; later events are not forwarded, the final result is kept",
                "limit_bytes": self.limit,
            });
            let _ = tx.send(note.to_string().into());
        }
    }
}

// The inactivity watchdog: an agent that prints nothing for too long is hung.
//
// A hung agent must be caught long before a 45-minute job timeout. The run kicks the
// watchdog on every byte from stdout or stderr; if it ever fires, the run stops.

/// A timer pushed back by every sign of life.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// How long silence may last before the timer fires.
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Watchdog {
    /// Starts the timer.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            timer: Box::pin(sleep(timeout)),
        }
    }

    /// The agent showed life: restart the full period.
    pub(crate) fn kick(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.timeout);
    }

    /// Changes the period and restarts the timer (the short drain once the agent has exited).
    pub(crate) fn set_period(&mut self, period: Duration) {
        self.timeout = period;
        self.kick();
    }

    /// Completes when the timer runs out. Cancel safe: use it in `select!` and kick between polls.
    pub(crate) async fn expired(&mut self) {
        self.timer.as_mut().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long after `start` `dog` fires.
    async fn fires_after(mut dog: Watchdog, start: Instant) -> Duration {
        dog.expired().await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_after_the_timeout_without_activity() {
        let start = Instant::now();
        let dog = Watchdog::new(Duration::from_secs(10));
        assert_eq!(fires_after(dog, start).await, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn each_kick_restarts_the_timeout() {
        let start = Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(10));
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(6)).await;
            dog.kick();
        }
        assert_eq!(fires_after(dog, start).await, Duration::from_secs(28));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_period_applies_from_now() {
        let start = Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(600));
        tokio::time::advance(Duration::from_secs(5)).await;
        dog.set_period(Duration::from_secs(2));
        assert_eq!(fires_after(dog, start).await, Duration::from_secs(7));
    }
}
