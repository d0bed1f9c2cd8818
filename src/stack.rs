//! The one place the gateway's HTTP stack is composed. Read top to bottom, this is the path a
//! request takes; the run stack below the handlers is composed in `run.rs`, by the one call every handler makes.
//!
//! ```text
//!  HTTP ─► request-id ─► trace ─► metrics ─► catch-panic ─► body-limit ─► router
//!                                                                           │
//!     /health, /metrics ◄───────────────────────────────────────────────────┤ (open)
//!     /jobs… : auth (detail errors) ◄───────────────────────────────────────┤
//!     /v1/…  : auth (OpenAI errors) ◄───────────────────────────────────────┘
//!        /execute, /v1/chat/completions: + admission (queue slot, 429/503)
//!            └─► handler ─► Runs::run ─► record ─► concurrency ─► deadline ─► workspace ─► claude
//! ```
//!
//! Auth and admission are route layers, below the router: each route group answers a failed
//! check in its own callers' error shape, and only the two routes that start runs take a slot.

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use gateway_layers::admission::{AdmissionLayer, GaugeSnapshot};
use gateway_layers::auth::{AuthFailure, BearerAuthLayer};
use http::StatusCode;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::metrics::{self as gateway_metrics, Entry};
use crate::openai::error::OpenAiError;
use crate::routes::detail::DetailError;
use crate::routes::{chat, health, jobs, metrics, models};
use crate::state::AppState;
use crate::telemetry;

/// Seconds a turned-away caller is told to wait before trying again.
const RETRY_AFTER_SECONDS: u64 = 5;

/// Composes the HTTP stack and the routes.
pub(crate) fn http_stack(state: AppState) -> Router {
    let config = state.config.clone();
    let meters = state.metrics.clone();

    // Two auth layers over one token set: callers of the replaced service read `detail`, OpenAI
    // clients read `error.message`.
    let job_auth = BearerAuthLayer::new(config.tokens.clone(), |failure: AuthFailure| {
        DetailError::new(StatusCode::UNAUTHORIZED, failure.to_string()).into_response()
    });
    let openai_auth = BearerAuthLayer::new(config.tokens.clone(), |failure: AuthFailure| {
        OpenAiError::unauthorized(failure.to_string()).into_response()
    });
    // Admission sits on the two routes that start runs, after auth (strangers never take a queue
    // slot) and before the body is parsed (a full queue answers at once).
    let execute_admission = admission(&state, Entry::Job, |closed| {
        if closed {
            return DetailError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                .into_response();
        }
        DetailError::new(StatusCode::TOO_MANY_REQUESTS, "Queue full")
            .retry_after(RETRY_AFTER_SECONDS)
            .into_response()
    });
    let chat_admission = admission(&state, Entry::Chat, |closed| {
        let detail = if closed {
            "shutting down"
        } else {
            "queue full"
        };
        OpenAiError::unavailable(format!("execution failed: {detail}"), "queue_full")
            .retry_after(RETRY_AFTER_SECONDS)
            .with_field("detail", detail.into())
            .into_response()
    });

    let job_routes = Router::new()
        .route(
            "/execute",
            post(jobs::execute).route_layer(execute_admission),
        )
        .route("/jobs", get(jobs::list))
        .route("/jobs/{job_id}", get(jobs::get).delete(jobs::cancel))
        .route("/jobs/{job_id}/events", get(jobs::events))
        .route_layer(job_auth);
    let openai_routes = Router::new()
        .route(
            "/v1/chat/completions",
            post(chat::chat_completions).route_layer(chat_admission),
        )
        .route("/v1/models", get(models::list))
        .route("/v1/models/{model_id}", get(models::get))
        .route_layer(openai_auth);

    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .merge(job_routes)
        .merge(openai_routes)
        .fallback(not_found)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                // First, so every log line and every response carries the id.
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                // One span per request: method, path, request id; status and latency at the end.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(telemetry::make_span)
                        .on_request(())
                        .on_response(telemetry::on_response)
                        .on_failure(()),
                )
                // Like every layer here it runs below the router, so the matched route template
                // is on the request; outside body-limit and auth, so 413s and 401s count too.
                .layer(axum::middleware::from_fn_with_state(
                    meters,
                    gateway_metrics::http::track,
                ))
                // A bug that panics in a handler answers 500 instead of cutting the connection, and
                // inside the trace span so the panic is logged with its request id.
                .layer(CatchPanicLayer::custom(panic_response))
                // Bounded bodies before anything reads them; the extractors' own 2 MiB default is
                // lifted so this one setting is the limit.
                .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
                .layer(DefaultBodyLimit::disable()),
        )
}

/// Admission for the routes that start runs from `entry`: a turned-away run is counted, and
/// answered by `refuse`, told whether the gauge is closed (the gateway draining, a 503) rather
/// than full (the caller's 429).
fn admission(
    state: &AppState,
    entry: Entry,
    refuse: fn(bool) -> Response,
) -> AdmissionLayer<impl Fn(GaugeSnapshot) -> Response + Clone + Send + Sync + 'static> {
    let gauge = state.gauge.clone();
    let metrics = state.metrics.clone();
    AdmissionLayer::new(state.gauge.clone(), move |_: GaugeSnapshot| {
        metrics.record_rejected(entry);
        refuse(gauge.is_closed())
    })
}

/// The answer to a request whose handler panicked; the panic text stays in the logs.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "a handler panicked");
    OpenAiError::internal("internal error: the gateway hit a bug handling this request")
        .with_field("detail", "internal error".into())
        .into_response()
}

async fn not_found(uri: http::Uri) -> Response {
    if uri.path().starts_with("/v1/") {
        OpenAiError::not_found(format!("no route for {}", uri.path())).into_response()
    } else {
        DetailError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
    }
}
