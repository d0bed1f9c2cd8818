//! Several replicas on one PostgreSQL store: the shared queue's claim loop, the notices that
//! wake it (and carry cancels and events across replicas), and this replica's lease.
//!
//! - **Claim only what can start now.** The claim loop takes from the shared queue as many jobs
//!   as this replica has free slots (its gauge's capacity less what runs or waits here, chat
//!   included), in fair order (FIFO within a key, weighted across keys, owners at their
//!   `max_concurrent` on any replica passed over), so no job waits behind a busy replica while
//!   another is idle. It
//!   runs when a notice says a job joined the queue, when a job here ends, and every
//!   [`POLL`] as the backstop for a lost notice.
//! - **Notices.** One `LISTEN` connection per replica hears: a job queued (claim), a job here
//!   cancelled on another replica (stop it), a job's events stored (wake its followers here).
//!   The poll also looks for cancels and wakes followers, so a notice lost while the connection
//!   was re-made delays them by one poll at most.
//! - **Leases.** Every third of `REPLICA_LEASE_SECONDS` this replica renews its lease, then
//!   forgets the replicas whose lease ran out and settles the jobs they held, as a restart
//!   would: running ones are interrupted or queued again, claimed but unstarted ones go back to
//!   the queue. Only after it has itself been connected for a whole lease, so that when the
//!   database comes back after an outage every live replica has had the time to renew first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::quota::{LedgerFuture, PauseBoard, Quota};

use super::live::{Stop, StopKind};
use super::postgres::PgStore;
use super::{Shared, CANCELLED};

/// The claim loop's backstop period: the longest a job waits when a notice is lost, and the
/// longest a cancel from another replica waits when its notice is lost.
pub(super) const POLL: Duration = Duration::from_millis(500);

/// The wait before listening again after the listening connection failed.
const RELISTEN: Duration = Duration::from_secs(1);

/// Channels the triggers of `migrations/postgres` notify.
const QUEUE: &str = "claude_gateway_queue";
const CANCEL: &str = "claude_gateway_cancel";
const EVENTS: &str = "claude_gateway_events";

/// What a replica sharing a PostgreSQL store keeps beside the store.
#[derive(Debug)]
pub(super) struct Replication {
    /// The store, with the queue and lease statements.
    pub pg: Arc<PgStore>,
    /// How long a lease lasts unrenewed.
    pub lease: Duration,
    /// Queued jobs the whole service holds at most (`MAX_QUEUE_DEPTH`).
    pub max_queued: usize,
    /// Wakes the claim loop.
    claim: Arc<Notify>,
    /// Followers here of jobs that run elsewhere (or wait in the queue), woken by notices.
    followers: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Whether the last statement of the loops reached the database.
    up: AtomicBool,
    /// Set at shutdown: the lease is given up and not renewed again.
    leaving: AtomicBool,
    /// Set once the loops run, so they are started once.
    running: AtomicBool,
    /// The upstream pause of this replica, which takes up the pauses other replicas publish.
    quota: OnceLock<Quota>,
}

impl Replication {
    /// Beside `pg`, with leases of `lease` and a service-wide bound of `max_queued` queued jobs.
    pub(super) fn new(pg: Arc<PgStore>, lease: Duration, max_queued: usize) -> Self {
        Self {
            pg,
            lease,
            max_queued,
            claim: Arc::new(Notify::new()),
            followers: Mutex::new(HashMap::new()),
            up: AtomicBool::new(true),
            leaving: AtomicBool::new(false),
            running: AtomicBool::new(false),
            quota: OnceLock::new(),
        }
    }

    /// Shares `quota`'s upstream pause with the other replicas: a pause here is published in
    /// the store, and one published by another replica is taken up here by the claim loop.
    pub(super) fn share_pause(&self, quota: &Quota) {
        quota.share_pause(Arc::new(SharedPause(self.pg.clone())));
        let _ = self.quota.set(quota.clone());
    }

