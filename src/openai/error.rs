//! Errors on `/v1/*` in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
//! status codes the OpenAI SDKs map to their exception classes.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

/// An OpenAI-shaped error response. Boxed inside, so `Result<T, OpenAiError>` stays small.
#[derive(Debug, Clone)]
pub struct OpenAiError(Box<Fields>);

#[derive(Debug, Clone)]
struct Fields {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
    retry_after: Option<u64>,
    /// Extra top-level fields kept beside `error` for callers of the replaced service.
    extra: Option<(&'static str, Value)>,
}

impl OpenAiError {
    /// An error with the given status, message and OpenAI `type`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self(Box::new(Fields {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
            extra: None,
        }))
    }

    /// 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401 `invalid_request_error` / `invalid_api_key`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .code("invalid_api_key")
    }

    /// 404 `invalid_request_error`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    /// 503 `server_error`; retrying later may help.
    pub fn unavailable(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code(code)
    }

    /// 500 `server_error`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: &'static str) -> Self {
        self.0.param = Some(param);
        self
    }

    /// Sets the machine-readable `code`.
    pub fn code(mut self, code: &'static str) -> Self {
        self.0.code = Some(code);
        self
    }

    /// Adds `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }

    /// Adds a top-level field beside `error` (the replaced service's `supported` list).
    pub fn with_field(mut self, name: &'static str, value: Value) -> Self {
        self.0.extra = Some((name, value));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The `error` object alone, as streamed in an SSE error event.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "error": {
                "message": self.0.message,
                "type": self.0.kind,
                "param": self.0.param,
                "code": self.0.code,
            }
        });
        if let Some((name, value)) = &self.0.extra {
            body[*name] = value.clone();
        }
        body
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
