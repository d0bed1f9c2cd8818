//! Error bodies of the job routes: `{"detail": "..."}` (FastAPI's shape, which the service this
//! gateway replaced answered), so existing callers of `/execute` and `/jobs` keep reading them.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

/// The error body of the job routes and of unknown routes outside `/v1`: `{"detail": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Detail {
    /// What went wrong, for a person.
    pub(crate) detail: String,
}

/// An error answered as `{"detail": message}` with a status.
#[derive(Debug, Clone)]
pub(crate) struct DetailError {
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
}

impl DetailError {
    /// An error with this status and detail.
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After: seconds`, for errors a retry may cure.
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for DetailError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Detail {
                detail: self.detail,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
