//! The HTTP side: routes, request recording, and turning a plan into a response.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::conversation::Conversation;
use crate::plan::{self, Block, Outcome};
use crate::record::{RecordedRequest, Recorder};
use crate::script::Script;
use crate::stream;
use crate::wire;

/// Request bodies up to this size are accepted; Claude Code's first request is ~50 KB and tests send
/// prompts well past the 128 KiB argument limit, so axum's 2 MB default is too tight.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Models `GET /v1/models` lists: what Claude Code 2.1.330 sends for its aliases and the full ids
/// the gateway supports.
const MODELS: &[&str] = &[
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    "claude-haiku-5-5",
    "claude-sonnet-4-6",
    "claude-opus-4-7",
    "claude-haiku-4-5",
];

/// State every handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Defaults for prompts without directives.
    script: Script,
    /// Where requests are logged for tests.
    recorder: Arc<Recorder>,
    /// Source of unique message, request and tool-use ids.
    next_id: AtomicU64,
    /// Turns true when the mock stops, ending scripted delays early.
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(
        script: Script,
        recorder: Arc<Recorder>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            script,
            recorder,
            next_id: AtomicU64::new(1),
            shutdown,
        })
    }

    fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}{:06}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Records the request and returns its body parsed as JSON (`Null` when empty).
    fn record(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Value, serde_json::Error> {
        let parsed = if body.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(body)
        };
        let json = parsed.as_ref().map_or(Value::Null, Clone::clone);
        self.recorder.push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            model: json.get("model").and_then(Value::as_str).map(str::to_owned),
            stream: json.get("stream").and_then(Value::as_bool).unwrap_or(false),
            body: json,
        });
        parsed
    }

    fn log(&self, line: impl FnOnce() -> String) {
        if self.script.logs_requests() {
            eprintln!("mock-anthropic: {}", line());
        }
    }

    /// Waits `delay`, or less if the mock is stopping.
    async fn pause(&self, delay: Option<Duration>) {
        if let Some(delay) = delay {
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        }
    }
}

/// A request as it arrived, recorded before its handler runs: what every route takes.
struct Incoming {
    /// The mock's state.
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    /// The body as it came.
    raw: Bytes,
    /// The body as JSON (`Null` when empty), or why it is not JSON.
    body: Result<Value, serde_json::Error>,
}

impl FromRequest<Arc<Shared>> for Incoming {
    type Rejection = Response;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Self, Response> {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let headers = request.headers().clone();
        let raw = Bytes::from_request(request, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = shared.record(&method, &uri, &headers, &raw);
        Ok(Self {
            shared: shared.clone(),
            method,
            uri,
            raw,
            body,
        })
    }
}

/// The mock's routes. Everything unknown is answered with an Anthropic-style JSON error.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        // Claude Code probes this (HEAD) unless CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is set.
        .route("/api/hello", get(hello))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// Serves the mock on `listener` until `shutdown` completes. For the standalone binary; tests use
/// [`crate::MockAnthropic`], which also exposes what was received.
pub async fn serve(
    listener: TcpListener,
    script: Script,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let shared = Shared::new(script, Arc::default(), stopped.clone());
    tokio::spawn(async move {
        shutdown.await;
        stop.send_replace(true);
    });
    run(listener, shared, stopped).await
}

/// Serves `shared` on `listener` until `stopped` turns true, then lets open connections finish.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) -> io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move {
            // A dropped sender also means "stop": nobody is left to keep the mock running for.
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
}

