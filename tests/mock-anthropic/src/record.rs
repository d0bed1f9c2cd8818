//! Every request the mock received, kept for tests to assert on and to wait for.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use crate::conversation::{self, Conversation};

/// One request as the mock received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path without the query, e.g. `/v1/messages`.
    pub path: String,
    /// Query string without `?`; Claude Code sends `beta=true`.
    pub query: Option<String>,
    /// Headers, names lower-case; a repeated header keeps its last value.
    pub headers: BTreeMap<String, String>,
    /// `model` of the body, if any: what the CLI made of `--model`.
    pub model: Option<String>,
    /// Whether the body asked for `stream: true`.
    pub stream: bool,
    /// The whole body as JSON; `Null` when empty or not JSON.
    pub body: Value,
}

impl RecordedRequest {
    /// A header's value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Whether this is a Messages API call (`POST /v1/messages`), as opposed to auxiliary traffic.
    pub fn is_message(&self) -> bool {
        self.method == "POST" && self.path == "/v1/messages"
    }

    /// Text of the prompt message (the last user message that is not a tool result, without the
    /// CLI's `<system-reminder>` blocks): the text the directives were read from.
    pub fn prompt_text(&self) -> String {
        Conversation::from_body(&self.body)
            .map(|c| c.prompt)
            .unwrap_or_default()
    }

    /// Outputs of the tool results this request carries back after the prompt.
    pub fn tool_outputs(&self) -> Vec<String> {
        Conversation::from_body(&self.body)
            .map(|c| c.tool_outputs)
            .unwrap_or_default()
    }

    /// All text of the request (system prompt, every message, tool results), for `contains` checks
    /// such as "the earlier turn reached the model".
    pub fn all_text(&self) -> String {
        conversation::all_text(&self.body)
    }
}

/// [`crate::MockAnthropic::wait_for_requests`] gave up: fewer requests than wanted arrived in time.
#[derive(Debug, Clone)]
pub struct WaitTimeout {
    /// How many requests were awaited.
    pub wanted: usize,
    /// The requests that did arrive.
    pub received: Vec<RecordedRequest>,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waited for {} requests to the mock, got {}:",
            self.wanted,
            self.received.len()
        )?;
        for r in &self.received {
            write!(f, " {} {}", r.method, r.path)?;
        }
        Ok(())
    }
}

impl std::error::Error for WaitTimeout {}

/// The shared log of requests with a wake-up for waiters.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// Requests in arrival order.
    requests: Mutex<Vec<RecordedRequest>>,
    /// Woken on every new request so waiters re-check without polling.
    arrived: Notify,
}

impl Recorder {
    pub(crate) fn push(&self, request: RecordedRequest) {
        self.lock().push(request);
        self.arrived.notify_waiters();
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    pub(crate) async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, WaitTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before looking, so a push between the look and the wait is not lost.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let requests = self.all();
            if requests.len() >= n {
                return Ok(requests);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(WaitTimeout {
                    wanted: n,
                    received: self.all(),
                });
            }
        }
    }

    /// A panic elsewhere while holding the lock leaves the log intact, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
