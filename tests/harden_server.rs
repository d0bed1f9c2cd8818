//! Issue 10, items 5, 7 and 9 (auth, tokens): the drain can be seen, connections are bounded,
//! and ambiguous credentials are refused.

mod common;
mod harden_support;

use std::process::Stdio;
use std::time::Duration;

use common::{eventually, fake_gateway, json, secs, Gateway, TOKEN};
use harden_support::{Binary, BIN};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const AGENT: &str = "general-purpose";

#[tokio::test]
async fn during_the_drain_health_says_shutting_down_and_new_runs_get_503() {
    let gw = Binary::start(
        "slow-ok.sh",
        &[
            ("SHUTDOWN_GRACE_SECONDS", "30".into()),
            ("SHUTDOWN_DELAY_SECONDS", "1".into()),
        ],
    )
    .await;
    let job = gw.submit(json!({"prompt": "p", "agent": AGENT})).await;
    eventually("the job's workspace appears", secs(10), || async {
        std::fs::read_dir(gw.jobs_dir()).ok()?.next().map(|_| ())
    })
    .await;
    gw.sigterm();

    // The probe fails first: 503 with the contract's body, while the gateway still answers.
    let health = eventually("health says so", secs(10), || async {
        let response = gw.get("/health").await;
        match response.status() {
            StatusCode::SERVICE_UNAVAILABLE => Ok(json(response).await),
            status => Err(status),
        }
    })
    .await;
    assert_eq!(health["status"], "shutting_down", "{health}");
    // New runs are refused with the documented 503, on both routes.
    let refused = gw
        .post("/execute", &json!({"prompt": "p", "agent": AGENT}))
        .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(refused).await["detail"], "shutting down");
    let chat = gw
        .post("/v1/chat/completions", &Gateway::chat_body("hi"))
        .await;
    assert_eq!(chat.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The running job finishes and can be read.
    let record = json(gw.get(&format!("/jobs/{job}")).await).await;
    assert!(
        matches!(record["status"].as_str(), Some("running" | "completed")),
        "{record}"
    );
    let mut gw = gw;
    let status = tokio::time::timeout(Duration::from_secs(30), gw.child.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let log = gw.log_text();
    let finished = log.find("job finished").expect("the job finished");
    let closed = log
        .find("no longer accepting")
        .expect("the listener closed");
    assert!(
        finished < closed,
        "the listener closed before the job ended:\n{log}"
    );
    assert!(log.contains("status=completed"), "{log}");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_is_free() {
    let gw = Binary::start("ok.sh", &[("MAX_CONNECTIONS", "3".into())]).await;
    // Three clients that connected and are sending their headers slowly hold every slot.
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&gw.addr).await.unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        holders.push(stream);
    }
    eventually("three connections", secs(10), || async {
        gw.connections() == 3
    })
    .await;
    let waiting = tokio::spawn({
        let http = gw.http.clone();
        let url = format!("{}/health", gw.url);
        async move { http.get(url).send().await }
    });
    // Not served while the cap is reached (bounded look)...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served past the cap");
    assert_eq!(gw.connections(), 3, "no fourth connection accepted");
    // ...and served as soon as a slot is free.
    drop(holders.pop());
    let response = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot was free")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_http2_connection_that_answers_pings_is_closed() {
    let gw = Binary::start("ok.sh", &[("CONNECTION_IDLE_TIMEOUT_SECONDS", "1".into())]).await;
    let before = gw.connections();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_keep_alive_interval(Duration::from_millis(200))
        .http2_keep_alive_while_idle(true)
        .build()
        .unwrap();
    let response = h2.get(format!("{}/health", gw.url)).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(gw.connections(), before + 1, "the h2 connection is open");
    // The client keeps it alive with PINGs; the gateway still closes it once idle.
    eventually("the idle h2 connection is closed", secs(10), || async {
        gw.connections() == before
    })
    .await;
    // An HTTP/1 keep-alive connection too.
    let mut stream = TcpStream::connect(&gw.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = harden_support::read_all(&mut stream, Duration::from_secs(10)).await;
    assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"));
    drop(h2);
}

#[tokio::test]
async fn accept_errors_back_off_and_the_gateway_recovers() {
    // Few file descriptors and a cap above them: accept fails with EMFILE.
    let gw = Binary::start_with(
        Some(common::fake_claude("ok.sh")),
        &[
            ("MAX_CONNECTIONS", "1000".into()),
            ("HEADER_READ_TIMEOUT_SECONDS", "30".into()),
        ],
        Some(48),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..80 {
        if let Ok(stream) = TcpStream::connect(&gw.addr).await {
            held.push(stream);
        }
    }
    eventually("accept fails", secs(10), || async {
        let log = gw.log_text();
        if log.contains("accept failed") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    // Three seconds of failing accepts: a handful of log lines, not one per 100 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warnings = gw.log_text().matches("accept failed").count();
    assert!(warnings <= 8, "{warnings} warnings in 3 s");
    drop(held);
    let response = tokio::time::timeout(
        Duration::from_secs(15),
        gw.http.get(format!("{}/health", gw.url)).send(),
    )
    .await
    .expect("serves again")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn several_authorization_headers_are_a_400() {
    let gw = fake_gateway("ok.sh", &[]).await;
    for (path, error_at) in [("/jobs", "/detail"), ("/v1/models", "/error/message")] {
        let response = gw
            .http
            .get(format!("{}{path}", gw.url))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("authorization", "Bearer someone-elses-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = json(response).await;
        let message = body
            .pointer(error_at)
            .and_then(|m| m.as_str())
            .unwrap_or("");
        assert!(message.contains("Several Authorization headers"), "{body}");
    }
}

fn start_with_tokens_file(contents: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, contents).unwrap();
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("API_BEARER_TOKENS_FILE", &file)
        .env("JOBS_DIR", dir.path().join("jobs"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_tokens_file_with_a_shared_or_short_token_is_refused_at_start_up() {
    let (code, stderr) = start_with_tokens_file("ci:same-token-1\nops:same-token-1\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("same as the one named \"ci\""), "{stderr}");
    assert!(
        !stderr.contains("same-token-1"),
        "the token is never printed: {stderr}"
    );

    let (code, stderr) = start_with_tokens_file("ci:x\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("shorter than 8"), "{stderr}");

    let (code, stderr) = start_with_tokens_file("ci:first-token\nci:second-token\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("given to two tokens"), "{stderr}");
}
