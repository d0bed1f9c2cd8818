//! `GET /metrics` as an operator's Prometheus sees it: requests by route template, runs by how
//! they ended, the agents' tokens and cost, and gauges that agree with `/health`.

mod common;

use std::collections::BTreeMap;

use common::{cancel_as, eventually, execute, json, secs, submit, wait_end, Gateway, AGENT};
use reqwest::StatusCode;

/// One sample line: its metric name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Reads the sample lines of the text exposition format (our label values hold no `"` or `,`).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {line}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// The value of `name` with exactly these labels, if the scrape has it.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples(text)
        .into_iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

/// Scrapes `/metrics` with no token, checking the status and content type.
async fn scrape(gw: &Gateway) -> String {
    let response = gw.get_open("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.expect("body read")
}

#[tokio::test]
async fn a_chat_completion_is_counted_as_a_request_a_completed_run_and_tokens() {
    let gw = Gateway::start().await;
    let response = gw.chat("[[mock:text counted]]").await;
    assert_eq!(response.status(), StatusCode::OK);
    let usage = json(response).await["usage"].clone();

    let text = scrape(&gw).await;
    let route = "/v1/chat/completions";
    let request = [("method", "POST"), ("route", route), ("status", "200")];
    assert_eq!(
        value(&text, "claude_gateway_http_requests_total", &request),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "claude_gateway_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", route)]
        ),
        Some(1.0),
        "{text}"
    );
    let completed = [("entry", "chat"), ("outcome", "completed")];
    assert_eq!(
        value(&text, "claude_gateway_runs_total", &completed),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "claude_gateway_run_duration_seconds_count",
            &[("entry", "chat")]
        ),
        Some(1.0),
        "{text}"
    );
    // The same tokens the caller was told about.
    let output = value(
        &text,
        "claude_gateway_agent_tokens_total",
        &[("kind", "output")],
    );
    assert_eq!(output, usage["completion_tokens"].as_f64(), "{text}");
    assert!(output.is_some_and(|n| n > 0.0), "{text}");
    let prompt: f64 = ["input", "cache_read", "cache_creation"]
        .into_iter()
        .filter_map(|kind| {
            value(
                &text,
                "claude_gateway_agent_tokens_total",
                &[("kind", kind)],
            )
        })
        .sum();
    assert_eq!(Some(prompt), usage["prompt_tokens"].as_f64(), "{text}");
    // The CLI prices the mock's tokens as the model's.
    assert!(
        value(&text, "claude_gateway_agent_cost_usd_total", &[]).is_some_and(|usd| usd > 0.0),
        "{text}"
    );
}

