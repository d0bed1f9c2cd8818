//! The request span and its closing log line.

use std::time::Duration;

use http::{Request, Response};
use tracing::Span;

/// One span per request with its method, path and request id; the auth layer fills `caller`
/// with the token's name once it has checked it.
pub fn make_span<B>(request: &Request<B>) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        caller = tracing::field::Empty,
    )
}

/// Logs status and latency when the response head is ready.
pub fn on_response<B>(response: &Response<B>, latency: Duration, _span: &Span) {
    tracing::info!(
        status = response.status().as_u16(),
        latency_ms = latency.as_millis() as u64,
        "response"
    );
}
