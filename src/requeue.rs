//! A chat, Responses or Messages run refused only because the account behind the CLI is
//! rate-limited goes back to the queue once, as a job does, instead of failing.
//!
//! The refusal has already paused dispatch (inside the slot, in the `run` module); the run's
//! second try takes a new place in the queue under its key's policy, so it waits for the pause
//! to lift holding no slot, and runs once dispatch resumes. The wait is bounded by the request's
//! own deadline: when the pause outlasts it, or the second try is still queued when it passes,
//! the caller gets the refusal, as before. A second refusal is the run's answer.
//!
//! A streamed answer is only tried again while nothing of it can have reached the caller: the
//! first try's progress events pass through here on their way to the route, and once one of them
//! carries answer text the refusal stands (the caller would otherwise read the text twice).
//!
//! Jobs are not run again here: their task puts them back in the queue itself, so that their
//! record and events say so (see `jobs::task`).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use gateway_layers::admission::Ticket;
use gateway_layers::deadline::Deadline;
use gateway_layers::BoxError;
use http::Request;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};

use crate::agent::{AgentOutcome, AgentRequest, Below, ProgressSink, RunFuture, RunStep};
use crate::metrics::Entry;
use crate::quota::{ChargeTo, Quota};

/// The step that queues a run refused upstream once more; see the [module docs](self). Sits above
/// the concurrency limit: each try takes its own place in the queue.
#[derive(Clone)]
pub(crate) struct RequeueOnLimit {
    /// The upstream pause, and the key's place in the queue for the second try.
    quota: Quota,
    /// The deadline of a request that does not carry its own.
    default_deadline: Duration,
}

impl RequeueOnLimit {
    /// Runs refused upstream go back to `quota`'s queue once, waiting at most their deadline
    /// (`default_deadline` for a request without one).
    pub(crate) fn new(quota: Quota, default_deadline: Duration) -> Self {
        Self {
            quota,
            default_deadline,
        }
    }
}

impl fmt::Debug for RequeueOnLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequeueOnLimit")
            .field("default_deadline", &self.default_deadline)
            .finish_non_exhaustive()
    }
}

impl RunStep for RequeueOnLimit {
    type Error = BoxError;

    fn not_ready(error: BoxError) -> BoxError {
        error
    }

    fn run(&self, mut inner: Below, mut request: Request<AgentRequest>) -> RunFuture<BoxError> {
        if matches!(request.extensions().get::<Entry>(), None | Some(Entry::Job)) {
            return Box::pin(inner.call(request));
        }
        // The second try is the same request without the first one's place in the queue (a
        // clone of the ticket would keep that slot taken while the second try waits).
        let ticket = request.extensions_mut().remove::<Ticket>();
        let mut again = request.clone();
        if let Some(ticket) = ticket {
            request.extensions_mut().insert(ticket);
        }
        // The first try's events reach the route through here, to see whether any carried text.
        let watched =
            request
                .extensions_mut()
                .remove::<ProgressSink>()
                .map(|ProgressSink(route)| {
                    let (sink, events) = mpsc::unbounded_channel();
                    request.extensions_mut().insert(ProgressSink(sink));
                    (route, events)
                });
        let deadline = request
            .extensions()
            .get::<Deadline>()
            .map_or(self.default_deadline, |deadline| deadline.0);
        let quota = self.quota.clone();
        let retry = inner.clone();
        let first = inner.call(request);
        Box::pin(async move {
            let (first, answered) = forward(first, watched).await;
            let refused = matches!(&first, Ok(outcome) if crate::quota::refused_upstream(outcome));
            if !refused || answered {
                return first;
            }
            let paused_until = quota.dispatch().paused_until();
            let pause = paused_until.map_or(Duration::ZERO, |until| {
                (until - chrono::Utc::now()).to_std().unwrap_or_default()
            });
            if pause >= deadline {
                tracing::info!(?deadline, "a run refused by the account's rate limit is not tried again: the pause outlasts its deadline");
                return first;
            }
            let key = again
                .extensions()
                .get::<ChargeTo>()
                .map_or_else(String::new, |ChargeTo(key)| key.clone());
            let ticket = quota.readmit(&key);
            let mut started = ticket.activation();
            again.extensions_mut().insert(ticket);
            tracing::info!(
                key,
                "a run refused by the account's rate limit goes back to the queue once"
            );
            let mut second = std::pin::pin!(retry.oneshot(again));
            let waited = tokio::time::timeout(deadline, async {
                tokio::select! {
                    biased;
                    result = &mut second => Some(result),
                    _ = started.wait() => None,
                }
            })
            .await;
            match waited {
                Ok(Some(result)) => result,
                Ok(None) => second.await,
                // Still queued at its deadline: the refusal is the answer (dropping the second
                // try gives its place in the queue back).
                Err(_) => first,
            }
        })
    }
}

/// The route's sink, and the receiving end of the sink the run was given instead.
type Watched = (
    mpsc::UnboundedSender<Box<str>>,
    mpsc::UnboundedReceiver<Box<str>>,
);

/// Drives `run`, passing its progress events (when it has a sink) on to the route; answers its
/// result and whether any event it passed on carried answer text. Every event the run sent is
/// passed on before it answers, so the second half is exact.
async fn forward<F>(run: F, watched: Option<Watched>) -> (Result<AgentOutcome, BoxError>, bool)
where
    F: Future<Output = Result<AgentOutcome, BoxError>>,
{
    let Some((route, mut events)) = watched else {
        return (run.await, false);
    };
    let mut answered = false;
    let mut pass = |event: Box<str>| {
        answered = answered || carries_text(&event);
        // A route that went away drops its run too; nothing to tell it.
        let _ = route.send(event);
    };
    let mut run = std::pin::pin!(run);
    let result = loop {
        tokio::select! {
            biased;
            Some(event) = events.recv() => pass(event),
            result = &mut run => break result,
        }
    };
    while let Ok(event) = events.try_recv() {
        pass(event);
    }
    (result, answered)
}

/// Whether a progress event may carry text of the answer: a token-level text delta, the only
/// progress the streaming routes pass on as text. Read from the raw line, without parsing it; a
/// false positive only means the refusal stands.
fn carries_text(event: &str) -> bool {
    event.contains("\"text_delta\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_deltas_count_as_answer_text() {
        assert!(carries_text(
            r#"{"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}}"#
        ));
        assert!(!carries_text(
            r#"{"type":"system","subtype":"init","session_id":"s"}"#
        ));
        assert!(!carries_text(
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected"}}"#
        ));
    }
}
