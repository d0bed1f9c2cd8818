//! The jobs that are queued or running: how to stop each one, how many there are, and whether new
//! ones are still accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot, watch};

use super::record::JobRecord;

/// Why a job's task is asked to stop its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// `DELETE /jobs/{id}`: the job ends `error`, saying it was cancelled.
    Cancel,
    /// Shutdown began: a job still waiting for a slot stops waiting (and, in a durable store,
    /// stays `queued` for the next start); a running one carries on.
    Drain,
    /// The grace period is over: a running job is interrupted (ends `error` with
    /// `interrupted: true`, or is queued again when it has attempts left and the store is
    /// durable).
    Interrupt,
}

/// A request to a job's task to stop its run.
#[derive(Debug)]
pub(crate) struct Stop {
    /// Why.
    pub kind: StopKind,
    /// What to record as the job's `error` if it ends here.
    pub reason: String,
    /// Gets the final record if the task stopped the run; dropped unanswered if the job ended by
    /// itself first, or ran on because it had started and the stop was a [`StopKind::Drain`].
    pub ack: Option<oneshot::Sender<JobRecord>>,
}

impl Stop {
    /// A stop whose sender waits for the final record.
    pub(crate) fn acknowledged(
        kind: StopKind,
        reason: &str,
    ) -> (Self, oneshot::Receiver<JobRecord>) {
        let (ack, acked) = oneshot::channel();
        let stop = Self {
            kind,
            reason: reason.to_owned(),
            ack: Some(ack),
        };
        (stop, acked)
    }

    /// A stop nobody waits on.
    pub(crate) fn unacknowledged(kind: StopKind, reason: &str) -> Self {
        Self {
            kind,
            reason: reason.to_owned(),
            ack: None,
        }
    }
}

/// Refused: the gateway is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotAccepting;

/// The live jobs. Shared by the registry and every job task.
#[derive(Debug)]
pub(crate) struct LiveSet {
    /// Accepting flag and stop channels under one lock, so a job registered after shutdown began
    /// is impossible: registration and closing exclude each other.
    state: Mutex<LiveState>,
    /// How many jobs are live, for [`drained`](Self::drained).
    count: watch::Sender<usize>,
}

#[derive(Debug)]
struct LiveState {
    accepting: bool,
    jobs: HashMap<String, LiveJob>,
}

/// What the registry holds of one live job.
#[derive(Debug)]
struct LiveJob {
    /// Where to send stop requests.
    stop: mpsc::UnboundedSender<Stop>,
    /// Wakes subscribers of its events when its task stored some.
    wake: watch::Receiver<u64>,
}

impl Default for LiveSet {
    fn default() -> Self {
        Self {
            state: Mutex::new(LiveState {
                accepting: true,
                jobs: HashMap::new(),
            }),
            count: watch::channel(0).0,
        }
    }
}

impl LiveSet {
    /// Adds a job whose task stores events and bumps `wake`; the task reads stop requests from
    /// the receiver and must hold the returned guard until it has recorded the end.
    pub(crate) fn register(
        self: &Arc<Self>,
        job_id: &str,
        wake: watch::Receiver<u64>,
    ) -> Result<(mpsc::UnboundedReceiver<Stop>, LiveGuard), NotAccepting> {
        let mut state = self.lock();
        if !state.accepting {
            return Err(NotAccepting);
        }
        let (stop, rx) = mpsc::unbounded_channel();
        state.jobs.insert(job_id.to_owned(), LiveJob { stop, wake });
        self.count.send_replace(state.jobs.len());
        Ok((
            rx,
            LiveGuard {
                live: Arc::clone(self),
                job_id: job_id.to_owned(),
            },
        ))
    }

    /// Where to send a stop request for this job, while it is live.
    pub(crate) fn stopper(&self, job_id: &str) -> Option<mpsc::UnboundedSender<Stop>> {
        self.lock().jobs.get(job_id).map(|job| job.stop.clone())
    }

    /// A wake-up for a subscriber of this job's events, while it is live here.
    pub(crate) fn watch(&self, job_id: &str) -> Option<watch::Receiver<u64>> {
        self.lock().jobs.get(job_id).map(|job| job.wake.clone())
    }

    /// Stops accepting jobs; returns the stop channels of every live one.
    pub(crate) fn close(&self) -> Vec<mpsc::UnboundedSender<Stop>> {
        let mut state = self.lock();
        state.accepting = false;
        state.jobs.values().map(|job| job.stop.clone()).collect()
    }

    /// Whether new jobs are still accepted (no shutdown began).
    pub(crate) fn is_accepting(&self) -> bool {
        self.lock().accepting
    }

    /// How many jobs are live.
    pub(crate) fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Resolves when no job is live.
    pub(crate) async fn drained(&self) {
        let mut count = self.count.subscribe();
        // The sender lives as long as `self`, which this borrow keeps alive.
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Nothing here can panic while holding the lock in a way that breaks the map.
    fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps a job counted as live; dropping it (after the end was recorded, or when the task
/// panicked) removes the job.
#[derive(Debug)]
pub(crate) struct LiveGuard {
    live: Arc<LiveSet>,
    job_id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut state = self.live.lock();
        state.jobs.remove(&self.job_id);
        self.live.count.send_replace(state.jobs.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_the_last_guard() {
        let live = Arc::new(LiveSet::default());
        let (_rx, guard) = live.register("a", watch::channel(0).1).unwrap();
        assert_eq!(live.count(), 1);
        let waiter = tokio::spawn({
            let live = live.clone();
            async move { live.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        waiter.await.unwrap();
        assert_eq!(live.count(), 0);
    }

    #[tokio::test]
    async fn closing_refuses_new_jobs_and_hands_out_every_stopper() {
        let live = Arc::new(LiveSet::default());
        let (_rx, _guard) = live.register("a", watch::channel(0).1).unwrap();
        assert_eq!(live.close().len(), 1);
        assert_eq!(
            live.register("b", watch::channel(0).1).map(|_| ()),
            Err(NotAccepting)
        );
    }
}
