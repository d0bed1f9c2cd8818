//! The one place the gateway's stack is composed. Read top to bottom, this is the path a request
//! takes: the HTTP stack every request crosses, then the agent stack every run goes down.
//!
//! ```text
//!  HTTP ─► request-id ─► trace ─► metrics ─► body-limit ─► auth ─► admission ─► router
//!                                                                     │
//!    /v1/chat/completions awaits, /execute spawns a job ◄─────────────┘
//!        ▼
//!  concurrency-limit ─► deadline ─► workspace ─► ClaudeService
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use gateway_layers::admission::{AdmissionLayer, Gauge, GaugeSnapshot};
use gateway_layers::auth::{AuthFailure, BearerAuthLayer};
use gateway_layers::concurrency::ConcurrencyLimitLayer;
use gateway_layers::deadline::DeadlineLayer;
use gateway_layers::workspace::{Provision, WorkspaceLayer};
use gateway_layers::BoxError;
use http::{Request, StatusCode};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::agent::{AgentOutcome, AgentRequest, ClaudeService};
use crate::app::AppState;
use crate::metrics::{self as gateway_metrics, Entry};
use crate::openai::error::OpenAiError;
use crate::routes::{chat, health, jobs, metrics, models, seed_error::SeedError, telemetry};

/// The agent stack as the routes hold it: cloneable and shareable across tasks.
pub type AgentStack = BoxCloneSyncService<Request<AgentRequest>, AgentOutcome, BoxError>;

/// Seconds a turned-away caller is told to wait before trying again.
const RETRY_AFTER_SECONDS: u64 = 5;

/// Composes the stack every agent run goes down.
pub fn agent_stack(
    gauge: Gauge,
    provisioner: Arc<dyn Provision>,
    claude: ClaudeService,
    default_deadline: Duration,
) -> AgentStack {
    let stack = ServiceBuilder::new()
        // Outermost: a run waits here, FIFO, as `queued`, and holds its permit until its future
        // ends however it ends. Nothing below runs before a slot is free.
        .layer(ConcurrencyLimitLayer::new(gauge))
        // Inside the permit, so time in the queue never counts against a run's deadline; around
        // the workspace, so a clone that hangs is bounded by the same deadline.
        .layer(DeadlineLayer::new(default_deadline))
        // Provisioned only once the run may start (a queued run holds no checkout) and removed in
        // the background when the run's future ends or is dropped.
        .layer(WorkspaceLayer::new(provisioner))
        .service(claude);
    BoxCloneSyncService::new(stack)
}

/// Composes the HTTP stack and the routes.
pub fn http_stack(state: AppState) -> Router {
    let config = state.config.clone();
    let meters = state.metrics.clone();

    // Two auth layers over one token set: callers of the replaced service read `detail`, OpenAI
    // clients read `error.message`.
    let seed_auth = BearerAuthLayer::new(config.tokens.clone(), |failure: AuthFailure| {
        SeedError::new(StatusCode::UNAUTHORIZED, failure.to_string()).into_response()
    });
    let openai_auth = BearerAuthLayer::new(config.tokens.clone(), |failure: AuthFailure| {
        OpenAiError::unauthorized(failure.to_string()).into_response()
    });
    // Admission sits on the two routes that start runs, after auth (strangers never take a queue
    // slot) and before the body is parsed (a full queue answers at once).
    // A closed gauge means the gateway is draining: that is 503, not the caller's 429.
    let gauge = state.gauge.clone();
    let turned_away = meters.clone();
    let execute_admission = AdmissionLayer::new(state.gauge.clone(), move |_: GaugeSnapshot| {
        turned_away.record_rejected(Entry::Job);
        if gauge.is_closed() {
            return SeedError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                .into_response();
        }
        SeedError::new(StatusCode::TOO_MANY_REQUESTS, "Queue full")
            .retry_after(RETRY_AFTER_SECONDS)
            .into_response()
    });
    let gauge = state.gauge.clone();
    let turned_away = meters.clone();
    let chat_admission = AdmissionLayer::new(state.gauge.clone(), move |_: GaugeSnapshot| {
        turned_away.record_rejected(Entry::Chat);
        let detail = if gauge.is_closed() {
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
        .route_layer(seed_auth);
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

/// The answer to a request whose handler panicked; the panic text stays in the logs.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
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

async fn not_found(uri: http::Uri) -> axum::response::Response {
    if uri.path().starts_with("/v1/") {
        OpenAiError::not_found(format!("no route for {}", uri.path())).into_response()
    } else {
        SeedError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
    }
}
