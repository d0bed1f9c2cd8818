//! Webhooks: the built binary with its default SQLite store, the real `claude` CLI against the
//! mock Anthropic API, and a receiver on 127.0.0.1 (a small axum server) that checks every
//! Standard Webhooks signature. The receiver answers 500 to the end of the job for a while: the
//! gateway retries, is killed (SIGKILL) between tries, and the next start still delivers it, with
//! every try in the record. A `callback_url` the allow-list refuses is a 422 at submission.

mod common;
mod store_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use store_support::*;

/// The secret's key, and its Standard Webhooks form.
const KEY: &[u8] = b"a webhook key of the test";

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    body: Value,
    /// Whether its signature checked out against [`KEY`].
    signed: bool,
    /// What the receiver answered.
    answered: u16,
}

/// The receiver: records every request; answers 500 to `job.ended` while `failing`.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    /// Serves on 127.0.0.1; answers its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/hook")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests of `kind` (`job.started`, `job.ended`).
    fn of(&self, kind: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.body["type"] == kind)
            .collect()
    }
}

/// Checks `webhook-signature` the way a receiver would: HMAC-SHA256 of `id.timestamp.body`.
fn verify(headers: &HeaderMap, body: &str) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    fresh
        && header("webhook-signature")
            .split(' ')
            .any(|signature| signature == expected)
}

async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> AxumStatus {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let status = if parsed["type"] == "job.ended" && receiver.failing.load(Ordering::SeqCst) {
        AxumStatus::INTERNAL_SERVER_ERROR
    } else {
        AxumStatus::OK
    };
    receiver.seen.lock().unwrap().push(Seen {
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        signed: verify(&headers, &body),
        body: parsed,
        answered: status.as_u16(),
    });
    status
}

/// A gateway whose webhooks may go to 127.0.0.1 (and, to show it changes nothing, to the
/// link-local network).
fn gateway(backing: &Backing) -> Vec<(String, String)> {
    backing.settings(&[
        ("WEBHOOK_ALLOW", &"127.0.0.1/32,169.254.0.0/16"),
        ("WEBHOOK_SECRET", &secret()),
        ("WEBHOOK_RETRY_MS", &300),
        ("WEBHOOK_MAX_ATTEMPTS", &20),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_verifies_signatures_sees_retries_and_gets_the_end_across_a_restart() {
    let receiver = Receiver::default();
    receiver.failing.store(true, Ordering::SeqCst);
    let url = receiver.start().await;
    let backing = Backing::start().await;
    let settings = gateway(&backing);
    let first = Binary::start(&settings).await;

    let job = first
        .submit("[[mock:text done]]", json!({"callback_url": url}))
        .await;
    // The end is refused twice (500) and retried; then the gateway is killed between tries.
    eventually(
        "the receiver refused the end twice",
        Duration::from_secs(60),
        || async { (receiver.of("job.ended").len() >= 2).then_some(()) },
    )
    .await;
    first.kill9().await;
    receiver.failing.store(false, Ordering::SeqCst);

    let second = Binary::start(&settings).await;
    let delivered = eventually(
        "the restarted gateway delivered the end",
        Duration::from_secs(60),
        || async {
            receiver
                .of("job.ended")
                .into_iter()
                .find(|s| s.answered == 200)
        },
    )
    .await;

    let seen = receiver.seen();
    assert!(
        seen.iter().all(|s| s.signed),
        "every request is signed: {seen:?}"
    );
    let ended = receiver.of("job.ended");
    assert!(ended.len() >= 3, "{ended:?}");
    assert!(
        ended.iter().all(|s| s.id == delivered.id),
        "one id for every try: {ended:?}"
    );
    assert_eq!(delivered.body["job_id"], job.as_str());
    assert_eq!(delivered.body["status"], "completed");
    assert!(
        delivered.body["finished_at"].is_string(),
        "{:?}",
        delivered.body
    );
    let started = receiver.of("job.started");
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].body["status"], "running");
    assert_eq!(started[0].answered, 200);

    // The record shows every try of both.
    let record = eventually(
        "the record shows the delivery",
        Duration::from_secs(30),
        || async {
            let record = second.record(&job).await;
            (record["webhooks"][1]["state"] == "delivered").then_some(record)
        },
    )
    .await;
    assert_eq!(record["callback_url"], url.as_str());
    let hooks = record["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks[0]["type"], "job.started", "{record}");
    assert_eq!(hooks[0]["state"], "delivered", "{record}");
    assert_eq!(hooks[1]["type"], "job.ended", "{record}");
    assert_eq!(hooks[1]["id"], delivered.id.as_str(), "{record}");
    let tries = hooks[1]["attempts"].as_array().expect("attempts");
    // Every try is recorded once its answer is in, except one the killed gateway had sent and not
    // yet recorded when it died (one try of a webhook is in flight at a time).
    assert!(
        tries.len() == ended.len() || tries.len() + 1 == ended.len(),
        "{} tries recorded, {} seen: {record}",
        tries.len(),
        ended.len()
    );
    assert_eq!(tries[0]["status_code"], 500, "{record}");
    assert!(
        tries[0]["error"].as_str().unwrap().contains("500"),
        "{record}"
    );
    assert_eq!(tries.last().unwrap()["status_code"], 200, "{record}");
    assert_eq!(tries.last().unwrap()["error"], Value::Null, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_to_a_refused_address_is_refused_at_submission() {
    let backing = Backing::start().await;
    let gw = Binary::start(&gateway(&backing)).await;
    for (url, why) in [
        // Link-local (the metadata service), even though WEBHOOK_ALLOW lists its network.
        ("http://169.254.169.254/latest/meta-data/", "never go to"),
        ("http://127.0.0.2:9/hook", "not on WEBHOOK_ALLOW"),
        (
            "http://hooks.not-allowed.invalid/hook",
            "not on WEBHOOK_ALLOW",
        ),
        ("file:///etc/passwd", "only http and https"),
        ("not a url", "not a URL"),
    ] {
        let (status, body) = gw
            .execute(json!({"prompt": "hi", "callback_url": url}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("callback_url") && detail.contains(why),
            "{url}: {detail}"
        );
    }
    let (status, page) = gw.call(reqwest::Method::GET, "/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["jobs"], json!([]), "nothing was recorded");
}