    /// The map holds senders changed in one step each, so a poisoned lock is used as is.
    fn followers(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.followers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A wake-up for a follower here of `job_id`'s events, which another replica stores.
    pub(super) fn follow(&self, job_id: &str) -> watch::Receiver<u64> {
        self.followers()
            .entry(job_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes the followers of `job_id`, if it has any here.
    fn stored(&self, job_id: &str) {
        if let Some(sender) = self.followers().get(job_id) {
            sender.send_modify(|n| *n += 1);
        }
    }

    /// Wakes every follower (the backstop of lost notices) and forgets jobs no one follows.
    fn wake_all(&self) {
        let mut followers = self.followers();
        followers.retain(|_, sender| sender.receiver_count() > 0);
        for sender in followers.values() {
            sender.send_modify(|n| *n += 1);
        }
    }

    /// Asks the claim loop to look at the queue (a slot here came free).
    pub(super) fn poke(&self) {
        self.claim.notify_one();
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("the job database is reachable again");
            } else {
                tracing::error!("the job database cannot be reached; running jobs carry on and are recorded once it is back");
            }
        }
    }

    /// Stops renewing the lease and gives it up.
    pub(super) async fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        if let Err(error) = self.pg.leave().await {
            tracing::warn!(%error, "could not give up this replica's lease; it runs out by itself");
        }
    }
}

/// Starts the claim loop, the listener and the lease loop of `shared` (which has a
/// [`Replication`]), once. They hold it weakly and end once it is gone.
pub(super) fn spawn(shared: &Arc<Shared>) {
    let Some(replication) = shared.replication.as_ref() else {
        return;
    };
    if replication.running.swap(true, Ordering::Relaxed) {
        return;
    }
    let weak = Arc::downgrade(shared);
    tokio::spawn(claim_loop(weak.clone()));
    tokio::spawn(listen(weak.clone()));
    tokio::spawn(lease_loop(weak));
}

/// The registry for one round of a loop, while it exists.
fn upgrade(weak: &Weak<Shared>) -> Option<Arc<Shared>> {
    weak.upgrade()
}

/// Claims what fits in this replica's free slots whenever woken, and polls.
async fn claim_loop(weak: Weak<Shared>) {
    loop {
        let Some(shared) = upgrade(&weak) else {
            return;
        };
        let Some(replication) = shared.replication.as_ref() else {
            return;
        };
        // Registered before claiming, so a notice during the claim is not lost.
        let claim = replication.claim.clone();
        let woken = claim.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        follow_pause(replication).await;
        claim_free(&shared).await;
        stop_cancelled(&shared).await;
        replication.wake_all();
        let pause = tokio::time::sleep(POLL);
        drop(shared);
        tokio::select! {
            () = woken => {}
            () = pause => {}
        }
    }
}

/// The upstream pause in the store, shared by the replicas.
struct SharedPause(Arc<PgStore>);

