//! Budgets per key, the per-run cap, `GET /v1/quota` and the rate-limit headers: the real CLI
//! against the mock API (whose `[[mock:usage]]` sets what each run costs), real HTTP, the official
//! OpenAI Python SDK, the SQLite store across a restart and PostgreSQL across two replicas.

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::postgres::TestDb;
use common::{
    clients_dir, eventually, run_tool, secs, status_and_json, Gateway, GatewayBuilder, TOKEN,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A prompt whose run reports about 0.004 USD: the CLI prices the mock's token counts at the
/// model's list price.
const FOUR_TENTHS_OF_A_CENT: &str = "[[mock:text spent]] [[mock:usage 800 27]]";

/// The same for a chat run, whose model the CLI prices lower.
const CHAT_FOUR_TENTHS_OF_A_CENT: &str = "[[mock:text spent]] [[mock:usage 38000 400]]";

/// A policy file holding `text`, removed when dropped.
fn policy(text: &str) -> tempfile::TempPath {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file.into_temp_path()
}

/// A gateway that reads its keys' policy from `policy`.
fn with_policy(policy: &Path) -> GatewayBuilder {
    Gateway::builder().arg("api-key-policy-file", policy.display())
}

/// `GET /v1/quota`.
async fn quota(gw: &Gateway) -> Value {
    let (status, body) = status_and_json(gw.get("/v1/quota").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Waits (bounded) until the current budget window has at least `left` to run, so the runs of a
/// test all end in one window, and answers its `/v1/quota`.
async fn fresh_window(gw: &Gateway, left: Duration) -> Value {
    eventually("a budget window with time left", secs(60), || async {
        let q = quota(gw).await;
        let resets = time(&q["window"]["resets_at"]);
        (resets - Utc::now() > chrono::TimeDelta::from_std(left).unwrap()).then_some(q)
    })
    .await
}

/// Runs a job of `prompt` to its end and answers its record.
async fn run(gw: &Gateway, prompt: &str) -> Value {
    common::run_job(gw, prompt, 120).await
}

/// The value of the metric `name{key="default"}`, or 0.
async fn key_metric(gw: &Gateway, name: &str) -> f64 {
    gw.metric(&format!("{name}{{key=\"default\"}}")).await
}

/// Asserts every submission route refuses the spent key, `Retry-After` within `window`.
async fn assert_refused_everywhere(gw: &Gateway, window: u64) {
    // /execute: {"detail"} with the reset time, and Retry-After to the window's end.
    let response = gw
        .post(
            "/execute",
            &json!({"prompt": "one more", "agent": common::AGENT}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=window).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("budget") && detail.contains("resets at"),
        "{detail}"
    );

    // /v1/chat/completions: OpenAI's insufficient_quota, and no retry.
    let response = gw.chat("[[mock:text never runs]]").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["x-should-retry"], "false");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resets at"),
        "{body}"
    );
}

#[tokio::test]
async fn a_spent_budget_refuses_submissions_until_its_window_resets_and_survives_a_restart() {
    let jobs_dir = tempfile::tempdir().unwrap();
    let policy = policy("[keys.default]\nbudget_usd = 0.01\nbudget_window = \"20s\"\n");
    let start = || with_policy(&policy).jobs_dir(jobs_dir.path()).start();
    let mut gw = start().await;
    let before = fresh_window(&gw, Duration::from_secs(14)).await;
    assert_eq!(before["window"]["used_usd"], 0.0, "{before}");
    assert_eq!(before["limits"]["budget_usd"], 0.01, "{before}");

    // Three runs of about 0.004 USD: the budget is spent by the third.
    let records =
        futures_util::future::join_all((0..3).map(|_| run(&gw, FOUR_TENTHS_OF_A_CENT))).await;
    let mut total = 0.0;
    for record in &records {
        assert_eq!(record["status"], "completed", "{record}");
        let cost = record["cost_usd"].as_f64().expect("a cost");
        assert!(
            (0.0034..0.005).contains(&cost),
            "each run costs about 0.004 USD: {cost}"
        );
        total += cost;
    }
    let spent = quota(&gw).await;
    assert!(
        (spent["window"]["used_usd"].as_f64().unwrap() - total).abs() < 1e-9,
        "{spent} vs {total}"
    );
    assert_eq!(spent["window"]["exhausted"], true, "{spent}");
    assert!(
        spent["window"]["used_tokens"].as_u64().unwrap() >= 3 * 827,
        "{spent}"
    );

    assert_refused_everywhere(&gw, 20).await;
    assert_eq!(
        key_metric(&gw, "claude_gateway_key_budget_refusals_total").await,
        2.0
    );
    assert!(key_metric(&gw, "claude_gateway_key_cost_usd_total").await >= total - 1e-9);

    // The official SDK (which retries a 429 twice by default) raises RateLimitError with the
    // code once: one more refusal reached the gateway, not three.
    let stdout = run_tool(
        "python_quota.py",
        Duration::from_secs(120),
        tokio::process::Command::new(clients_dir().join(".venv/bin/python"))
            .arg(clients_dir().join("python_quota.py"))
            .current_dir(clients_dir())
            .env("GATEWAY_URL", &gw.url)
            .env("GATEWAY_TOKEN", TOKEN),
    )
    .await;
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert_eq!(
        key_metric(&gw, "claude_gateway_key_budget_refusals_total").await,
        3.0
    );

    // The spend is in the store: a gateway started again on the same JOBS_DIR still refuses.
    let reset = time(&spent["window"]["resets_at"]);
    gw.shutdown().await;
    drop(gw);
    let gw = start().await;
    assert!(Utc::now() < reset, "the restart took the whole window");
    assert_refused_everywhere(&gw, 20).await;

    // Once the window ends, the key may submit again.
    eventually("the budget window resets", secs(40), || async {
        quota(&gw).await["window"]["exhausted"] == false
    })
    .await;
    let record = run(&gw, "[[mock:text after the reset]]").await;
    assert_eq!(record["status"], "completed", "{record}");
}

#[tokio::test]
async fn replicas_on_postgresql_share_one_key_s_spend() {
    let db = TestDb::create().await;
    let policy = policy("[keys.default]\nbudget_usd = 0.01\nbudget_window = \"1d\"\n");
    let replica = |name: &'static str| {
        with_policy(&policy)
            .arg("database-url", db.url())
            .arg("replica-id", name)
            .start()
    };
    let (a, b) = tokio::join!(replica("a"), replica("b"));
    // Chat runs where it is asked: two on one replica, one on the other, at once.
    let chats = [&a, &a, &b].map(|gw| gw.chat(CHAT_FOUR_TENTHS_OF_A_CENT));
    for response in futures_util::future::join_all(chats).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    let (qa, qb) = tokio::join!(quota(&a), quota(&b));
    assert_eq!(qa["window"], qb["window"], "both replicas read one spend");
    let used = qa["window"]["used_usd"].as_f64().unwrap();
    assert!((0.0102..0.015).contains(&used), "three runs added up: {qa}");
    assert_eq!(qa["window"]["exhausted"], true, "{qa}");
    assert_refused_everywhere(&a, 86_400).await;
    assert_refused_everywhere(&b, 86_400).await;
}

