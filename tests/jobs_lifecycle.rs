//! `POST /execute` and `GET /jobs/{id}` end to end: the real CLI against the mock API for
//! success, stand-in CLIs for failures, and the record's contract fields in every case.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Runs one job of `prompt` on a gateway in front of the stand-in `script`; the gateway and the
/// job's final record.
async fn job_on_fake(script: &str, prompt: &str, timeout_seconds: u64) -> (Gateway, Value) {
    let gw = Gateway::fake(script).await;
    let record = run_job(&gw, prompt, timeout_seconds).await;
    (gw, record)
}

#[tokio::test]
async fn a_job_runs_to_completed_with_result_usage_and_the_contract_fields() {
    let gw = Gateway::start().await;
    let (status, body) = execute(
        &gw,
        json!({
            "prompt": "Say hello. [[mock:text Hello from the mock.]] [[mock:usage 42 7]]",
            "agent": AGENT,
            "metadata": {"ticket": "OPS-1"},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job_id.len(), 32);
    assert!(job_id.bytes().all(|b| b.is_ascii_hexdigit()));

    let record = wait_end(&gw, &job_id).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["job_id"], job_id.as_str());
    assert_eq!(record["result"], "Hello from the mock.");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["is_error"], false);
    assert_eq!(record["usage"]["input_tokens"], 42);
    assert_eq!(record["usage"]["output_tokens"], 7);
    assert!(record["cost_usd"].is_number(), "{record}");
    assert!(record["session_id"].is_string(), "{record}");
    assert_eq!(record["metadata"], json!({"ticket": "OPS-1"}));
    assert_eq!(record["agent"], AGENT);
    assert_eq!(record["error"], serde_json::Value::Null);
    for field in ["created_at", "started_at", "finished_at"] {
        let time = record[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {record}"));
        assert!(time.ends_with("+00:00"), "{field}: {time}");
    }
    // `output` holds the CLI's JSON result as one line, as the replaced service returned it.
    let output = record["output"].as_array().expect("output is a list");
    assert_eq!(output.len(), 1);
    let line: serde_json::Value = serde_json::from_str(output[0].as_str().unwrap()).unwrap();
    assert_eq!(line["type"], "result");
    assert_eq!(line["result"], "Hello from the mock.");
    assert_eq!(record["output_truncated"], false);
    gw.wait_workspaces_gone().await;
}

#[tokio::test]
async fn an_agent_that_fails_ends_failed_with_exit_code_stderr_and_a_reason() {
    let (_gw, record) = job_on_fake("fail.sh", "anything", 60).await;
    assert_ended(&record, "failed", "could not reach the API");
    assert_eq!(record["exit_code"], 3);
    assert!(record["stderr"]
        .as_str()
        .unwrap()
        .contains("could not reach the API"));
    assert_eq!(
        record["error"],
        "the agent exited with code 3: Error: could not reach the API"
    );
}

#[tokio::test]
async fn an_api_error_in_the_real_cli_ends_failed() {
    let gw = Gateway::start().await;
    let record = run_job(&gw, "[[mock:error 400]]", 120).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{record}"
    );
}

#[tokio::test]
async fn a_job_past_its_timeout_ends_timeout_with_no_process_left() {
    let (gw, record) = job_on_fake("hang.sh", "hang", 1).await;
    assert_ended(&record, "timeout", "timeout of 1 seconds");
    assert!(record["started_at"].is_string());
    gw.wait_nothing_left().await;
}

#[tokio::test]
async fn an_agent_that_cannot_run_ends_error_with_the_reason() {
    let (_gw, record) = job_on_fake("unknown-agent.sh", "hi", 60).await;
    assert_ended(&record, "error", "not found");
}

#[tokio::test]
async fn output_past_the_cap_is_cut_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    // A successful run whose result is 1 MiB of text, against a 64 KiB cap.
    let big = script(
        dir.path(),
        "big-result.sh",
        r#"cat > /dev/null
text=$(head -c 1048576 /dev/zero | tr '\0' 'x')
echo '{"type":"system","subtype":"init","session_id":"s"}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"'"$text"'","session_id":"s","total_cost_usd":0.01,"usage":{"input_tokens":1,"output_tokens":1}}'
echo 'some stderr' >&2"#,
    );
    let gw = Gateway::builder()
        .claude(big)
        .arg("max-output-bytes", 65536)
        .start()
        .await;
    let record = run_job(&gw, "big", 60).await;
    assert_eq!(
        record["status"],
        "completed",
        "{}",
        &record.to_string()[..500]
    );
    assert_eq!(record["output_truncated"], true);
    assert_eq!(record["stderr_truncated"], false);
    let result = record["result"].as_str().unwrap();
    assert_eq!(result.len(), 65536);
    assert!(record["output"][0].as_str().unwrap().len() <= 65536);
}

