//! How a run's end becomes a record: the status the contract names, the fields the outcome
//! filled, an `error` line for anything but success, and the output cap applied with its flags.

use chrono::{DateTime, Utc};

use crate::agent::{AgentError, AgentOutcome};
use crate::run::RunFailure;

use serde_json::Value;

use super::record::{cap_text, format_iso, JobRecord, JobStatus};

/// Longest `error` line kept.
const ERROR_LINE_MAX: usize = 300;

/// Records a run that ended with an outcome: `completed` when the CLI exited 0 and reported no
/// error (and, when the job gave a `json_schema`, produced a value for it), `failed` otherwise.
/// `output`, `result` and `stderr` are each cut at `cap` bytes.
pub(crate) fn with_outcome(
    record: &mut JobRecord,
    outcome: AgentOutcome,
    cap: usize,
    now: DateTime<Utc>,
) {
    // The CLI may end "successfully" with prose after the model ignored its StructuredOutput tool.
    let schema_unmet = record.options.json_schema.is_some() && outcome.structured_output.is_none();
    let succeeded = outcome.succeeded() && !schema_unmet;
    record.status = if succeeded {
        JobStatus::Completed
    } else {
        JobStatus::Failed
    };
    record.finished_at = Some(now);
    record.error = match (succeeded, outcome.succeeded()) {
        (true, _) => None,
        (false, true) => Some("the agent did not produce a value that fits json_schema".to_owned()),
        (false, false) => Some(failure_line(&outcome)),
    };
    record.exit_code = outcome.exit_code;
    record.usage = outcome.usage;
    record.cost_usd = outcome.cost_usd;
    record.session_id = outcome.session_id;
    record.duration_ms = Some(outcome.duration_ms);
    record.is_error = Some(outcome.is_error);
    record.subtype = outcome.subtype;
    record.structured_output = outcome.structured_output;

    let mut output_cut = false;
    record.output = match outcome.result_line {
        Some(line) => {
            let (line, cut) = cap_text(line, cap);
            output_cut |= cut;
            vec![line]
        }
        None => Vec::new(),
    };
    record.result = outcome.text.map(|text| {
        let (text, cut) = cap_text(text, cap);
        output_cut |= cut;
        text
    });
    record.output_truncated = output_cut;
    let (stderr, cut) = cap_text(outcome.stderr, cap);
    record.stderr = Some(stderr);
    record.stderr_truncated = outcome.stderr_truncated || cut;
}

/// Records a run that produced no outcome: `timeout` when its deadline passed, `error` otherwise.
pub(crate) fn with_failure(record: &mut JobRecord, failure: RunFailure, now: DateTime<Utc>) {
    record.finished_at = Some(now);
    match failure {
        RunFailure::TimedOut(_) => {
            record.status = JobStatus::Timeout;
            record.error = Some(format!(
                "the job ran past its timeout of {} seconds and its agent was stopped",
                record.timeout_seconds
            ));
        }
        RunFailure::TimedOutBeforeStart(_) => {
            record.status = JobStatus::Timeout;
            record.error = Some(format!(
                "the job ran past its timeout of {} seconds before its agent started: preparing its workspace took too long",
                record.timeout_seconds
            ));
        }
        other => {
            if matches!(other, RunFailure::Agent(AgentError::OutputTooLarge { .. })) {
                // Nothing of the output could be kept: the most truncated output there is.
                record.output_truncated = true;
            }
            record.status = JobStatus::Error;
            record.error = Some(one_line(&other.to_string()));
        }
    }
}

/// Records a job stopped before it ended by itself (cancelled, or the gateway shut down).
pub(crate) fn stopped(record: &mut JobRecord, reason: &str, now: DateTime<Utc>) {
    record.status = JobStatus::Error;
    record.finished_at = Some(now);
    record.error = Some(one_line(reason));
}

/// Records a job the gateway stopped while it ran (killed, or shut down past its grace period):
/// an error that is not the job's doing, flagged `interrupted`.
pub(crate) fn interrupted(record: &mut JobRecord, reason: &str, now: DateTime<Utc>) {
    stopped(record, reason, now);
    record.interrupted = true;
}

/// Puts a job the gateway stopped while it ran back in the queue (its attempt stays counted);
/// answers the data of the status event that tells of it.
pub(crate) fn requeued(record: &mut JobRecord, reason: &str, now: DateTime<Utc>) -> Value {
    record.status = JobStatus::Queued;
    record.started_at = None;
    let mut event = record.id_and_status();
    event["at"] = serde_json::json!(format_iso(&now));
    event["requeued"] = Value::Bool(true);
    event["reason"] = Value::String(one_line(reason));
    event["attempts"] = serde_json::json!(record.attempts);
    event["max_attempts"] = serde_json::json!(record.max_attempts);
    event
}