#[tokio::test]
async fn quota_and_rate_limit_headers_tell_a_key_its_limits() {
    let policy = policy("[keys.default]\nmax_queued = 5\nmax_concurrent = 2\nweight = 3\nbudget_tokens = 100000\nbudget_window = \"1d\"\nmax_budget_usd_per_job = 0.5\n");
    let gw = with_policy(&policy).start().await;

    let q = quota(&gw).await;
    assert_eq!(q["key"], "default");
    assert_eq!(q["limits"]["max_queued"], 5);
    assert_eq!(q["limits"]["max_concurrent"], 2);
    assert_eq!(q["limits"]["weight"], 3);
    assert_eq!(q["limits"]["budget_tokens"], 100000);
    assert_eq!(q["limits"]["budget_window_seconds"], 86400);
    assert_eq!(q["limits"]["max_budget_usd_per_job"], 0.5);
    assert_eq!(q["queued"], 0);
    assert_eq!(q["running"], 0);
    assert!(q["dispatch_paused_until"].is_null());

    // A chat answer carries OpenAI's headers: queue slots and the token budget.
    let response = gw.chat(FOUR_TENTHS_OF_A_CENT).await;
    assert_eq!(response.status(), StatusCode::OK);
    let h = response.headers().clone();
    assert_eq!(h["x-ratelimit-limit-requests"], "5");
    assert_eq!(h["x-ratelimit-remaining-requests"], "5");
    assert_eq!(h["x-ratelimit-reset-requests"], "0s");
    assert_eq!(h["x-ratelimit-limit-tokens"], "100000");
    // The headers are read at admission, before this run's tokens.
    assert_eq!(h["x-ratelimit-remaining-tokens"], "100000");
    assert!(h.contains_key("x-ratelimit-reset-tokens"));

    // The next submission sees the first run's tokens, on /execute as on chat.
    let (status, _) = status_and_json(
        gw.post(
            "/execute",
            &json!({"prompt": "[[mock:text ok]]", "agent": common::AGENT}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let response = gw
        .post(
            "/execute",
            &json!({"prompt": "[[mock:text ok]]", "agent": common::AGENT}),
        )
        .await;
    let remaining: u64 = response.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining <= 100000 - 827, "{remaining}");
    assert_eq!(response.headers()["x-ratelimit-limit-requests"], "5");

    let q = quota(&gw).await;
    assert!(q["window"]["used_tokens"].as_u64().unwrap() >= 827, "{q}");

    // /v1/quota is in the OpenAPI document.
    let doc: Value = gw.get_open("/openapi.json").await.json().await.unwrap();
    assert!(
        doc["paths"]["/v1/quota"]["get"].is_object(),
        "/v1/quota documented"
    );
}

#[tokio::test]
async fn a_key_s_per_job_cap_bounds_each_run_s_max_budget_usd() {
    let policy = policy("[keys.default]\nmax_budget_usd_per_job = 0.001\n");
    let gw = with_policy(&policy).start().await;
    // The job asks for 1 USD; its key's cap gives its run 0.001 USD, which the first turn (about
    // 0.004 USD) overruns: the CLI stops it there.
    let body = json!({
        "prompt": format!("[[mock:bash echo one]] [[mock:bash echo two]] {FOUR_TENTHS_OF_A_CENT}"),
        "agent": common::AGENT,
        "max_budget_usd": 1.0,
    });
    let request = gw.request(Method::POST, "/execute").json(&body);
    let (status, accepted) = status_and_json(common::send(request).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let record = common::wait_end(&gw, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(record["subtype"], "error_max_budget_usd", "{record}");
}
