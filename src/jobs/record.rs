//! The job record: what a caller reads from `GET /jobs/{id}`, and what a [`JobStore`] keeps.
//!
//! Every field of the replaced service's record is here under its old name (`status`, `prompt`,
//! `agent`, `created_at`, `started_at`, `finished_at`, `metadata`, `exit_code`, `output`, `stderr`,
//! `error`), so its callers keep working; the rest are additions.
//!
//! [`JobStore`]: super::JobStore

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a job is in its life. Terminal statuses never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Admitted, waiting for a run slot.
    Queued,
    /// Holding a run slot: its workspace is being prepared or its agent runs.
    Running,
    /// The agent exited 0 and did not report an error.
    Completed,
    /// The agent ran but exited non-zero or reported an error.
    Failed,
    /// The job ran past its `timeout_seconds`; its process group was killed.
    Timeout,
    /// The job could not run or was stopped: workspace failure, unknown agent, hung agent, output
    /// too large, cancelled, gateway shut down. `error` says which.
    Error,
}

impl JobStatus {
    /// Every status, in the order of a job's life.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Timeout,
        JobStatus::Error,
    ];

    /// Whether the job is over: its record will not change again.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// The wire name (`queued`, `running`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Timeout => "timeout",
            JobStatus::Error => "error",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown status {:?}; expected one of queued, running, completed, failed, timeout, error",
            self.0
        )
    }
}

impl std::error::Error for UnknownStatus {}

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Tokens the agent reported. A copy of the agent's own type that can also be read back, so a
/// durable store can keep it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUsage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
}

impl From<&crate::agent::Usage> for JobUsage {
    fn from(usage: &crate::agent::Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
        }
    }
}

/// One job, as stored and as answered by `GET /jobs/{id}`.
///
/// Passed by value: a store hands out copies, never references into itself, so a store may as
/// well live in another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id (32 hex characters).
    pub job_id: String,
    /// The name of the token that created the job; only that caller may see it.
    pub owner: String,
    /// Where the job is in its life.
    pub status: JobStatus,
    /// The prompt as submitted.
    pub prompt: String,
    /// The agent asked for.
    pub agent: String,
    /// The budget given to the CLI.
    pub max_budget_usd: f64,
    /// The run's deadline, queue time not counted.
    pub timeout_seconds: u64,
    /// When the job was accepted.
    #[serde(with = "iso")]
    pub created_at: DateTime<Utc>,
    /// When it got a run slot; `null` while queued and for a job cancelled in the queue.
    #[serde(with = "iso_opt")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(with = "iso_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The caller's own data, given back unchanged.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The CLI's exit code; `null` until it exited, or when it was killed by a signal.
    pub exit_code: Option<i32>,
    /// The stdout lines of the CLI's JSON result, as the replaced service returned them: one line,
    /// the final `result` event. Empty until the run ended with a result.
    pub output: Vec<String>,
    /// The CLI's stderr; `null` until the run ended.
    pub stderr: Option<String>,
    /// Why the job failed, ended in error or timed out, on one line.
    pub error: Option<String>,
    /// The answer text: the `result` field of the final event.
    pub result: Option<String>,
    /// Tokens used, as the CLI reported them.
    pub usage: Option<JobUsage>,
    /// Cost of the run in USD, as the CLI reported it.
    pub cost_usd: Option<f64>,
    /// The CLI's session id.
    pub session_id: Option<String>,
    /// Wall time of the agent run in milliseconds.
    pub duration_ms: Option<u64>,
    /// Whether the CLI reported the run as failed; `null` until it ended.
    pub is_error: Option<bool>,
    /// The `subtype` of the final event (`success`, `error_max_budget_usd`, ...).
    pub subtype: Option<String>,
    /// Whether `output` or `result` was cut at the gateway's output cap (or the agent's output was
    /// too large to keep at all).
    pub output_truncated: bool,
    /// Whether `stderr` was cut at a cap.
    pub stderr_truncated: bool,
}

