//! The foundation as a caller sees it: health, auth, request ids, body limits, 404s.

mod common;

use common::{json, status_and_json, Gateway, CHAT, TOKEN};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn health_is_open_and_has_the_contract_shape() {
    let gw = Gateway::with("max-concurrency", 3).await;
    let response = gw.get_open("/health").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = json(response).await;
    // Whether runs get cgroups depends on the host's cgroups (see containment.rs for both).
    let run_cgroups = body
        .as_object_mut()
        .and_then(|b| b.remove("run_cgroups"))
        .expect("run_cgroups");
    assert!(run_cgroups.is_boolean(), "{run_cgroups}");
    // As root (CI) each run gets a uid of its own; otherwise runs share the gateway's.
    let isolation = if nix::unistd::geteuid().is_root() {
        "uid"
    } else {
        "process"
    };
    assert_eq!(
        body,
        serde_json::json!({"status": "ok", "busy": false, "active": 0, "queued": 0, "capacity": 3, "isolation": isolation, "base": "none", "pool": "off", "pool_ready": 0, "store": "ok", "replica": gw.state.jobs.replica(), "dispatch": {"paused_until": null}})
    );
}

async fn get_with_auth(
    gw: &Gateway,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = gw.request_as(None, Method::GET, path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    status_and_json(common::send(request).await).await
}

#[tokio::test]
async fn missing_and_wrong_tokens_get_401_with_a_reason() {
    let gw = Gateway::start().await;
    let cases = [
        (None, "Missing bearer token"),
        (Some("Bearer"), "Missing bearer token"),
        (Some("Bearer    "), "Missing bearer token"),
        (Some("Basic dXNlcjpwYXNz"), "Missing bearer token"),
        (Some("Bearer wrong-token"), "Invalid token"),
        (Some("Bearer test-token-but-longer"), "Invalid token"),
    ];
    for (authorization, reason) in cases {
        let (status, body) = get_with_auth(&gw, "/jobs/abc", authorization).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(body["detail"], reason, "{authorization:?}");
    }
    // On /v1 the same failure comes in OpenAI's error shape.
    let (status, body) = get_with_auth(&gw, "/v1/models", Some("Bearer nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "Invalid token");
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let gw = Gateway::start().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, body) =
            get_with_auth(&gw, "/jobs/abc", Some(&format!("{scheme} {TOKEN}"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{scheme}");
        assert_eq!(body["detail"], "Job not found");
    }
}

#[tokio::test]
async fn a_second_token_from_the_tokens_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        "# rotation in progress\nold:old-secret\nnew:new-secret\n",
    )
    .unwrap();
    let gw = Gateway::builder()
        .arg("api-bearer-tokens-file", file.display())
        .start()
        .await;
    for token in ["old-secret", "new-secret", TOKEN] {
        let (status, _) = get_with_auth(&gw, "/v1/models", Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, StatusCode::OK, "{token}");
    }
    let (status, _) = get_with_auth(&gw, "/v1/models", Some("Bearer older-secret")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let gw = Gateway::start().await;
    let given = gw.request_as(None, Method::GET, "/health");
    let given = common::send(given.header("x-request-id", "trace-me-42")).await;
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
    let made = gw.get_open("/health").await;
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a uuid: {id}");
    let unauthorised = gw.get_open("/jobs/x").await;
    assert!(unauthorised.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let gw = Gateway::with("max-body-bytes", 1024).await;
    let big = "x".repeat(4096);
    let response = gw
        .post(
            "/execute",
            &serde_json::json!({"prompt": big, "agent": "a"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Refused by its announced length, in the route's own error shape, saying the limit.
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body = json(response).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("1024 bytes"), "{body}");
    // Chunked, with no length announced: still refused, not buffered whole.
    let stream = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 512]))),
    );
    let response = gw.post_raw(CHAT, reqwest::Body::wrap_stream(stream)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Cut off while the chat route reads it: an OpenAI-shaped error that says why.
    let body = json(response).await;
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("1024 bytes"), "{body}");
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let gw = Gateway::start().await;
    let response = gw.get("/nope").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = gw.get("/v1/nope").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(json(response).await["error"]["message"].is_string());
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let gw = Gateway::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = common::send(h2.get(format!("{}/health", gw.url))).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn json_bodies_of_the_wrong_shape_get_clear_errors() {
    let gw = Gateway::start().await;
    let response = gw.post_raw(CHAT, "{not json").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(json(response).await["error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid request body"));
    let response = gw
        .post(CHAT, &serde_json::json!({"messages": "hello"}))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = gw
        .post("/execute", &serde_json::json!({"prompt": 5, "agent": "a"}))
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json(response).await["detail"].is_string());
}

#[tokio::test]
async fn a_silent_or_idle_connection_is_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::with("header-read-timeout-seconds", 1).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();

    // A client that connects and never sends a request line.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the gateway closes a silent connection");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not answered: {read:?}"
    );

    // A keep-alive connection left idle after one request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        idle.read_to_end(&mut answer),
    )
    .await
    .expect("the gateway closes an idle keep-alive connection");
    assert!(closed.is_ok());
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "answered first"
    );
}
