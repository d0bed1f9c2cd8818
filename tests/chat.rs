//! `POST /v1/chat/completions` end to end: the real CLI in a real workspace, against the mock API.

mod common;

use std::time::Duration;

use common::{answer, assert_openai_error, eventually, json, secs, Gateway, Repos, CHAT, TOKEN};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A gateway with default settings, and its answer (of `status`) to one chat message.
async fn chatted(content: &str, status: StatusCode) -> (Gateway, Value) {
    let gw = Gateway::start().await;
    let body = gw.chat_json(content, status).await;
    (gw, body)
}

#[tokio::test]
async fn the_answer_and_usage_come_back_and_the_model_reaches_the_api() {
    let (gw, body) = chatted("[[mock:text the agent answers]]", StatusCode::OK).await;
    assert_eq!(answer(&body), "the agent answers");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "haiku");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let models: Vec<String> = gw
        .mock
        .message_requests()
        .iter()
        .filter_map(|r| r.model.clone())
        .collect();
    assert!(
        models.iter().any(|m| m.contains("haiku")),
        "models seen: {models:?}"
    );
    gw.wait_workspaces_gone().await;
}

#[tokio::test]
async fn an_unknown_model_is_400_listing_the_supported_ones() {
    let gw = Gateway::start().await;
    let response = gw
        .post(
            CHAT,
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json(response).await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-4o"));
    assert_eq!(body["supported"].as_array().unwrap().len(), 6);
    assert!(gw.mock.requests().is_empty(), "no run was started");
}

#[tokio::test]
async fn concurrent_runs_get_their_own_checkouts_which_are_removed_afterwards() {
    let repos = Repos::new();
    let gw = Gateway::builder()
        .base(&repos.base)
        .arg("openai-compat-agent", "general-purpose")
        .start()
        .await;
    let run = |name: &'static str| {
        let body = Gateway::chat_body(&format!(
            "[[mock:delay 300]] [[mock:bash echo {name} > {name}.txt && ls && git remote get-url origin]]"
        ));
        let gw = &gw;
        async move { json(gw.post(CHAT, &body).await).await }
    };
    let (first, second) = tokio::join!(run("first"), run("second"));
    let (first, second) = (answer(&first), answer(&second));
    assert!(
        first.contains("first.txt") && !first.contains("second.txt"),
        "{first}"
    );
    assert!(
        second.contains("second.txt") && !second.contains("first.txt"),
        "{second}"
    );
    for seen in [first, second] {
        assert!(
            seen.contains("README.md"),
            "the base's files are there: {seen}"
        );
        assert!(
            seen.contains(repos.remote.to_str().unwrap()),
            "origin is the base's origin: {seen}"
        );
    }
    gw.wait_workspaces_gone().await;
    assert!(repos.base.join("README.md").exists());
    assert!(
        !repos.base.join("first.txt").exists(),
        "the base is untouched"
    );
}

#[tokio::test]
async fn a_300_kib_prompt_arrives_intact() {
    let gw = Gateway::start().await;
    let marker_end = "END-OF-THE-LONG-PROMPT";
    let long = format!("{}{marker_end}", "lorem ipsum ".repeat(300 * 1024 / 12));
    let response = gw.chat(&long).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = gw.mock.message_requests()[0].prompt_text();
    assert!(
        seen.contains(&long),
        "the whole prompt reached the API ({} bytes seen)",
        seen.len()
    );
}

#[tokio::test]
async fn the_agent_sees_none_of_the_gateways_secrets() {
    // The gateway's own process environment holds its token and settings; the agent's must not.
    std::env::set_var("API_BEARER_TOKEN", "env-secret-token-1234");
    std::env::set_var("OPENAI_COMPAT_BUDGET_USD", "2.0");
    std::env::set_var("SOME_UNRELATED_SECRET", "unrelated-secret-5678");
    let gw = Gateway::start().await;
    let body = json(gw.chat("[[mock:bash env]]").await).await;
    let env = answer(&body);
    assert!(
        env.contains("ANTHROPIC_BASE_URL="),
        "the tool really ran env: {env}"
    );
    for secret in [
        "env-secret-token-1234",
        TOKEN,
        "API_BEARER_TOKEN",
        "OPENAI_COMPAT_BUDGET_USD",
        "unrelated-secret-5678",
    ] {
        assert!(
            !env.contains(secret),
            "{secret} leaked into the agent's environment"
        );
    }
}

