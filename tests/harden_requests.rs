//! Issue 10, item 9 (requests): empty chat requests, bogus usage and unbounded job options are
//! refused or contained.

mod common;

use common::{fake_gateway, json, Gateway};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn chat_requests_that_ask_nothing_are_400_and_start_no_agent() {
    let gw = Gateway::start().await;
    for messages in [
        json!([{"role": "user", "content": null}]),
        json!([{"role": "user", "content": []}]),
        json!([{"role": "user", "content": [{"type": "text", "text": "   "}]}]),
        json!([{"role": "system", "content": "only a preamble"}]),
        json!([{"role": "developer", "content": "rules"}, {"role": "system", "content": "more"}]),
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
    ] {
        let response = gw
            .post(
                "/v1/chat/completions",
                &json!({"model": "haiku", "messages": messages}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{messages}");
        let body = json(response).await;
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], "messages", "{body}");
    }
    assert!(
        gw.mock.message_requests().is_empty(),
        "an agent ran on an empty request"
    );
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[tokio::test]
async fn bogus_usage_saturates_instead_of_wrapping() {
    let gw = fake_gateway("bogus-usage.sh", &[]).await;
    for _ in 0..3 {
        let response = gw
            .post("/v1/chat/completions", &Gateway::chat_body("count"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = json(response).await;
        let usage = &body["usage"];
        let prompt = usage["prompt_tokens"].as_u64().unwrap();
        let completion = usage["completion_tokens"].as_u64().unwrap();
        let total = usage["total_tokens"].as_u64().unwrap();
        assert_eq!(total, prompt + completion, "{usage}");
        assert!(prompt >= completion && completion >= 1 << 40, "{usage}");
    }
    let text = gw.get("/metrics").await.text().await.unwrap();
    let input = metric(&text, "claude_gateway_agent_tokens_total{kind=\"input\"}");
    assert_eq!(
        input,
        3.0 * (1u64 << 40) as f64,
        "the counter wrapped or lost runs"
    );
    let cost = metric(&text, "claude_gateway_agent_cost_usd_total");
    assert!(cost.is_finite() && cost > 0.0, "cost {cost}");
}

#[tokio::test]
async fn job_options_past_their_settings_are_422() {
    let gw = fake_gateway(
        "ok.sh",
        &[("max-timeout-seconds", 3600), ("max-budget-usd", 10)],
    )
    .await;
    for (body, field) in [
        (
            json!({"prompt": "p", "agent": "a", "timeout_seconds": 3601}),
            "timeout_seconds",
        ),
        (
            json!({"prompt": "p", "agent": "a", "timeout_seconds": 1e300}),
            "timeout_seconds",
        ),
        (
            json!({"prompt": "p", "agent": "a", "max_budget_usd": 10.5}),
            "max_budget_usd",
        ),
        (
            json!({"prompt": "p", "agent": "a", "max_budget_usd": 1e308}),
            "max_budget_usd",
        ),
    ] {
        let response = gw.post("/execute", &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let detail = json(response).await["detail"].to_string();
        assert!(detail.contains(field), "{detail}");
    }
    let at_the_bounds =
        json!({"prompt": "p", "agent": "a", "timeout_seconds": 3600, "max_budget_usd": 10});
    assert_eq!(
        gw.post("/execute", &at_the_bounds).await.status(),
        StatusCode::ACCEPTED
    );
}
