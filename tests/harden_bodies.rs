//! Issue 10, items 2, 8 and 9 (body limit): bodies cannot hold the queue, queued work is bounded
//! in bytes, and refusals are readable answers in each route's shape.

mod common;
mod harden_support;

use std::time::Duration;

use common::{fake_gateway, json, Gateway, TOKEN};
use harden_support::read_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const AGENT: &str = "general-purpose";

/// Opens a connection and sends the headers of a `POST path` that declares `length` bytes of
/// body, then `sent` of them.
async fn slow_post(gw: &Gateway, path: &str, length: usize, sent: &[u8]) -> TcpStream {
    let addr = gw.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

fn body_of(response: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(response);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Checks a raw answer from `path`: its status, and its error in the route's shape (`detail`
/// holding `detail_part` on `/execute`; `error.KEY` equal to the value on chat).
fn assert_refused(
    path: &str,
    response: &[u8],
    status: u16,
    detail_part: &str,
    openai: (&str, &str),
) {
    assert_eq!(status_of(response), status, "{path}");
    let body = body_of(response);
    if path == "/execute" {
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(detail_part), "{body}");
    } else {
        assert_eq!(body["error"][openai.0], openai.1, "{body}");
    }
}

/// A gateway (in front of the stand-in `ok.sh`) that gives up on a body after 2 s, with `depth`
/// queue slots.
async fn slow_body_gateway(depth: u64) -> Gateway {
    fake_gateway(
        "ok.sh",
        &[("max-queue-depth", depth), ("body-read-timeout-seconds", 2)],
    )
    .await
}

/// Nothing is queued, and a new job is taken.
async fn assert_queue_free(gw: &Gateway) {
    let health = json(gw.get("/health").await).await;
    assert_eq!(health["queued"], 0, "{health}");
    let response = gw
        .post("/execute", &json!({"prompt": "hi", "agent": AGENT}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn slow_bodies_hold_no_queue_slot_and_get_408() {
    let gw = slow_body_gateway(3).await;
    // More slow uploads than the queue has slots, on both routes.
    let mut slow = Vec::new();
    for i in 0..6 {
        let path = if i % 2 == 0 {
            "/execute"
        } else {
            "/v1/chat/completions"
        };
        slow.push((path, slow_post(&gw, path, 100_000, b"{\"prompt\":").await));
    }
    // While they trickle, nothing is queued and others are served.
    assert_queue_free(&gw).await;

    // Past the deadline each slow one is answered 408 in its route's shape.
    for (path, mut stream) in slow {
        let response = read_all(&mut stream, Duration::from_secs(10)).await;
        assert_refused(
            path,
            &response,
            408,
            "not received",
            ("type", "invalid_request_error"),
        );
    }
}

#[tokio::test]
async fn http2_streams_that_never_end_hold_no_queue_slot() {
    let gw = slow_body_gateway(2).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // Sixty streams on one connection whose bodies never end.
    let mut streams = Vec::new();
    for _ in 0..60 {
        let never_ends = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        let request = h2
            .post(format!("{}/execute", gw.url))
            .bearer_auth(TOKEN)
            .body(reqwest::Body::wrap_stream(never_ends))
            .send();
        streams.push(tokio::spawn(request));
    }
    assert_queue_free(&gw).await;
    for stream in streams {
        let response = tokio::time::timeout(Duration::from_secs(20), stream)
            .await
            .expect("answered within the deadline")
            .unwrap()
            .expect("an answer, not a reset");
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }
}

#[tokio::test]
async fn queued_prompts_are_bounded_in_bytes_with_429_and_retry_after() {
    let mut gw = fake_gateway(
        "hang.sh",
        &[
            ("shutdown-grace-seconds", 1),
            ("max-concurrency", 1),
            ("max-queued-bytes", 3 * 1024 * 1024),
        ],
    )
    .await;
    // The running job's bytes are no longer the queue's.
    let running = gw
        .post(
            "/execute",
            &json!({"prompt": "x".repeat(2_000_000), "agent": AGENT}),
        )
        .await;
    assert_eq!(running.status(), StatusCode::ACCEPTED);
    gw.wait_health(|h| h["active"] == 1).await;

    let megabyte = "q".repeat(1024 * 1024);
    let mut queued = Vec::new();
    for _ in 0..2 {
        let response = gw
            .post("/execute", &json!({"prompt": megabyte, "agent": AGENT}))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        queued.push(json(response).await["job_id"].as_str().unwrap().to_owned());
    }
    let refused = gw
        .post("/execute", &json!({"prompt": megabyte, "agent": AGENT}))
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body = json(refused).await;
    assert!(
        body["detail"].as_str().unwrap().contains("Queue full"),
        "{body}"
    );
    // Chat is refused the same way, in its own shape.
    let chat = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "haiku", "messages": [{"role": "user", "content": megabyte}]}),
        )
        .await;
    assert_eq!(chat.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(chat).await["error"]["code"], "queue_full");

    // A queued job that leaves gives its bytes back.
    let cancelled = gw
        .http
        .delete(format!("{}/jobs/{}", gw.url, queued[0]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    let response = gw
        .post("/execute", &json!({"prompt": megabyte, "agent": AGENT}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_large_upload_to_a_full_queue_gets_a_readable_429() {
    let mut gw = fake_gateway(
        "hang.sh",
        &[
            ("shutdown-grace-seconds", 1),
            ("max-concurrency", 1),
            ("max-queue-depth", 1),
        ],
    )
    .await;
    let running = gw
        .post(
            "/execute",
            &json!({"prompt": "hold the slot", "agent": AGENT}),
        )
        .await;
    assert_eq!(running.status(), StatusCode::ACCEPTED);
    gw.wait_health(|h| h["active"] == 1).await;
    // Several uploads of 6 MB each: every one is answered, none reset.
    for _ in 0..3 {
        let response = gw
            .http
            .post(format!("{}/execute", gw.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"prompt\":\"{}\",\"agent\":\"{AGENT}\"}}",
                "u".repeat(6_000_000)
            ))
            .send()
            .await
            .expect("an answer, not a reset");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(json(response).await["detail"], "Queue full");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_content_length_over_the_limit_gets_413_in_the_routes_shape() {
    let gw = fake_gateway("ok.sh", &[("max-body-bytes", 1000)]).await;
    for path in ["/execute", "/v1/chat/completions"] {
        let mut stream = slow_post(&gw, path, 5000, b"").await;
        let response = read_all(&mut stream, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.to_lowercase().contains("application/json"), "{text}");
        assert_refused(
            path,
            &response,
            413,
            "1000 bytes",
            ("code", "request_too_large"),
        );
    }
    // A body longer than the limit without a Content-Length (chunked) too.
    let response = gw
        .http
        .post(format!("{}/execute", gw.url))
        .bearer_auth(TOKEN)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 500])),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json(response).await["detail"].is_string());
}
