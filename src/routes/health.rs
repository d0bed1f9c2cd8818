//! `GET /health`: open to all, read from the one shared gauge.
//!
//! 200 while the gateway takes work; 503 (`"status": "shutting_down"`) from the moment it
//! received SIGTERM, so a readiness probe takes it out of rotation while it still answers.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// The contract's health body.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `shutting_down` once the gateway has stopped admitting work.
    pub status: &'static str,
    /// Every run slot is taken.
    pub busy: bool,
    /// Runs holding a slot.
    pub active: usize,
    /// Runs waiting for a slot: with a shared PostgreSQL store, the jobs of the whole service
    /// waiting in its queue plus the runs waiting for a slot on this replica.
    pub queued: usize,
    /// Simultaneous runs allowed.
    pub capacity: usize,
    /// How runs are kept apart: `uid` (each run its own uid) or `process` (runs share the
    /// gateway's uid; their processes are still contained).
    pub isolation: &'static str,
    /// Whether each run has a cgroup of its own, which holds every process of the run and kills
    /// them all at once (`RUN_CGROUP`; needs a writable cgroup v2).
    pub run_cgroups: bool,
    /// The workspace base: `ok`, `missing` (deleted at runtime: runs fail until the next
    /// refresh clones it again from its origin), or `none` (no base configured: scratch
    /// workspaces).
    pub base: &'static str,
    /// The warm pool of checkouts: `warm` (a run takes a ready checkout at once), `cold` (none
    /// ready now: runs clone their own while it fills), or `off` (no pool: size 0, or no base).
    pub pool: &'static str,
    /// Checkouts ready in the pool now.
    pub pool_ready: usize,
    /// The job store: `ok`, or `down` (it cannot be reached: `/execute` answers 503 while
    /// running jobs carry on and are recorded once it is back).
    pub store: &'static str,
    /// This replica's name (`REPLICA_ID`).
    pub replica: String,
    /// Dispatch of queued runs.
    pub dispatch: DispatchHealth,
}

/// Whether queued runs are being started.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DispatchHealth {
    /// Until when (RFC 3339) dispatch is paused because the account behind the CLI is
    /// rate-limited; `null` while runs are started as slots free. Queued runs stay queued and
    /// dispatch resumes by itself at that time.
    pub paused_until: Option<String>,
}

/// Answers the gauge's current counts.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    summary = "Health and load",
    description = "Open to all. 200 while the gateway takes work; 503 from the moment it received SIGTERM, so a readiness probe takes it out of rotation.",
    tag = "operations",
    responses(
        (status = 200, description = "The gateway takes work", body = Health),
        (status = 503, description = "The gateway is shutting down (`status: shutting_down`)", body = Health)
    )
)]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let gauge = state.gauge.snapshot();
    let closed = state.gauge.is_closed();
    let (store_up, service_queued) = state.jobs.store_health().await;
    let pool = state.metrics.pool();
    let body = Json(Health {
        status: if closed { "shutting_down" } else { "ok" },
        busy: gauge.is_busy(),
        active: gauge.active,
        queued: gauge.queued + service_queued,
        capacity: gauge.capacity,
        isolation: state.isolation,
        run_cgroups: state.run_cgroups,
        base: match &state.config.base_dir {
            None => "none",
            Some(dir) if tokio::fs::metadata(dir.join(".git")).await.is_ok() => "ok",
            Some(_) => "missing",
        },
        pool: match pool {
            None => "off",
            Some(pool) if pool.is_warm() => "warm",
            Some(_) => "cold",
        },
        pool_ready: pool.map_or(0, |pool| pool.ready),
        store: if store_up { "ok" } else { "down" },
        replica: state.jobs.replica().to_owned(),
        dispatch: DispatchHealth {
            paused_until: state
                .quota
                .dispatch()
                .paused_until()
                .map(|until| until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        },
    });
    if closed {
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    body.into_response()
}