#[tokio::test]
async fn a_flood_of_output_past_the_limit_keeps_the_run_and_its_result() {
    let (gw, record) = job_on_fake("stdout-flood.sh", "flood", 120).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "the result after the flood", "{record}");
    gw.wait_no_agent_process().await;
}

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx() {
    let gw = Gateway::fake("ok.sh").await;
    let cases = [
        (json!({"agent": AGENT}), "prompt"),
        (json!({"prompt": "p"}), "agent"),
        (json!({"prompt": 5, "agent": AGENT}), "invalid type"),
        (json!({"prompt": "p", "agent": "--model"}), "agent"),
        (json!({"prompt": "p", "agent": "../../etc"}), "agent"),
        (
            json!({"prompt": "p", "agent": AGENT, "timeout_seconds": 0}),
            "timeout_seconds",
        ),
        (
            json!({"prompt": "p", "agent": AGENT, "timeout_seconds": -1}),
            "timeout_seconds",
        ),
        (
            json!({"prompt": "p", "agent": AGENT, "max_budget_usd": 0}),
            "max_budget_usd",
        ),
        (
            json!({"prompt": "p", "agent": AGENT, "max_budget_usd": -2.5}),
            "max_budget_usd",
        ),
        (
            json!({"prompt": "p", "agent": AGENT, "metadata": "x"}),
            "invalid type",
        ),
    ];
    for (body, mentions) in cases {
        let detail = refused_as_invalid(&gw, &body).await;
        assert!(detail.contains(mentions), "{body} -> {detail}");
    }
    let response = gw.post_raw("/execute", "{not json").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json(response).await["detail"].is_string());
    // Nothing was queued by any of them.
    let list = json(gw.get("/jobs").await).await;
    assert_eq!(list["jobs"], json!([]));
}

#[tokio::test]
async fn unknown_jobs_are_404_job_not_found() {
    let gw = Gateway::fake("ok.sh").await;
    for id in ["0123456789abcdef0123456789abcdef", "nope", "..%2F..%2Fetc"] {
        let (status, body) = get_job_as(&gw, TOKEN, id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(body["detail"], "Job not found");
        let (status, _) = cancel_as(&gw, TOKEN, id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        let response = open_events(&gw, TOKEN, id).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}");
    }
}

#[tokio::test]
async fn jobs_are_listed_newest_first_filtered_and_paginated() {
    let gw = Gateway::fake("ok.sh").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&gw, "hi", 60).await);
    }
    for id in &ids {
        wait_end(&gw, id).await;
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/jobs?limit=2&cursor={c}"),
            None => "/jobs?limit=2".to_owned(),
        };
        let page = json(gw.get(&path).await).await;
        pages += 1;
        for job in page["jobs"].as_array().unwrap() {
            assert!(
                job.get("output").is_none() && job.get("prompt").is_none(),
                "{job}"
            );
            seen.push(job["job_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let completed = json(gw.get("/jobs?status=completed").await).await;
    assert_eq!(completed["jobs"].as_array().unwrap().len(), 5);
    let running = json(gw.get("/jobs?status=running").await).await;
    assert_eq!(running["jobs"], json!([]));
    assert_eq!(running["next_cursor"], serde_json::Value::Null);

    for bad in [
        "/jobs?status=done",
        "/jobs?limit=0",
        "/jobs?limit=501",
        "/jobs?limit=x",
        "/jobs?cursor=zzz",
    ] {
        let response = gw.get(bad).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn finished_jobs_are_forgotten_past_the_ttl() {
    let gw = Gateway::fake_with("ok.sh", "job-ttl-seconds", 1).await;
    let job_id = submit(&gw, "hi", 60).await;
    wait_end(&gw, &job_id).await;
    eventually("the job is forgotten", secs(10), || async {
        get_job_as(&gw, TOKEN, &job_id).await.0 == StatusCode::NOT_FOUND
    })
    .await;
}

#[tokio::test]
async fn past_the_count_bound_the_oldest_finished_job_is_forgotten() {
    let gw = Gateway::fake_with("ok.sh", "max-finished-jobs", 2).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = submit(&gw, "hi", 60).await;
        wait_end(&gw, &id).await;
        ids.push(id);
    }
    assert_eq!(
        get_job_as(&gw, TOKEN, &ids[0]).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get_job_as(&gw, TOKEN, &ids[1]).await.0, StatusCode::OK);
    assert_eq!(get_job_as(&gw, TOKEN, &ids[2]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_job_is_visible_only_to_the_token_that_created_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "alice:alice-secret\nbob:bob-secret\n").unwrap();
    let gw = Gateway::fake_with("hang.sh", "api-bearer-tokens-file", tokens.display()).await;
    let job_id = submit_as(&gw, "alice-secret", "p", 600).await;

    assert_eq!(
        get_job_as(&gw, "alice-secret", &job_id).await.0,
        StatusCode::OK
    );
    for token in ["bob-secret", TOKEN] {
        let (status, body) = get_job_as(&gw, token, &job_id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{token}");
        assert_eq!(body["detail"], "Job not found");
        assert_eq!(
            open_events(&gw, token, &job_id).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            cancel_as(&gw, token, &job_id).await.0,
            StatusCode::NOT_FOUND
        );
        let list = send(gw.request_as(Some(token), reqwest::Method::GET, "/jobs")).await;
        assert_eq!(json(list).await["jobs"], json!([]), "{token}");
    }
    // Still running: the others' cancels did nothing.
    let (status, record) = cancel_as(&gw, "alice-secret", &job_id).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    gw.wait_no_agent_process().await;
}
