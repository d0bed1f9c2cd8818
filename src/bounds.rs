//! What a caller can make the gateway hold, bounded: the intake of requests that start runs
//! (body deadline, queue slot, queued bytes), and the budget of large responses in flight.
//!
//! # Intake
//!
//! Taking in a request that starts a run (`POST /execute`, `POST /v1/chat/completions`).
//!
//! The order is what keeps slow and large bodies from holding the queue:
//!
//! 1. a queue that is already full (or whose byte budget cannot take the declared body, or a
//!    gateway shutting down) is answered at once, after the body is read and thrown away, so a
//!    client still uploading gets a readable 429/503 rather than a reset;
//! 2. the body is read whole, within `MAX_BODY_BYTES` (413) and `BODY_READ_TIMEOUT_SECONDS`
//!    (408), holding no queue slot while it arrives;
//! 3. the route checks it (4xx);
//! 4. only then is a queue slot taken, for the caller's key under its policy
//!    (`API_KEY_POLICY_FILE`: the key's `max_queued` is checked here, its weight and
//!    `max_concurrent` go with the ticket to the gauge's fair dispatch), and the body's bytes are
//!    charged to the queued-bytes budget (`MAX_QUEUED_BYTES`) until the run leaves the queue.
//!
//! Refusals are typed ([`Refusal`]); each route shapes them in its callers' error format.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use gateway_layers::admission::{AdmitError, Gauge, Ticket};
use http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::metrics::{Entry, Metrics};
use crate::policy::Policies;

/// Seconds a turned-away caller is told to wait before trying again.
pub(crate) const RETRY_AFTER_SECONDS: u64 = 5;

/// The shared intake of the routes that start runs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Intake {
    /// Queue depth and concurrency, shared with the run stack and `/health`.
    gauge: Gauge,
    /// The queued-bytes budget, one permit per byte.
    queued_bytes: Arc<Semaphore>,
    /// Largest body, in bytes.
    body_limit: usize,
    /// Time allowed for a whole body.
    body_deadline: Duration,
    /// Counts runs turned away.
    metrics: Metrics,
    /// Per-key policy in force (weights and limits), read at each admission.
    policies: Arc<Policies>,
}

/// Why a request that would start a run was not taken in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The gateway is shutting down (503).
    ShuttingDown,
    /// Queued and running work is at `MAX_QUEUE_DEPTH` (429 on `/execute`, 503 on chat).
    QueueFull,
    /// The caller's key already has its `max_queued` runs waiting (429 everywhere); other keys
    /// are still taken in.
    KeyQueueFull {
        /// The key's name.
        key: String,
        /// Its `max_queued`.
        max_queued: usize,
    },
    /// Queued prompts hold all of `MAX_QUEUED_BYTES` (like a full queue).
    QueuedBytes,
    /// The body is over `MAX_BODY_BYTES` (413).
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body did not arrive within `BODY_READ_TIMEOUT_SECONDS` (408).
    SlowBody {
        /// The deadline that passed.
        after: Duration,
    },
    /// The body could not be read: the client broke off mid-body (400).
    Unreadable(String),
}

impl Refusal {
    /// The status of the refusal on `/execute`; chat answers a full queue with 503 instead.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::QueueFull | Refusal::QueuedBytes | Refusal::KeyQueueFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::SlowBody { .. } => StatusCode::REQUEST_TIMEOUT,
            Refusal::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the refusal is about load (queue, budget, shutdown) rather than the request.
    pub(crate) fn is_overload(&self) -> bool {
        matches!(
            self,
            Refusal::ShuttingDown
                | Refusal::QueueFull
                | Refusal::QueuedBytes
                | Refusal::KeyQueueFull { .. }
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ShuttingDown => f.write_str("shutting down"),
            Refusal::QueueFull => f.write_str("Queue full"),
            Refusal::KeyQueueFull { key, max_queued } => write!(
                f,
                "Queue full for key {key:?}: it already has {max_queued} runs queued, its max_queued limit; other keys are not affected"
            ),
            Refusal::QueuedBytes => {
                f.write_str("Queue full: queued prompts hold all the bytes the queue may hold")
            }
            Refusal::TooLarge { limit } => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }
            Refusal::SlowBody { after } => write!(
                f,
                "request body not received within {} seconds",
                after.as_secs()
            ),
            Refusal::Unreadable(why) => write!(f, "request body could not be read: {why}"),
        }
    }
}

/// A request taken in: its body, its queue slot (which goes down the stack with the run), and
/// its share of the queued-bytes budget (released when the run starts or is dropped).
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The queue slot.
    pub(crate) ticket: Ticket,
}

impl Intake {
    /// The intake for `config`, admitting into `gauge`.
    pub(crate) fn new(config: &Config, gauge: Gauge, metrics: Metrics) -> Self {
        Self {
            gauge,
            queued_bytes: Arc::new(Semaphore::new(
                config.max_queued_bytes.min(Semaphore::MAX_PERMITS),
            )),
            body_limit: config.max_body_bytes,
            body_deadline: config.body_read_timeout,
            metrics,
            policies: config.policies.clone(),
        }
    }