impl PauseBoard for SharedPause {
    fn publish(&self, until: chrono::DateTime<chrono::Utc>) -> LedgerFuture<'_, ()> {
        Box::pin(async move {
            self.0
                .pause_dispatch(until)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Takes up a pause another replica published in the store (see [`Replication::share_pause`]).
async fn follow_pause(replication: &Replication) {
    let Some(quota) = replication.quota.get() else {
        return;
    };
    match replication
        .pg
        .dispatch_paused_until(chrono::Utc::now())
        .await
    {
        Ok(Some(until)) => quota.dispatch().adopt(until),
        Ok(None) => {}
        Err(error) => tracing::debug!(%error, "could not read the shared upstream pause"),
    }
}

/// Claims as many queued jobs as there are free slots here, and starts them. Nothing while
/// dispatch is paused: the jobs stay in the shared queue (the claim itself also reads the
/// shared pause, so a replica that has not taken it up yet claims nothing either).
async fn claim_free(shared: &Arc<Shared>) {
    let Some(replication) = shared.replication.as_ref() else {
        return;
    };
    loop {
        if !shared.live.is_accepting() || shared.gauge.paused_until().is_some() {
            return;
        }
        let gauge = shared.gauge.snapshot();
        let free = gauge
            .capacity
            .saturating_sub(gauge.active + gauge.queued)
            .min(
                gauge
                    .queue_depth
                    .saturating_sub(gauge.active + gauge.queued),
            );
        if free == 0 {
            return;
        }
        let claimed = match replication.pg.claim(free, &shared.claim_caps()).await {
            Ok(claimed) => claimed,
            Err(error) => {
                replication.mark(false);
                tracing::debug!(%error, "could not claim queued jobs");
                return;
            }
        };
        replication.mark(true);
        let all = claimed.len() == free;
        for job in claimed {
            super::Jobs::start_claimed(shared, job).await;
        }
        if !all {
            return;
        }
    }
}

/// Stops the jobs here that a caller cancelled on another replica (the backstop of the cancel
/// notice).
async fn stop_cancelled(shared: &Shared) {
    let Some(replication) = shared.replication.as_ref() else {
        return;
    };
    if shared.live.count() == 0 {
        return;
    }
    match replication.pg.cancels_here().await {
        Ok(job_ids) => {
            for job_id in job_ids {
                stop_here(shared, &job_id);
            }
        }
        Err(error) => tracing::debug!(%error, "could not look for cancelled jobs"),
    }
}

/// Stops `job_id` if it runs here, as a cancel.
fn stop_here(shared: &Shared, job_id: &str) {
    if let Some(stopper) = shared.live.stopper(job_id) {
        let _ = stopper.send(Stop::unacknowledged(StopKind::Cancel, CANCELLED));
    }
}

/// Follows the triggers' notices on a connection of its own, made again when it fails.
async fn listen(weak: Weak<Shared>) {
    loop {
        let Some(shared) = upgrade(&weak) else {
            return;
        };
        let pool = match shared.replication.as_ref() {
            Some(replication) => replication.pg.pool().clone(),
            None => return,
        };
        drop(shared);
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all([QUEUE, CANCEL, EVENTS]).await?;
            // Anything queued while nobody listened.
            if let Some(shared) = upgrade(&weak) {
                if let Some(replication) = shared.replication.as_ref() {
                    replication.poke();
                }
            }
            loop {
                let notice = listener.recv().await?;
                let Some(shared) = upgrade(&weak) else {
                    return Ok::<_, sqlx::Error>(());
                };
                let Some(replication) = shared.replication.as_ref() else {
                    return Ok(());
                };
                match notice.channel() {
                    QUEUE => replication.poke(),
                    CANCEL => stop_here(&shared, notice.payload()),
                    EVENTS => replication.stored(notice.payload()),
                    _ => {}
                }
            }
        };
        match listening.await {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(%error, "lost the notices of the job database; listening again");
            }
        }
        tokio::time::sleep(RELISTEN).await;
    }
}

/// Renews the lease every third of it and settles the jobs of replicas whose lease ran out.
async fn lease_loop(weak: Weak<Shared>) {
    // Since when this replica has reached the database without a break.
    let mut connected_since: Option<Instant> = None;
    loop {
        let Some(shared) = upgrade(&weak) else {
            return;
        };
        let Some(replication) = shared.replication.as_ref() else {
            return;
        };
        if replication.leaving.load(Ordering::Relaxed) {
            return;
        }
        let lease = replication.lease;
        match replication.pg.renew_lease(lease).await {
            Ok(()) => {
                replication.mark(true);
                let since = *connected_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= lease {
                    super::Jobs::settle_dead(&shared).await;
                }
            }
            Err(error) => {
                replication.mark(false);
                connected_since = None;
                tracing::debug!(%error, "could not renew this replica's lease");
            }
        }
        drop(shared);
        tokio::time::sleep(lease / 3).await;
    }
}
