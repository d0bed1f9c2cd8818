//! The job record: what a caller reads from `GET /jobs/{id}`, and what a [`JobStore`] keeps.
//!
//! Every field of the replaced service's record is here under its old name (`status`, `prompt`,
//! `agent`, `created_at`, `started_at`, `finished_at`, `metadata`, `exit_code`, `output`, `stderr`,
//! `error`), so its callers keep working; the rest are additions.
//!
//! [`JobStore`]: super::JobStore

use crate::agent::{RunOptions, Usage};
use crate::workspace::{Changes, DeliverRequest, Delivery};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Where a job is in its life. Terminal statuses never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
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

/// One job, as stored and as answered by `GET /jobs/{id}`: its [`JobSummary`] (what a listing
/// shows) and the large fields only the record endpoint answers.
///
/// The summary's fields read and write through the record (`record.status`), because a record is
/// its summary plus the rest; on the wire they are flattened into one object.
///
/// Passed by value: a store hands out copies, never references into itself, so a store may as
/// well live in another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobRecord {
    /// Everything a listing shows.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// The name of the token that created the job; only that caller may see it.
    pub owner: String,
    /// The prompt as submitted.
    pub prompt: String,
    /// The caller's own data, as submitted.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The budget given to the CLI.
    pub max_budget_usd: f64,
    /// The run's deadline, queue time not counted.
    pub timeout_seconds: u64,
    /// The stdout lines of the CLI's JSON result, as the replaced service returned them: one line,
    /// the final `result` event. Empty until the run ended with a result.
    pub output: Vec<String>,
    /// The CLI's stderr; `null` until the run ended.
    pub stderr: Option<String>,
    /// The answer text: the `result` field of the final event.
    pub result: Option<String>,
    /// The `subtype` of the final event (`success`, `error_max_budget_usd`, ...).
    pub subtype: Option<String>,
    /// The options the run was started with (model, prompts, tools, schema, ...), as given.
    #[serde(default, skip_serializing_if = "RunOptions::is_empty")]
    pub options: RunOptions,
    /// The value the run produced for its `json_schema`; `null` without a schema or a value.
    #[serde(default)]
    pub structured_output: Option<serde_json::Value>,
    /// The earlier job whose session this one continues (`continue_from` of `POST /execute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_from: Option<String>,
    /// The delivery asked for (`deliver` of `POST /execute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<DeliverRequest>,
    /// What the run changed in its checkout; `null` until it ended, and for a run without a
    /// base repository or that never got to end by itself (timeout, cancel).
    #[serde(default)]
    pub changes: Option<Changes>,
    /// What delivery did, when it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Where the job's webhooks go (`callback_url` of `POST /execute`, else `WEBHOOK_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The job's webhooks and every try of them (read from the store with the record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookView>,
    /// The patch (base64), kept with the record and answered by `GET /jobs/{id}/diff` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub patch: Option<String>,
    /// Why a queued job is not dispatched now, when something holds it back (e.g. `upstream rate
    /// limit: dispatch paused until <time>`); absent otherwise. Filled in when the record is
    /// answered, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_reason: Option<String>,
}

/// One webhook of a job, as the record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// Its `webhook-id`, the same for every try.
    pub id: String,
    /// `job.started` or `job.ended`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `delivered`, `failed` (given up after `WEBHOOK_MAX_ATTEMPTS`) or `skipped`
    /// (the job ended without starting).
    pub state: String,
    /// Every try so far, oldest first.
    pub attempts: Vec<WebhookAttempt>,
    /// When the next try is due, while pending (RFC 3339).
    pub next_attempt_at: Option<String>,
}

/// One try of a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookAttempt {
    /// When it was sent (RFC 3339).
    pub at: String,
    /// The receiver's status code, when it answered.
    pub status_code: Option<u16>,
    /// What went wrong: no answer in time, a refused address, a status that is not 2xx.
    pub error: Option<String>,
}

impl JobSummary {
    /// `{"job_id": …, "status": …}`: the body of a 202 and the gist of every status event.
    pub(crate) fn id_and_status(&self) -> serde_json::Value {
        serde_json::json!({ "job_id": self.job_id, "status": self.status })
    }

    /// The data of the `status` event that tells of the job's current status: its id, status,
    /// when it got there and its error.
    pub(crate) fn status_event(&self) -> serde_json::Value {
        let at = match self.status {
            JobStatus::Queued => Some(self.created_at),
            JobStatus::Running => self.started_at,
            _ => self.finished_at,
        };
        let mut data = self.id_and_status();
        data["at"] = serde_json::json!(at.as_ref().map(format_iso));
        data["error"] = serde_json::json!(self.error);
        data
    }
}

impl std::ops::Deref for JobRecord {
    type Target = JobSummary;

    fn deref(&self) -> &JobSummary {
        &self.summary
    }
}

impl std::ops::DerefMut for JobRecord {
    fn deref_mut(&mut self) -> &mut JobSummary {
        &mut self.summary
    }
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
    /// The run's options, checked against the operator's policy.
    pub options: RunOptions,
    /// Times the job may start, at least 1 (see [`JobSummary::max_attempts`]).
    pub max_attempts: u32,
    /// The earlier job of the same owner whose session this one continues.
    pub continue_from: Option<String>,
    /// Delivery asked for.
    pub deliver: Option<DeliverRequest>,
    /// Where its webhooks go.
    pub callback_url: Option<String>,
}