    /// Steps 1 and 2 of the [module docs](self): the whole body, or why not.
    pub(crate) async fn read(
        &self,
        entry: Entry,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Bytes, Refusal> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.body_limit as u64) {
            return Err(Refusal::TooLarge {
                limit: self.body_limit,
            });
        }
        let over_budget =
            declared.is_some_and(|n| n > self.queued_bytes.available_permits() as u64);
        let refusal = self
            .overloaded()
            .or(over_budget.then_some(Refusal::QueuedBytes));
        if let Some(refusal) = refusal {
            // Read (and drop) what the client is sending, so the answer is not lost in a reset;
            // whatever happens, the answer is the refusal.
            let _ = tokio::time::timeout(self.body_deadline, discard(body, self.body_limit)).await;
            self.metrics.record_rejected(entry);
            return Err(refusal);
        }
        let limited = Limited::new(body, self.body_limit);
        match tokio::time::timeout(self.body_deadline, limited.collect()).await {
            Err(_) => Err(Refusal::SlowBody {
                after: self.body_deadline,
            }),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) if error.is::<LengthLimitError>() => Err(Refusal::TooLarge {
                limit: self.body_limit,
            }),
            Ok(Err(error)) => Err(Refusal::Unreadable(error.to_string())),
        }
    }

    /// Step 4: a queue slot for a checked request of the key `key` whose body holds `bytes`.
    pub(crate) fn admit(&self, entry: Entry, bytes: usize, key: &str) -> Result<Admitted, Refusal> {
        let policy = self.policies.current();
        let limits = policy.for_key(key).limits;
        let ticket = match self.gauge.admit_for(Arc::from(key), limits) {
            Ok(ticket) => ticket,
            Err(AdmitError::KeyFull { max_queued, .. }) => {
                self.metrics.record_rejected(entry);
                return Err(Refusal::KeyQueueFull {
                    key: key.to_owned(),
                    max_queued,
                });
            }
            Err(AdmitError::Full(_)) => {
                self.metrics.record_rejected(entry);
                return Err(self.overloaded().unwrap_or(Refusal::QueueFull));
            }
        };
        let charge = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        let Ok(permit) = self.queued_bytes.clone().try_acquire_many_owned(charge) else {
            self.metrics.record_rejected(entry);
            return Err(Refusal::QueuedBytes);
        };
        // The bytes are the queue's only while the run waits: the watcher holds them until the
        // ticket becomes active or is dropped (the run cancelled, refused, or gone).
        let mut activation = ticket.activation();
        tokio::spawn(async move {
            let _permit = permit;
            activation.wait().await;
        });
        Ok(Admitted { ticket })
    }

    /// Why a run would be turned away right now, if it would.
    fn overloaded(&self) -> Option<Refusal> {
        if self.gauge.is_closed() {
            return Some(Refusal::ShuttingDown);
        }
        let now = self.gauge.snapshot();
        (now.active + now.queued >= now.queue_depth).then_some(Refusal::QueueFull)
    }
}

impl fmt::Debug for Intake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intake")
            .field("queued_bytes_free", &self.queued_bytes.available_permits())
            .field("body_limit", &self.body_limit)
            .field("body_deadline", &self.body_deadline)
            .finish_non_exhaustive()
    }
}

// The budget of large responses.

/// How long a large response waits for its share of the budget before it is refused (503).
const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// The bytes large responses may hold in memory together. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ResponseBudget {
    /// One permit per byte.
    bytes: Arc<Semaphore>,
    /// The whole budget: a response larger than it takes all of it.
    total: usize,
}

/// The budget was spent by other responses for longer than [`BUDGET_WAIT`].
#[derive(Debug)]
pub(crate) struct BudgetSpent;

impl ResponseBudget {
    /// A budget of `total` bytes.
    pub(crate) fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Reserves `bytes` (at most the whole budget), waiting a little for other responses to
    /// finish.
    pub(crate) async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, BudgetSpent> {
        let want = u32::try_from(bytes.clamp(1, self.total)).unwrap_or(u32::MAX);
        match tokio::time::timeout(BUDGET_WAIT, self.bytes.clone().acquire_many_owned(want)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(BudgetSpent),
        }
    }

    /// Bytes not reserved now.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.bytes.available_permits()
    }
}

impl fmt::Debug for ResponseBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBudget")
            .field("free", &self.bytes.available_permits())
            .field("total", &self.total)
            .finish()
    }
}

/// Reads a body to its end (or past `limit`), keeping nothing.
async fn discard(mut body: Body, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            seen = seen.saturating_add(data.len());
            if seen > limit {
                return;
            }
        }
    }
}