#[tokio::test]
async fn a_run_past_its_deadline_is_503_and_leaves_no_process() {
    let gw = Gateway::with("openai-compat-timeout-seconds", 1).await;
    let body = gw
        .chat_json(
            "[[mock:delay 20000]] too slow",
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
    gw.wait_nothing_left().await;
}

#[tokio::test]
async fn with_one_slot_a_second_run_waits_and_one_past_the_depth_is_refused() {
    let gw = Gateway::one_slot(2).await;
    let first = gw.chat("[[mock:delay 1500]] [[mock:text first done]]");
    let waits = async {
        gw.wait_health(|h| h["active"] == 1).await;
        let second = gw.chat("[[mock:text second done]]");
        let refused = async {
            gw.wait_health(|h| h["active"] == 1 && h["queued"] == 1)
                .await;
            gw.chat("third").await
        };
        tokio::join!(second, refused)
    };
    let (first, (second, refused)) = tokio::join!(first, waits);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(json(refused).await["error"]["code"], "queue_full");
    assert_eq!(answer(&json(first).await), "first done");
    assert_eq!(answer(&json(second).await), "second done");
}

#[tokio::test]
async fn a_client_that_disconnects_leaves_no_process() {
    let gw = Gateway::start().await;
    let in_flight = tokio::spawn(gw.chat_request("[[mock:delay 30000]] abandoned").send());
    gw.mock
        .wait_for_requests(1, Duration::from_secs(30))
        .await
        .expect("the run started");
    assert!(
        !common::processes_under(gw.jobs_dir.path()).is_empty(),
        "the agent is running"
    );
    in_flight.abort();
    gw.wait_nothing_left().await;
}

#[tokio::test]
async fn no_session_transcript_is_left_in_the_agents_home() {
    let gw = Gateway::start().await;
    let response = gw.chat("remember nothing").await;
    assert_eq!(response.status(), StatusCode::OK);
    let projects = gw.home.path().join(".claude/projects");
    let transcripts: Vec<_> = walk(&projects)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert!(transcripts.is_empty(), "transcripts left: {transcripts:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn an_unknown_agent_is_named_in_the_error() {
    let gw = Gateway::with("openai-compat-agent", "no-such-agent").await;
    let body = gw.chat_json("hi", StatusCode::SERVICE_UNAVAILABLE).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no-such-agent") && message.contains("general-purpose"),
        "{message}"
    );
}

#[tokio::test]
async fn an_api_error_is_503_with_the_reason() {
    let (gw, body) = chatted("[[mock:error 500]]", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["error"]["code"], "agent_failed", "{body}");
    gw.wait_no_agent_process().await;
}

#[tokio::test]
async fn faulty_agents_end_in_clear_errors_with_nothing_leaked() {
    let cases = [
        ("crash.sh", "signal"),
        ("garbage.sh", "output"),
        ("hang.sh", "hung"),
    ];
    for (script, expect) in cases {
        let gw = Gateway::fake_with(script, "agent-inactivity-timeout-seconds", 1).await;
        let response = gw.chat("hi").await;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{script}"
        );
        let body = json(response).await;
        let message = body["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains(expect), "{script}: {message}");
        gw.wait_nothing_left().await;
    }
}

#[tokio::test]
async fn a_stderr_flood_does_not_deadlock() {
    let gw = Gateway::builder().fake("stderr-flood.sh").start().await;
    let response = tokio::time::timeout(Duration::from_secs(30), gw.chat("hi"))
        .await
        .expect("no deadlock");
    assert_eq!(response.status(), StatusCode::OK);
    gw.wait_no_agent_process().await;
}

#[tokio::test]
async fn runs_leave_no_folders_behind_in_the_agents_home() {
    let gw = Gateway::start().await;
    for _ in 0..2 {
        let response = gw.chat("hello").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let claude = gw.home.path().join(".claude");
    let leftovers = || {
        ["projects", "session-env"]
            .iter()
            .flat_map(|dir| {
                std::fs::read_dir(claude.join(dir))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|entry| entry.path())
            .collect::<Vec<_>>()
    };
    eventually("no per-run folder is left in HOME", secs(10), || async {
        let left = leftovers();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_workspace_that_cannot_be_made_is_a_clear_503_and_frees_the_slot() {
    let gw = Gateway::start().await;
    // The disk under JOBS_DIR goes away after start-up: a file now stands where the folder was.
    let jobs_dir = gw.jobs_dir.path().to_path_buf();
    std::fs::remove_dir_all(&jobs_dir).unwrap();
    std::fs::write(&jobs_dir, "not a directory").unwrap();

    let body = gw.chat_json("hi", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_openai_error(&body, "workspace_failed", "workspace");
    assert!(gw.mock.requests().is_empty(), "no agent ran");
    gw.wait_idle().await;

    std::fs::remove_file(&jobs_dir).unwrap();
    std::fs::create_dir(&jobs_dir).unwrap();
    let response = gw.chat("[[mock:text back]]").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the gateway recovers once the disk is back"
    );
}
