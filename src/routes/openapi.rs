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
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use crate::anthropic::error::AnthropicErrorBody;
use crate::openai::error::ErrorBody;
use crate::openai::responses::ResponseObject;
use crate::openai::wire::ChatCompletionChunk;
use crate::routes::detail::Detail;

/// The name of the bearer scheme in `components/securitySchemes`, which protected operations
/// name in their `security`.
pub(crate) const BEARER: &str = "bearer";

/// The name of the `x-api-key` scheme (the token alone in that header, as the Anthropic SDKs
/// send it), which the Messages route accepts beside bearer.
pub(crate) const API_KEY: &str = "api_key";

/// The document's header: title, description, the security scheme, the tags. The paths are added
/// as the routes are registered.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "claude-gateway",
        description = "Runs the Claude Code CLI behind HTTP: as queued, isolated jobs (`/execute`, `/jobs`), as OpenAI-compatible chat completions and Responses APIs with function calling (`/v1`) and as the Anthropic Messages API (`/v1/messages`). Every route but `/health`, `/metrics` and `/openapi.json` takes `Authorization: Bearer <token>`; `/v1/messages` also takes `x-api-key: <token>`."
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "jobs", description = "Queued agent runs and their records"),
        (name = "openai", description = "The OpenAI-compatible chat completions and Responses APIs"),
        (name = "anthropic", description = "The Anthropic Messages API"),
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
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "The token alone, as the Anthropic SDKs send it; accepted by `/v1/messages`",
            ))),
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

/// The answers of a route about one job when it is not the caller's, or the store fails.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its responses are used: the handlers answer through their error types.
pub(crate) enum JobLookupFailure {
    /// No such job of this caller (`Job not found`).
    #[response(status = 404)]
    NotFound(Detail),
    /// The store cannot be read; try again after `Retry-After` seconds.
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

/// The answers of an OpenAI run route (chat completions, Responses) to a call it does not run, or
/// whose run failed: an option refused, a body it cannot take in, the queue full, a bug.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its responses are used: the handlers answer through their error types.
pub(crate) enum OpenAiRunFailure {
    /// The operator's policy refuses an option (`option_not_allowed`)
    #[response(status = 403)]
    OptionRefused(ErrorBody),
    /// The body did not arrive in time
    #[response(status = 408)]
    SlowBody(ErrorBody),
    /// The body is over `MAX_BODY_BYTES` (`request_too_large`)
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The gateway hit a bug
    #[response(status = 500)]
    Bug(ErrorBody),
    /// The queue is full or the gateway is shutting down (`queue_full`, with `Retry-After`), or the run failed (`agent_failed`, `timeout`, `workspace_failed`)
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait, when retrying may help")))]
    Unavailable(ErrorBody),
}

/// The answers of the Messages route to a request whose token is missing, malformed or not
/// accepted, in Anthropic's error shape.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its responses are used: the handlers answer through their error types.
pub(crate) enum AnthropicAuthFailure {
    /// The request is malformed (`invalid_request_error`): its credentials (several that
    /// differ), or its body.
    #[response(status = 400)]
    Malformed(AnthropicErrorBody),
    /// No token, or one that is not accepted (`authentication_error`).
    #[response(status = 401)]
    Unauthorized(AnthropicErrorBody),
}

/// One Server-Sent Event, as OpenAPI 3.1 describes an event stream's item: an `event` name, an
/// `id`, and `data` holding JSON that fits `data` (or, with `done`, the literal `[DONE]`).
fn sse_event(description: &str, data: RefOr<Schema>, done: bool) -> RefOr<Schema> {
    let json = ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type("application/json")
        .content_schema(Some(data));
    let data: RefOr<Schema> = if done {
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["[DONE]"])),
            )
            .item(json)
            .into()
    } else {
        json.into()
    };
    ObjectBuilder::new()
        .description(Some(description))
        .property("event", ObjectBuilder::new().schema_type(Type::String))
        .property("id", ObjectBuilder::new().schema_type(Type::String))
        .property("data", data)
        .required("data")
        .into()
}

/// The data of a typed stream event: a JSON object whose `type` names it.
fn typed_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("type", ObjectBuilder::new().schema_type(Type::String))
        .required("type")
}

/// An event of a streamed chat answer: a `chat.completion.chunk`, or an error that ends the
/// stream, then `[DONE]`.
pub(crate) struct ChatEvent;

impl PartialSchema for ChatEvent {
    fn schema() -> RefOr<Schema> {
        let data = OneOfBuilder::new()
            .item(Ref::from_schema_name(ChatCompletionChunk::name()))
            .item(Ref::from_schema_name(ErrorBody::name()));
        sse_event("A chunk, an error, or `[DONE]`", data.into(), true)
    }
}

impl ToSchema for ChatEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema, more) in [
            (
                ChatCompletionChunk::name(),
                ChatCompletionChunk::schema(),
                ChatCompletionChunk::schemas as fn(&mut _),
            ),
            (ErrorBody::name(), ErrorBody::schema(), ErrorBody::schemas),
        ] {
            schemas.push((name.into_owned(), schema));
            more(schemas);
        }
    }
}

/// An event of a streamed response: OpenAI's typed events (`response.created`,
/// `response.output_text.delta`, …, `response.completed` or `response.failed`), each with its
/// `type` as the SSE event name and a `sequence_number` counting up from 0.
pub(crate) struct ResponseEvent;

impl PartialSchema for ResponseEvent {
    fn schema() -> RefOr<Schema> {
        let data = typed_object()
            .property(
                "sequence_number",
                ObjectBuilder::new().schema_type(Type::Integer),
            )
            .property("response", Ref::from_schema_name(ResponseObject::name()))
            .required("sequence_number");
        sse_event(
            "A typed event; `response.completed` (or `response.incomplete`, `response.failed`) ends the stream",
            data.into(),
            false,
        )
    }
}

impl ToSchema for ResponseEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            ResponseObject::name().into_owned(),
            ResponseObject::schema(),
        ));
        ResponseObject::schemas(schemas);
    }
}

/// An event of a streamed Messages answer: its `event` line names its type (`message_start`,
/// `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`, `message_delta`,
/// `message_stop`, or `error`), and its data is a JSON object with the same `type`.
pub(crate) struct MessagesEvent;

impl PartialSchema for MessagesEvent {
    fn schema() -> RefOr<Schema> {
        sse_event("An Anthropic stream event", typed_object().into(), false)
    }
}

impl ToSchema for MessagesEvent {}

/// An event of a job's stream: `status` (`{"job_id", "status", "at", "error"}`), `agent` (one
/// stream-json event of the agent, as it printed it), `truncated`, and last `end`.
pub(crate) struct JobEvent;

impl PartialSchema for JobEvent {
    fn schema() -> RefOr<Schema> {
        let data = ObjectBuilder::new().schema_type(Type::Object);
        sse_event(
            "A job event; `id` numbers them for `Last-Event-ID`",
            data.into(),
            false,
        )
    }
}

impl ToSchema for JobEvent {}

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
    operation_id = "openapi",
    summary = "This document",
    description = "Open to all: the routes and their shapes, nothing secret.",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(crate) async fn document(Extension(published): Extension<Published>) -> Response {
    ([(CONTENT_TYPE, "application/json")], published.0).into_response()
}