impl NewJob {
    /// A job with only the required fields set: no metadata, the default options, one attempt,
    /// no earlier session to continue, no delivery and no webhooks. Callers set the rest with
    /// struct update syntax.
    pub fn new(
        owner: impl Into<String>,
        prompt: impl Into<String>,
        agent: impl Into<String>,
        max_budget_usd: f64,
        timeout_seconds: u64,
    ) -> Self {
        Self {
            owner: owner.into(),
            prompt: prompt.into(),
            agent: agent.into(),
            max_budget_usd,
            timeout_seconds,
            metadata: None,
            options: RunOptions::default(),
            max_attempts: 1,
            continue_from: None,
            deliver: None,
            callback_url: None,
        }
    }
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
            + self.options.approx_bytes()
            + self.patch.as_ref().map_or(0, String::len)
            + self.changes.as_ref().map_or(0, |c| {
                c.files.iter().map(|f| f.path.len() + 64).sum::<usize>() + 64 * c.commits.len()
            })
            + self
                .structured_output
                .as_ref()
                .map_or(0, |v| serde_json::to_vec(v).map_or(0, |v| v.len()))
    }

    /// A queued job, created now.
    pub fn queued(job_id: String, job: NewJob, created_at: DateTime<Utc>) -> Self {
        Self {
            summary: JobSummary {
                job_id,
                status: JobStatus::Queued,
                agent: job.agent,
                created_at,
                started_at: None,
                finished_at: None,
                exit_code: None,
                error: None,
                usage: None,
                cost_usd: None,
                session_id: None,
                duration_ms: None,
                is_error: None,
                output_truncated: false,
                stderr_truncated: false,
                attempts: 0,
                max_attempts: job.max_attempts.max(1),
                interrupted: false,
                replica: None,
            },
            owner: job.owner,
            prompt: job.prompt,
            metadata: job.metadata,
            max_budget_usd: job.max_budget_usd,
            timeout_seconds: job.timeout_seconds,
            output: Vec::new(),
            stderr: None,
            result: None,
            subtype: None,
            options: job.options,
            structured_output: None,
            continue_from: job.continue_from,
            deliver: job.deliver,
            changes: None,
            delivery: None,
            patch: None,
            callback_url: job.callback_url,
            webhooks: Vec::new(),
            queued_reason: None,
        }
    }
}

/// A job in a listing: the record less `prompt`, `metadata`, `output`, `stderr` and `result`,
/// which may each be megabytes (a listing of 500 jobs must stay small however it is read).
/// `GET /jobs/{id}` has the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// The CLI's exit code.
    pub exit_code: Option<i32>,
    /// Why the job did not complete.
    pub error: Option<String>,
    /// Tokens used.
    pub usage: Option<Usage>,
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
    /// How many times a run of the job started (a job queued again after the gateway stopped
    /// while it ran starts more than once).
    #[serde(default)]
    pub attempts: u32,
    /// How many times the caller allows the job to start: past 1, a job the gateway stopped
    /// while it ran is queued again rather than recorded as interrupted.
    #[serde(default = "one")]
    pub max_attempts: u32,
    /// The job ended because the gateway stopped while it ran (killed, or shut down past its
    /// grace period), not because of anything the job did.
    #[serde(default)]
    pub interrupted: bool,
    /// The replica that ran the job (its `REPLICA_ID`); `null` until a replica took it.
    #[serde(default)]
    pub replica: Option<String>,
}

fn one() -> u32 {
    1
}

/// The current time at the precision records keep (microseconds), so a time read back from a
/// store or a cursor compares equal to the one written.
pub(crate) fn timestamp_now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Formats a time the way the replaced service did (Python's `datetime.isoformat()` on an aware
/// UTC time): `2025-01-31T09:15:02.123456+00:00`.
pub(crate) fn format_iso(time: &DateTime<Utc>) -> String {
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

// Job ids: unguessable, so knowing one id tells a caller nothing about any other.

/// Length of a job id: a UUID v4 in simple (hex, no dashes) form.
pub(crate) const JOB_ID_LEN: usize = 32;

/// A fresh job id: 122 random bits as 32 lowercase hex characters.
///
/// The replaced service used 12 hex characters of a UUID, few enough to guess; the full UUID is
/// what makes an id safe to hand to whoever asks about the job.
pub(crate) fn new_job_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `id` has the shape of a job id, so a path segment that cannot name a job is answered
/// without asking the store.
pub(crate) fn is_job_id(id: &str) -> bool {
    id.len() == JOB_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())
}

// Cutting text to a byte cap without splitting a character, so the cut is visible in a flag
// rather than in broken UTF-8.

/// Cuts `text` to at most `cap` bytes at a character boundary; says whether anything was cut.
pub(crate) fn cap_text(mut text: String, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

#[cfg(test)]
mod cap_tests {
    use super::cap_text;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(cap_text("abc".into(), 3), ("abc".into(), false));
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(cap_text("abcdef".into(), 4), ("abcd".into(), true));
        // "é" is two bytes: a cap inside it keeps neither half.
        assert_eq!(cap_text("aé".into(), 2), ("a".into(), true));
        assert_eq!(cap_text("é".into(), 0), (String::new(), true));
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> JobRecord {
        let created = Utc.with_ymd_and_hms(2025, 1, 31, 9, 15, 2).unwrap();
        JobRecord::queued(
            "0123456789abcdef0123456789abcdef".into(),
            NewJob::new("ci", "hi", "general-purpose", 5.0, 2700),
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
        record.usage = Some(Usage {
            input_tokens: 3,
            ..Usage::default()
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

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_characters_and_differ() {
        let a = new_job_id();
        let b = new_job_id();
        assert!(is_job_id(&a), "{a}");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn other_shapes_are_not_ids() {
        for id in ["", "abc", "../etc/passwd", &"g".repeat(32), &"a".repeat(33)] {
            assert!(!is_job_id(id), "{id}");
        }
    }
}
