//! `claude_gateway_http_requests_total` and `claude_gateway_http_request_duration_seconds`: a
//! middleware that sits below the router, where axum has put the matched route template
//! ([`MatchedPath`]) on the request, so `/jobs/3f2a…` is counted as `/jobs/{job_id}` and the
//! label set stays bounded whatever paths callers send.

use std::time::Instant;

use ::metrics::{counter, histogram};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;

use super::names::{HTTP_REQUESTS, HTTP_REQUEST_DURATION};
use super::Metrics;

/// The `route` label of a request no route matched (answered by the fallback, 404).
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// Counts the answer to `request` and times its head. Use with
/// [`axum::middleware::from_fn_with_state`] and the gateway's [`Metrics`].
pub(crate) async fn track(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let status = response.status().as_u16().to_string();
    metrics.record(|| {
        counter!(
            HTTP_REQUESTS,
            "method" => method,
            "route" => route.to_owned(),
            "status" => status,
        )
        .increment(1);
        histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route.to_owned())
            .record(elapsed);
    });
    response
}

/// The method as a label; methods outside the standard set are `other`, so a caller inventing
/// methods cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let invented = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&invented), "other");
    }
}
