//! `GET /health`: open to all, read from the one shared gauge.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::state::AppState;

/// The contract's health body.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    /// `ok`, or `shutting_down` once the gateway has stopped admitting work.
    pub status: &'static str,
    /// Every run slot is taken.
    pub busy: bool,
    /// Runs holding a slot.
    pub active: usize,
    /// Runs waiting for a slot.
    pub queued: usize,
    /// Simultaneous runs allowed.
    pub capacity: usize,
    /// How runs are kept apart: `uid` (each run its own uid) or `process` (runs share the
    /// gateway's uid; their processes are still contained).
    pub isolation: &'static str,
}

/// Answers the gauge's current counts.
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    let gauge = state.gauge.snapshot();
    Json(Health {
        status: if state.gauge.is_closed() {
            "shutting_down"
        } else {
            "ok"
        },
        busy: gauge.is_busy(),
        active: gauge.active,
        queued: gauge.queued,
        capacity: gauge.capacity,
        isolation: state.isolation,
    })
}