/// One line saying why an outcome is a failure.
fn failure_line(outcome: &AgentOutcome) -> String {
    if outcome.is_error {
        let kind = outcome.subtype.as_deref().unwrap_or("error");
        return match outcome
            .text
            .as_deref()
            .map(one_line)
            .filter(|t| !t.is_empty())
        {
            Some(text) => one_line(&format!("the agent reported an error ({kind}): {text}")),
            None => format!("the agent reported an error ({kind})"),
        };
    }
    let first_stderr = outcome
        .stderr
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty());
    let head = match outcome.exit_code {
        Some(code) => format!("the agent exited with code {code}"),
        None => "the agent was killed by a signal".to_owned(),
    };
    match first_stderr {
        Some(line) => one_line(&format!("{head}: {line}")),
        None => head,
    }
}

/// Collapses whitespace and cuts at [`ERROR_LINE_MAX`] characters.
fn one_line(text: &str) -> String {
    crate::agent::one_line(text, ERROR_LINE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::record::NewJob;

    fn record() -> JobRecord {
        JobRecord::queued(
            "0".repeat(32),
            NewJob::new("o", "p", "a", 1.0, 7),
            Utc::now(),
        )
    }

    #[test]
    fn exit_zero_without_error_completes_with_everything_filled() {
        let mut job = record();
        let outcome = AgentOutcome {
            exit_code: Some(0),
            result_line: Some(r#"{"type":"result","result":"hi"}"#.into()),
            text: Some("hi".into()),
            usage: Some(crate::agent::Usage {
                input_tokens: 5,
                output_tokens: 2,
                ..Default::default()
            }),
            cost_usd: Some(0.01),
            session_id: Some("s".into()),
            duration_ms: 12,
            ..AgentOutcome::default()
        };
        with_outcome(&mut job, outcome, 1024, Utc::now());
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(job.result.as_deref(), Some("hi"));
        assert_eq!(job.output.len(), 1);
        assert_eq!(job.usage.as_ref().map(|u| u.input_tokens), Some(5));
        assert_eq!(job.error, None);
        assert_eq!(job.is_error, Some(false));
        assert!(job.finished_at.is_some());
    }

    #[test]
    fn a_nonzero_exit_fails_with_the_first_stderr_line() {
        let mut job = record();
        let outcome = AgentOutcome {
            exit_code: Some(3),
            stderr: "\n  boom: disk full\nmore\n".into(),
            ..AgentOutcome::default()
        };
        with_outcome(&mut job, outcome, 1024, Utc::now());
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.exit_code, Some(3));
        assert_eq!(
            job.error.as_deref(),
            Some("the agent exited with code 3: boom: disk full")
        );
        assert_eq!(job.stderr.as_deref(), Some("\n  boom: disk full\nmore\n"));
    }

    #[test]
    fn output_past_the_cap_is_cut_and_flagged() {
        let mut job = record();
        let big = "x".repeat(100);
        let outcome = AgentOutcome {
            exit_code: Some(0),
            result_line: Some(big.clone()),
            text: Some(big.clone()),
            stderr: big,
            ..AgentOutcome::default()
        };
        with_outcome(&mut job, outcome, 10, Utc::now());
        assert_eq!(job.output, ["x".repeat(10)]);
        assert_eq!(job.result.as_deref().map(str::len), Some(10));
        assert_eq!(job.stderr.as_deref().map(str::len), Some(10));
        assert!(job.output_truncated && job.stderr_truncated);
    }

    #[test]
    fn a_deadline_is_a_timeout_and_anything_else_an_error() {
        let mut job = record();
        with_failure(
            &mut job,
            RunFailure::TimedOut("deadline of 7s elapsed".into()),
            Utc::now(),
        );
        assert_eq!(job.status, JobStatus::Timeout);
        assert!(job
            .error
            .as_deref()
            .is_some_and(|e| e.contains("7 seconds")));

        let mut job = record();
        let failure = RunFailure::Agent(AgentError::OutputTooLarge { limit: 5 });
        with_failure(&mut job, failure, Utc::now());
        assert_eq!(job.status, JobStatus::Error);
        assert!(job.output_truncated);
    }

    #[test]
    fn error_lines_are_one_line_and_bounded() {
        let line = one_line(&format!("a\nb\t{}", "c".repeat(1000)));
        assert!(!line.contains('\n'));
        assert!(line.chars().count() <= ERROR_LINE_MAX + 1);
    }
}
