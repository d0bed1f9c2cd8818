//! Errors on `/v1/*` in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
//! status codes the OpenAI SDKs map to their exception classes.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::agent::AgentOutcome;
use crate::bounds::{Refusal, RETRY_AFTER_SECONDS};
use crate::run::{failure_detail, outcome_detail, RunFailure};

/// An OpenAI-shaped error response. Boxed inside, so `Result<T, OpenAiError>` stays small.
#[derive(Debug, Clone)]
pub(crate) struct OpenAiError(Box<Fields>);

#[derive(Debug, Clone)]
struct Fields {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<Cow<'static, str>>,
    code: Option<&'static str>,
    retry_after: Option<u64>,
    /// Kept beside `error` for callers of the replaced service: why a run failed.
    detail: Option<String>,
    /// Kept beside `error` for callers of the replaced service: the supported models.
    supported: Option<Vec<String>>,
}

/// An error body on `/v1/*`: OpenAI's `{"error": {…}}`, and, for callers of the replaced
/// service, `detail` (why a run failed) and `supported` (on an unknown model).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OpenAiErrorBody)]
pub(crate) struct ErrorBody {
    /// The error.
    error: ErrorObject,
    /// Why a run failed, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// The supported models, when the one asked for is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    supported: Option<Vec<String>>,
}

/// OpenAI's error object.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OpenAiError)]
pub(crate) struct ErrorObject {
    /// What went wrong, for a person.
    message: String,
    /// OpenAI's error type: `invalid_request_error`, `permission_error`, `server_error`, ….
    #[serde(rename = "type")]
    kind: String,
    /// The request field at fault.
    param: Option<String>,
    /// Machine-readable code: `model_not_found`, `queue_full`, `agent_failed`, ….
    code: Option<String>,
}

impl OpenAiError {
    /// An error with the given status, message and OpenAI `type`.
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self(Box::new(Fields {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
            detail: None,
            supported: None,
        }))
    }

    /// 400 `invalid_request_error`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401 `invalid_request_error` / `invalid_api_key`.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .code("invalid_api_key")
    }

    /// 404 `invalid_request_error`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    /// 503 `server_error`; retrying later may help.
    pub(crate) fn unavailable(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code(code)
    }

    /// 500 `server_error`.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// Names the request field at fault (`tools[0].function.name`).
    pub(crate) fn param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.0.param = Some(param.into());
        self
    }

    /// The message, for a person.
    pub(crate) fn message(&self) -> &str {
        &self.0.message
    }

    /// The request field at fault, if any.
    #[cfg(test)]
    pub(crate) fn param_str(&self) -> Option<&str> {
        self.0.param.as_deref()
    }

    /// Sets the machine-readable `code`.
    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.0.code = Some(code);
        self
    }

    /// Adds `Retry-After: seconds`.
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }

    /// Adds `detail` beside `error`, as the replaced service answered it.
    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    /// Adds `supported` beside `error`: the models the gateway supports.
    pub(crate) fn supported(mut self, models: &[String]) -> Self {
        self.0.supported = Some(models.to_vec());
        self
    }

    /// The HTTP status.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The body, as answered or streamed in an SSE error event.
    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                message: self.0.message.clone(),
                kind: self.0.kind.to_owned(),
                param: self.0.param.as_deref().map(str::to_owned),
                code: self.0.code.map(str::to_owned),
            },
            detail: self.0.detail.clone(),
            supported: self.0.supported.clone(),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.0.status, Json(self.body())).into_response();
        if let Some(seconds) = self.0.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.0.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A refusal of the intake as an OpenAI error: load is a 503 (the contract's "queue full"), a
/// body that cannot be taken in keeps its own status (408, 413, 400). A key at its own
/// `max_queued` is OpenAI's 429 `rate_limit_exceeded`, with `Retry-After`: it is that caller's
/// limit, not the gateway's.
impl From<&Refusal> for OpenAiError {
    fn from(refusal: &Refusal) -> Self {
        if let Refusal::KeyQueueFull { .. } = refusal {
            return OpenAiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                refusal.to_string(),
            )
            .code("rate_limit_exceeded")
            .retry_after(RETRY_AFTER_SECONDS);
        }
        if refusal.is_overload() {
            let detail = match refusal {
                Refusal::ShuttingDown => "shutting down",
                _ => "queue full",
            };
            return OpenAiError::unavailable(format!("execution failed: {detail}"), "queue_full")
                .retry_after(RETRY_AFTER_SECONDS)
                .detail(detail);
        }
        let status = refusal.status();
        let error = OpenAiError::new(status, "invalid_request_error", refusal.to_string());
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return error.code("request_too_large");
        }
        error
    }
}

/// The error for a run that ended but did not succeed: 503, as the replaced service answered.
pub(crate) fn outcome_error(outcome: &AgentOutcome) -> OpenAiError {
    let detail = outcome_detail(outcome);
    OpenAiError::unavailable(format!("execution failed: {detail}"), "agent_failed").detail(detail)
}

/// The error for a run that produced no outcome.
pub(crate) fn failure_error(failure: RunFailure) -> OpenAiError {
    let detail = failure_detail(&failure);
    let error = match &failure {
        RunFailure::TimedOut(_) | RunFailure::TimedOutBeforeStart(_) => {
            OpenAiError::unavailable(detail.clone(), "timeout")
        }
        RunFailure::Workspace(_) => OpenAiError::unavailable(detail.clone(), "workspace_failed"),
        RunFailure::Agent(_) => OpenAiError::unavailable(detail.clone(), "agent_failed"),
        RunFailure::Internal(_) => OpenAiError::internal(detail.clone()),
    };
    error.detail(detail)
}
