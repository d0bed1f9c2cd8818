//! The one place the gateway's HTTP stack is composed. Read top to bottom, this is the path a
//! request takes; the run stack below the handlers is composed in `run.rs`, by the one call every
//! handler makes.
//!
//! ```text
//!  HTTP ─► request-id ─► trace ─► metrics ─► catch-panic ─► router
//!                                                             │
//!     /health, /metrics, /openapi.json ◄──────────────────────┤ (open)
//!     /jobs… : auth (detail errors) ─► budget ◄───────────────┤
//!     /v1/messages: auth, bearer or x-api-key ─► budget ◄─────┤ (Anthropic errors)
//!     /v1/…  : auth (OpenAI errors) ─► budget ◄───────────────┘
//!        /execute, /v1/chat/completions, /v1/responses, /v1/messages: handler ─► intake
//!            (body within size and deadline, checked, then a queue slot and queued bytes)
//!            └─► Runs::run ─► record ─► requeue ─► concurrency ─► deadline ─► workspace
//!                                                                  ─► harvest ─► claude
//! ```
//!
//! Auth is a route layer, below the router: each route group answers a failed check in its own
//! callers' error shape. Under it, the budget guard (`quota::guard`) refuses a key whose budget
//! window is spent and adds the rate-limit headers, on the routes that start runs. Admission is
//! not a layer: the routes that start runs take their slot through [`crate::bounds::Intake`] only
//! once the body is in and checked, so a slow or invalid body never holds one. The
//! connection-level bounds (count, idle and write timeouts) are the server's, in `server.rs`.

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use gateway_layers::auth::{AuthFailure, BearerAuthLayer, TokenSource};
use http::StatusCode;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::anthropic::error::AnthropicError;
use crate::metrics::{self as gateway_metrics};
use crate::openai::error::OpenAiError;
use crate::routes::detail::DetailError;
use crate::routes::openapi::{ApiDoc, Published};
use crate::routes::{chat, health, jobs, messages, metrics, models, openapi, quota, responses};
use crate::state::AppState;
use crate::telemetry;

/// Composes the HTTP stack and the routes.
pub(crate) fn http_stack(state: AppState) -> Router {
    let config = state.config.clone();
    let meters = state.metrics.clone();

    // Two auth layers over one token set: callers of the replaced service read `detail`, OpenAI
    // clients read `error.message`.
    let job_auth = BearerAuthLayer::new(config.tokens.clone(), |failure: AuthFailure| {
        let status = if failure.is_malformed() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNAUTHORIZED
        };
        DetailError::new(status, failure.to_string()).into_response()
    });
    let openai_auth = BearerAuthLayer::new(config.tokens.clone(), |failure: AuthFailure| {
        if failure.is_malformed() {
            return OpenAiError::bad_request(failure.to_string()).into_response();
        }
        OpenAiError::unauthorized(failure.to_string()).into_response()
    });
    // Anthropic's SDKs send the token alone in `x-api-key`; the same tokens, checked the same way.
    let anthropic_auth = BearerAuthLayer::new(config.tokens.clone(), |failure: AuthFailure| {
        if failure.is_malformed() {
            return AnthropicError::invalid(failure.to_string()).into_response();
        }
        let message = match failure {
            AuthFailure::Missing => "Missing API key: send x-api-key or Authorization: Bearer",
            _ => "Invalid token",
        };
        AnthropicError::authentication(message).into_response()
    })
    .token_source(TokenSource::BearerOrHeader(http::HeaderName::from_static(
        "x-api-key",
    )));
    // Under each auth layer (so the caller is known): budget refusals and rate-limit headers
    // on the routes that start runs.
    let budget = axum::middleware::from_fn_with_state(state.clone(), quota::guard);
    // Each `routes!` registers its handlers' routes and adds their `#[utoipa::path]` to the
    // document in the same call: a route is served only if it is documented (`/openapi.json`).
    let job_routes = OpenApiRouter::new()
        .routes(routes!(jobs::execute))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get, jobs::cancel))
        .routes(routes!(jobs::events))
        .routes(routes!(jobs::diff))
        .route_layer(budget.clone())
        .route_layer(job_auth);
    let openai_routes = OpenApiRouter::new()
        .routes(routes!(chat::chat_completions))
        .routes(routes!(responses::create))
        .routes(routes!(models::list))
        .routes(routes!(models::get))
        .routes(routes!(quota::get_quota))
        .route_layer(budget.clone())
        .route_layer(openai_auth);
    let anthropic_routes = OpenApiRouter::new()
        .routes(routes!(messages::create_message))
        .route_layer(budget)
        .route_layer(anthropic_auth);
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::document))
        .merge(job_routes)
        .merge(openai_routes)
        .merge(anthropic_routes)
        .split_for_parts();

    router
        .layer(Extension(Published::new(&document)))
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
                // Bodies are read only by the intake of the routes that start runs, which bounds
                // them (`MAX_BODY_BYTES`, answered in the route's error shape) and their time;
                // the extractors' own 2 MiB default is lifted so that one setting is the limit.
                .layer(DefaultBodyLimit::disable()),
        )
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
        .detail("internal error")
        .into_response()
}

async fn not_found(uri: http::Uri) -> Response {
    if uri.path().starts_with("/v1/") {
        OpenAiError::not_found(format!("no route for {}", uri.path())).into_response()
    } else {
        DetailError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
    }
}
