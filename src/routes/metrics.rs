//! `GET /metrics`: open like `/health` (it holds counts only, no ids, tokens or prompts), in
//! Prometheus's text exposition format.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;

use crate::metrics::{scrape, Scrape};
use crate::state::AppState;

/// Renders the gateway's metrics, the gauges read from the shared gauge and the job registry now.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Open to all: counts only, never ids, tokens or prompts.",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let held: Vec<_> = state
        .quota
        .held_by_key()
        .into_iter()
        .map(|(key, held)| (key, held.queued, held.running))
        .collect();
    state.metrics.set_key_runs(&held);
    let text = state.metrics.render(Scrape {
        gauge: state.gauge.snapshot(),
        jobs_stored: state.jobs.stored_count(),
        isolation: state.isolation,
        replica: state.jobs.replica(),
        dispatch_paused: state.quota.dispatch().paused_until().is_some(),
    });
    ([(CONTENT_TYPE, scrape::CONTENT_TYPE)], text).into_response()
}