async fn messages(request: Incoming) -> Response {
    let (s, uri) = (&request.shared, &request.uri);
    let request_id = s.id("req_mock_");
    let body = match request.body {
        Ok(body) => body,
        Err(e) => {
            return error(
                400,
                &format!("mock-anthropic: body is not JSON: {e}"),
                false,
                &request_id,
            )
        }
    };
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return error(
            400,
            "mock-anthropic: `model` is required",
            false,
            &request_id,
        );
    };
    let Some(conversation) = Conversation::from_body(&body) else {
        return error(
            400,
            "mock-anthropic: `messages` must be an array",
            false,
            &request_id,
        );
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let plan = plan::plan(&conversation, &s.script, || s.id("toolu_mock_"));
    s.log(|| {
        format!(
            "POST {uri} model={model} stream={stream} -> {}",
            summary(&plan.outcome)
        )
    });

    match plan.outcome {
        Outcome::Error {
            status,
            retry,
            message,
        } => {
            s.pause(plan.delay).await;
            error(status, &message, retry, &request_id)
        }
        Outcome::RateLimited { reset } => {
            s.pause(plan.delay).await;
            let mut response = error(
                429,
                "mock-anthropic: this account's rate limit is used up ([[mock:ratelimit]])",
                false,
                &request_id,
            );
            let h = response.headers_mut();
            let put = |h: &mut HeaderMap, name: &'static str, value: String| {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    h.insert(HeaderName::from_static(name), value);
                }
            };
            put(h, "anthropic-ratelimit-unified-status", "rejected".into());
            put(h, "anthropic-ratelimit-unified-reset", reset.to_string());
            put(
                h,
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour".into(),
            );
            put(h, "retry-after", "1".into());
            response
        }
        Outcome::Message(reply) if stream => {
            let events = wire::events(&s.id("msg_mock_"), model, &reply);
            let mut response =
                Response::new(stream::sse_body(events, plan.delay, s.shutdown.clone()));
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            insert_request_id(h, &request_id);
            response
        }
        Outcome::Message(reply) => {
            s.pause(plan.delay).await;
            let mut response = json_response(
                StatusCode::OK,
                &wire::message(&s.id("msg_mock_"), model, &reply),
            );
            insert_request_id(response.headers_mut(), &request_id);
            response
        }
    }
}

async fn count_tokens(request: Incoming) -> Response {
    match request.body {
        // A rough 4 bytes per token: callers only need a plausible, nonzero number.
        Ok(body) if body.is_object() => json_response(
            StatusCode::OK,
            &json!({"input_tokens": (request.raw.len() / 4).max(1)}),
        ),
        Ok(_) => error(
            400,
            "mock-anthropic: body must be a JSON object",
            false,
            "req_mock_count",
        ),
        Err(e) => error(
            400,
            &format!("mock-anthropic: body is not JSON: {e}"),
            false,
            "req_mock_count",
        ),
    }
}

async fn models(_: Incoming) -> Response {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"data": data, "has_more": false, "first_id": MODELS.first(), "last_id": MODELS.last()}),
    )
}

async fn hello(_: Incoming) -> Response {
    json_response(StatusCode::OK, &json!({"message": "mock-anthropic"}))
}

async fn not_found(request: Incoming) -> Response {
    let Incoming { method, uri, .. } = &request;
    request.shared.log(|| format!("{method} {uri} -> 404"));
    error(
        404,
        &format!("mock-anthropic: no route for {method} {}", uri.path()),
        false,
        "req_mock_404",
    )
}

async fn method_not_allowed(request: Incoming) -> Response {
    let Incoming { method, uri, .. } = &request;
    error(
        405,
        &format!("mock-anthropic: {method} is not allowed on {}", uri.path()),
        false,
        "req_mock_405",
    )
}

/// An Anthropic error response. Unless `retry`, it carries `x-should-retry: false`, which Claude Code
/// honours: it gives up after this one attempt instead of retrying with backoff for minutes.
fn error(status: u16, message: &str, retry: bool, request_id: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(code, &wire::error(status, message, request_id));
    let h = response.headers_mut();
    insert_request_id(h, request_id);
    if !retry {
        h.insert(
            HeaderName::from_static("x-should-retry"),
            HeaderValue::from_static("false"),
        );
    }
    response
}

/// One line saying what the mock answered, for the standalone log.
fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Error { status, .. } => format!("error {status}"),
        Outcome::RateLimited { reset } => format!("rate-limited until {reset}"),
        Outcome::Message(reply) => reply
            .blocks
            .iter()
            .map(|b| match b {
                Block::Text(text) => format!("text {text:?}"),
                Block::Bash { command, .. } => format!("Bash {command:?}"),
                Block::Structured { input, .. } => format!("StructuredOutput {input}"),
                Block::Tool { name, input, .. } => format!("{name} {input}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, Body::from(value.to_string())).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn insert_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("request-id"), value);
    }
}
