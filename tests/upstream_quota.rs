//! The account behind the CLI is rate-limited: the real CLI against the mock API answering as a
//! rate-limited account (`[[mock:ratelimit UNTIL]]`: 429 `rate_limit_error` with the unified
//! rate-limit headers until UNTIL), real HTTP.

mod common;

use chrono::{DateTime, Utc};
use common::{
    eventually, get_job, open_events, read_events, secs, submit, wait_end, Gateway, TOKEN,
};
use serde_json::Value;

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn a_rate_limited_account_pauses_dispatch_and_no_job_fails_because_of_it() {
    let gw = Gateway::builder().arg("max-concurrency", 1).start().await;
    // The account refuses requests for the next 3 seconds; the CLI reports the 429 without a
    // reset time, so the gateway backs off (5 s first), past the refusal.
    let until = Utc::now().timestamp() + 3;
    let refused = submit(
        &gw,
        &format!("[[mock:ratelimit {until}]] [[mock:text refused first]]"),
        120,
    )
    .await;
    let others = [
        submit(&gw, "[[mock:text second]]", 120).await,
        submit(&gw, "[[mock:text third]]", 120).await,
    ];

    let health = eventually("/health shows dispatch paused", secs(60), || async {
        let health = gw.health().await;
        (!health["dispatch"]["paused_until"].is_null()).then_some(health)
    })
    .await;
    let paused_until = time(&health["dispatch"]["paused_until"]);
    assert!(paused_until > Utc::now(), "{health}");
    for id in &others {
        let record = get_job(&gw, id).await;
        assert_eq!(record["status"], "queued", "{record}");
        let reason = record["queued_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("upstream rate limit"), "{record}");
    }
    let quota: Value = gw.get("/v1/quota").await.json().await.unwrap();
    assert!(!quota["dispatch_paused_until"].is_null(), "{quota}");

    // Dispatch resumes by itself at the end of the pause, and nothing failed because of it.
    let mut records = vec![wait_end(&gw, &refused).await];
    for id in &others {
        records.push(wait_end(&gw, id).await);
    }
    for record in &records {
        assert_eq!(record["status"], "completed", "{record}");
        assert!(record.get("queued_reason").is_none(), "{record}");
    }
    let tolerance = chrono::TimeDelta::milliseconds(100);
    for record in &records[1..] {
        let started = time(&record["started_at"]);
        assert!(
            started + tolerance >= paused_until,
            "started {started} before the pause ended at {paused_until}"
        );
    }
    assert_eq!(records[0]["result"], "refused first");
    assert!(gw.health().await["dispatch"]["paused_until"].is_null());

    // The refused job was put back in the queue once, and its events say why.
    let events = read_events(open_events(&gw, TOKEN, &refused).await).await;
    let requeued = events
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| e.json())
        .find(|data| data["status"] == "queued" && data.get("reason").is_some())
        .expect("a status event putting the job back in the queue");
    assert!(
        requeued["reason"]
            .as_str()
            .unwrap()
            .contains("upstream rate limit"),
        "{requeued}"
    );
}
