//! `GET /openapi.json`: the gateway's own OpenAPI 3.1 document, open like `/health` (it describes
//! the routes and their shapes, nothing secret).
//!
//! The document is generated from the handlers' `#[utoipa::path]` annotations and the wire types'
//! `ToSchema` derives, gathered by the same calls that register the routes (see `stack.rs`), so a
//! route cannot be served without being documented. This module holds what is common to it: the
//! document's header, the bearer scheme, the error responses several routes share, and the route
//! that serves it.

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::header::CONTENT_TYPE;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::openai::error::ErrorBody;
use crate::routes::detail::Detail;

/// The name of the bearer scheme in `components/securitySchemes`, which protected operations
/// name in their `security`.
pub(crate) const BEARER: &str = "bearer";

/// The document's header: title, description, the security scheme, the tags. The paths are added
/// as the routes are registered.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "claude-gateway",
        description = "Runs the Claude Code CLI behind HTTP: as queued, isolated jobs (`/execute`, `/jobs`) and as an OpenAI-compatible chat API (`/v1`). Every route but `/health`, `/metrics` and `/openapi.json` takes `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "jobs", description = "Queued agent runs and their records"),
        (name = "openai", description = "The OpenAI-compatible chat API"),
        (name = "operations", description = "Health, metrics and this document; open to all")
    )
)]
pub(crate) struct ApiDoc;

/// Adds the bearer scheme the protected routes name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The answers of a job route to a request whose token is missing, malformed or not accepted.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its responses are used: the handlers answer through their error types.
pub(crate) enum JobAuthFailure {
    /// The request is malformed: its `Authorization` header, or a body that could not be read.
    #[response(status = 400)]
    Malformed(Detail),
    /// No token, or one that is not accepted.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(Detail),
}

/// The answer of a job route when the job store cannot be read or written, or (for a record)
/// other large responses hold the whole response budget.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its responses are used: the handlers answer through their error types.
pub(crate) enum StoreFailure {
    /// Try again after `Retry-After` seconds.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(Detail),
}

/// The answers of an OpenAI route to a request whose token is missing, malformed or not accepted.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its responses are used: the handlers answer through their error types.
pub(crate) enum OpenAiAuthFailure {
    /// The request is malformed (`invalid_request_error`): its `Authorization` header, or its
    /// body where it has one.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// No token, or one that is not accepted (`invalid_api_key`).
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
}

/// The generated document, serialized once at start-up.
#[derive(Clone, Debug)]
pub(crate) struct Published(Bytes);

impl Published {
    /// Serializes `document` for serving.
    pub(crate) fn new(document: &Document) -> Self {
        // A document built from derives always serializes.
        Self(Bytes::from(document.to_json().unwrap_or_default()))
    }
}

/// Serves this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(crate) async fn document(Extension(published): Extension<Published>) -> Response {
    ([(CONTENT_TYPE, "application/json")], published.0).into_response()
}
