//! Errors of the Messages route in Anthropic's shape,
//! `{"type": "error", "error": {"type", "message"}}`, with the statuses the Anthropic SDKs map to
//! their exception classes (`BadRequestError` 400, `AuthenticationError` 401,
//! `PermissionDeniedError` 403, `NotFoundError` 404, `RateLimitError` 429, `InternalServerError`
//! 500 and up).

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::agent::{AgentOutcome, OptionError};
use crate::bounds::{Refusal, RETRY_AFTER_SECONDS};
use crate::run::{failure_detail, outcome_detail, RunFailure};

/// An Anthropic-shaped error response.
#[derive(Debug, Clone)]
pub(crate) struct AnthropicError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

/// An error body of the Messages route: Anthropic's `{"type": "error", "error": {…}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AnthropicErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "error")]
    kind: &'static str,
    /// The error.
    error: AnthropicErrorObject,
}

/// Anthropic's error object.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AnthropicErrorObject {
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`,
    /// `request_too_large`, `rate_limit_error`, `api_error`, `timeout_error` or
    /// `overloaded_error`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: &'static str,
    /// What went wrong, for a person.
    message: String,
}

impl AnthropicError {
    /// An error with the given status, Anthropic error `type` and message.
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `invalid_request_error`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401 `authentication_error`.
    pub(crate) fn authentication(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    /// 404 `not_found_error`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    /// 500 `api_error`.
    pub(crate) fn api(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", message)
    }

    /// Adds `Retry-After: seconds`.
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The HTTP status.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The body, as answered or streamed in an `error` event.
    pub(crate) fn body(&self) -> AnthropicErrorBody {
        AnthropicErrorBody {
            kind: "error",
            error: AnthropicErrorObject {
                kind: self.kind,
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A refusal of the intake: a full queue (or its byte budget spent) is a 429 `rate_limit_error`
/// with `Retry-After`, so the SDKs raise `RateLimitError` (and, with retries on, wait and retry);
/// a draining gateway is a 503; a body that cannot be taken in keeps its own status (408, 413
/// `request_too_large`, 400).
impl From<&Refusal> for AnthropicError {
    fn from(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::ShuttingDown => AnthropicError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded_error",
                "the gateway is shutting down; try again on another replica",
            )
            .retry_after(RETRY_AFTER_SECONDS),
            Refusal::QueueFull | Refusal::QueuedBytes => AnthropicError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("queue full: {refusal}"),
            )
            .retry_after(RETRY_AFTER_SECONDS),
            Refusal::KeyQueueFull { .. } => AnthropicError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                refusal.to_string(),
            )
            .retry_after(RETRY_AFTER_SECONDS),
            Refusal::TooLarge { .. } => AnthropicError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                refusal.to_string(),
            ),
            Refusal::SlowBody { .. } | Refusal::Unreadable(_) => AnthropicError::new(
                refusal.status(),
                "invalid_request_error",
                refusal.to_string(),
            ),
        }
    }
}

/// An option the operator's policy refused (403 `permission_error`) or that is malformed (400).
pub(crate) fn option_error(error: &OptionError) -> AnthropicError {
    let field = error.field_named("output_config.effort", "output_config.format");
    if error.is_refusal() {
        return AnthropicError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("{field}: {error}"),
        );
    }
    AnthropicError::invalid(format!("{field}: {error}"))
}

/// The error for a run that ended but did not succeed: 500 `api_error` with why.
pub(crate) fn outcome_error(outcome: &AgentOutcome) -> AnthropicError {
    AnthropicError::api(format!("execution failed: {}", outcome_detail(outcome)))
}

/// The error for a run that produced no outcome: 504 `timeout_error` for a deadline, 500
/// `api_error` otherwise.
pub(crate) fn failure_error(failure: &RunFailure) -> AnthropicError {
    let detail = failure_detail(failure);
    match failure {
        RunFailure::TimedOut(_) | RunFailure::TimedOutBeforeStart(_) => {
            AnthropicError::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", detail)
        }
        _ => AnthropicError::api(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refusals_have_the_statuses_the_sdks_map() {
        let full = AnthropicError::from(&Refusal::QueueFull);
        assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
        let response = full.into_response();
        assert_eq!(
            response.headers()[header::RETRY_AFTER],
            RETRY_AFTER_SECONDS.to_string().as_str()
        );
        assert_eq!(
            AnthropicError::from(&Refusal::TooLarge { limit: 1 }).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            AnthropicError::from(&Refusal::SlowBody {
                after: Duration::from_secs(1)
            })
            .status(),
            StatusCode::REQUEST_TIMEOUT
        );
        let body = serde_json::to_value(AnthropicError::invalid("bad").body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})
        );
    }
}