/// What a new job starts from: the checked body of `POST /execute` and its caller.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The caller's token name.
    pub owner: String,
    /// The prompt, sent to the agent on stdin.
    pub prompt: String,
    /// A plain agent name.
    pub agent: String,
    /// Budget in USD, positive.
    pub max_budget_usd: f64,
    /// Deadline of the run in seconds, positive.
    pub timeout_seconds: u64,
    /// The caller's data.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl JobRecord {
    /// Roughly what the record holds in memory, for the store's byte budget: its variable-size
    /// text, which dwarfs the fixed fields.
    pub fn approx_bytes(&self) -> usize {
        let metadata = self
            .metadata
            .as_ref()
            .map_or(0, |m| serde_json::to_vec(m).map_or(0, |v| v.len()));
        std::mem::size_of::<Self>()
            + self.job_id.len()
            + self.owner.len()
            + self.prompt.len()
            + self.agent.len()
            + self.output.iter().map(String::len).sum::<usize>()
            + self.stderr.as_ref().map_or(0, String::len)
            + self.error.as_ref().map_or(0, String::len)
            + self.result.as_ref().map_or(0, String::len)
            + self.session_id.as_ref().map_or(0, String::len)
            + metadata
    }

    /// A queued job, created now.
    pub fn queued(job_id: String, job: NewJob, created_at: DateTime<Utc>) -> Self {
        Self {
            job_id,
            owner: job.owner,
            status: JobStatus::Queued,
            prompt: job.prompt,
            agent: job.agent,
            max_budget_usd: job.max_budget_usd,
            timeout_seconds: job.timeout_seconds,
            created_at,
            started_at: None,
            finished_at: None,
            metadata: job.metadata,
            exit_code: None,
            output: Vec::new(),
            stderr: None,
            error: None,
            result: None,
            usage: None,
            cost_usd: None,
            session_id: None,
            duration_ms: None,
            is_error: None,
            subtype: None,
            output_truncated: false,
            stderr_truncated: false,
        }
    }

    /// The record without its large fields, as listed by `GET /jobs`.
    pub fn summary(&self) -> JobSummary {
        JobSummary {
            job_id: self.job_id.clone(),
            status: self.status,
            agent: self.agent.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            metadata: self.metadata.clone(),
            exit_code: self.exit_code,
            error: self.error.clone(),
            usage: self.usage.clone(),
            cost_usd: self.cost_usd,
            session_id: self.session_id.clone(),
            duration_ms: self.duration_ms,
            is_error: self.is_error,
            output_truncated: self.output_truncated,
            stderr_truncated: self.stderr_truncated,
        }
    }
}

/// A job in a listing: the record less `prompt`, `output`, `stderr` and `result`, which may each
/// be megabytes. `GET /jobs/{id}` has the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job's id.
    pub job_id: String,
    /// Where the job is in its life.
    pub status: JobStatus,
    /// The agent asked for.
    pub agent: String,
    /// When the job was accepted.
    #[serde(with = "iso")]
    pub created_at: DateTime<Utc>,
    /// When it got a run slot.
    #[serde(with = "iso_opt")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(with = "iso_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The caller's own data.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The CLI's exit code.
    pub exit_code: Option<i32>,
    /// Why the job did not complete.
    pub error: Option<String>,
    /// Tokens used.
    pub usage: Option<JobUsage>,
    /// Cost in USD.
    pub cost_usd: Option<f64>,
    /// The CLI's session id.
    pub session_id: Option<String>,
    /// Wall time of the run in milliseconds.
    pub duration_ms: Option<u64>,
    /// Whether the CLI reported the run as failed.
    pub is_error: Option<bool>,
    /// Whether `output` or `result` was cut.
    pub output_truncated: bool,
    /// Whether `stderr` was cut.
    pub stderr_truncated: bool,
}

/// The current time at the precision records keep (microseconds), so a time read back from a
/// store or a cursor compares equal to the one written.
pub fn timestamp_now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Formats a time the way the replaced service did (Python's `datetime.isoformat()` on an aware
/// UTC time): `2025-01-31T09:15:02.123456+00:00`.
pub fn format_iso(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Serde for a required time in the replaced service's format; reads any RFC 3339 time.
mod iso {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_iso(time))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// Serde for an optional time; `null` when absent.
mod iso_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        time: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => s.serialize_str(&super::format_iso(time)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> JobRecord {
        let created = Utc.with_ymd_and_hms(2025, 1, 31, 9, 15, 2).unwrap();
        JobRecord::queued(
            "0123456789abcdef0123456789abcdef".into(),
            NewJob {
                owner: "ci".into(),
                prompt: "hi".into(),
                agent: "general-purpose".into(),
                max_budget_usd: 5.0,
                timeout_seconds: 2700,
                metadata: None,
            },
            created,
        )
    }

    #[test]
    fn record_has_every_field_of_the_replaced_service() {
        let json = serde_json::to_value(sample()).unwrap();
        for field in [
            "status",
            "prompt",
            "agent",
            "created_at",
            "started_at",
            "finished_at",
            "metadata",
            "exit_code",
            "output",
            "stderr",
            "error",
        ] {
            assert!(json.get(field).is_some(), "missing {field}: {json}");
        }
        assert_eq!(json["status"], "queued");
        assert_eq!(json["created_at"], "2025-01-31T09:15:02.000000+00:00");
        assert_eq!(json["started_at"], serde_json::Value::Null);
        assert_eq!(json["output"], serde_json::json!([]));
    }

    #[test]
    fn record_reads_back_what_it_wrote() {
        let mut record = sample();
        record.finished_at = Some(record.created_at);
        record.usage = Some(JobUsage {
            input_tokens: 3,
            ..JobUsage::default()
        });
        let text = serde_json::to_string(&record).unwrap();
        let back: JobRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn statuses_parse_from_their_wire_names() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("done".parse::<JobStatus>().is_err());
        assert!(JobStatus::Error.is_terminal() && !JobStatus::Running.is_terminal());
    }
}