#[tokio::test]
async fn requests_are_counted_by_route_template_with_their_status_never_by_raw_path() {
    let gw = Gateway::fake("ok.sh").await;
    let job_id = submit(&gw, "count me", 60).await;
    assert_eq!(wait_end(&gw, &job_id).await["status"], "completed");
    let stranger = gw.get_open(&format!("/jobs/{job_id}")).await;
    assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        gw.get("/no/such/route").await.status(),
        StatusCode::NOT_FOUND
    );

    let text = scrape(&gw).await;
    let jobs = |method, status| {
        value(
            &text,
            "claude_gateway_http_requests_total",
            &[
                ("method", method),
                ("route", "/jobs/{job_id}"),
                ("status", status),
            ],
        )
    };
    assert_eq!(jobs("GET", "401"), Some(1.0), "{text}");
    assert!(jobs("GET", "200").is_some_and(|n| n >= 1.0), "{text}");
    let execute = [("method", "POST"), ("route", "/execute"), ("status", "202")];
    assert_eq!(
        value(&text, "claude_gateway_http_requests_total", &execute),
        Some(1.0),
        "{text}"
    );
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(
        value(&text, "claude_gateway_http_requests_total", &unmatched),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains(&job_id), "a job id in a label:\n{text}");
    assert!(!text.contains("/no/such/route"), "a raw path:\n{text}");

    // The job's run, and what the stand-in agent reported spending.
    let completed = [("entry", "job"), ("outcome", "completed")];
    assert_eq!(
        value(&text, "claude_gateway_runs_total", &completed),
        Some(1.0),
        "{text}"
    );
    for (kind, tokens) in [
        ("input", 10.0),
        ("output", 5.0),
        ("cache_read", 30.0),
        ("cache_creation", 2.0),
    ] {
        assert_eq!(
            value(
                &text,
                "claude_gateway_agent_tokens_total",
                &[("kind", kind)]
            ),
            Some(tokens),
            "{kind}: {text}"
        );
    }
    assert_eq!(
        value(&text, "claude_gateway_agent_cost_usd_total", &[]),
        Some(0.0042),
        "{text}"
    );
    assert_eq!(
        value(&text, "claude_gateway_jobs_stored", &[]),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn the_gauges_agree_with_health_and_rejected_and_cancelled_runs_are_counted() {
    let gw = Gateway::builder()
        .fake("hang.sh")
        .arg("max-concurrency", 1)
        .arg("max-queue-depth", 1)
        .start()
        .await;
    let gauges = |text: &str| {
        [
            "claude_gateway_runs_active",
            "claude_gateway_runs_queued",
            "claude_gateway_run_capacity",
        ]
        .map(|name| value(text, name, &[]))
    };
    let health_gauges = |health: &serde_json::Value| {
        ["active", "queued", "capacity"].map(|field| health[field].as_f64())
    };

    let job_id = submit(&gw, "hang", 600).await;
    gw.wait_health(|h| h["active"] == 1).await;
    gw.wait_agent_process().await;
    // The hung job keeps both readings still while they are taken.
    let text = scrape(&gw).await;
    let now = gw.health().await;
    assert_eq!(gauges(&text), health_gauges(&now), "{now}\n{text}");
    assert_eq!(gauges(&text), [Some(1.0), Some(0.0), Some(1.0)], "{text}");

    // The queue is full: turned away before it starts.
    let (status, body) = execute(
        &gw,
        serde_json::json!({"prompt": "no room", "agent": AGENT}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (status, record) = cancel_as(&gw, common::TOKEN, &job_id).await;
    assert_eq!(status, StatusCode::OK, "{record}");

    let text = scrape(&gw).await;
    let now = gw.health().await;
    assert_eq!(gauges(&text), health_gauges(&now), "{now}\n{text}");
    assert_eq!(gauges(&text), [Some(0.0), Some(0.0), Some(1.0)], "{text}");
    let runs = |outcome| {
        value(
            &text,
            "claude_gateway_runs_total",
            &[("entry", "job"), ("outcome", outcome)],
        )
    };
    assert_eq!(runs("rejected"), Some(1.0), "{text}");
    assert_eq!(runs("cancelled"), Some(1.0), "{text}");
    assert_eq!(runs("completed"), None, "{text}");
    let status_429 = [("method", "POST"), ("route", "/execute"), ("status", "429")];
    assert_eq!(
        value(&text, "claude_gateway_http_requests_total", &status_429),
        Some(1.0),
        "{text}"
    );
    gw.wait_no_agent_process().await;
}

#[tokio::test]
async fn a_chat_client_that_goes_away_is_counted_as_a_cancelled_run() {
    let gw = Gateway::start().await;
    let client = tokio::spawn(gw.chat_request("[[mock:delay 60000]] too slow").send());
    gw.wait_health(|h| h["active"] == 1).await;
    client.abort();
    let _ = client.await;

    let runs = |text: &str, outcome| {
        value(
            text,
            "claude_gateway_runs_total",
            &[("entry", "chat"), ("outcome", outcome)],
        )
    };
    let text = eventually("the run is counted as cancelled", secs(30), || async {
        let text = scrape(&gw).await;
        if runs(&text, "cancelled") == Some(1.0) {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    assert_eq!(runs(&text, "completed"), None, "{text}");
    gw.wait_no_agent_process().await;
}
