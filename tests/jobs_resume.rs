//! Follow-up jobs (`continue_from`): the built binary, the real `claude` CLI against the mock
//! Anthropic API, real git, the default SQLite store. A follow-up's agent receives the earlier
//! turns and works in a workspace holding the earlier job's changes, also after the gateway was
//! restarted; a job that cannot be continued is refused with the reason.

mod common;
mod store_support;

use std::path::Path;

use common::Repos;
use mock_anthropic::{MockAnthropic, RecordedRequest};
use reqwest::StatusCode;
use serde_json::{json, Value};
use store_support::*;

/// The Messages API calls of the turn whose prompt holds `marker`, in order.
fn turn(mock: &MockAnthropic, marker: &str) -> Vec<RecordedRequest> {
    mock.message_requests()
        .into_iter()
        .filter(|r| r.prompt_text().contains(marker))
        .collect()
}

/// Runs a first job that writes `notes.txt` (and, with a base, rewrites the tracked
/// `tracked.txt` to content of the same size) and answers `first answer`, then, after a restart,
/// a follow-up that reads both back; checks what the follow-up's agent received.
async fn first_then_follow_up(base: Option<&Path>) {
    let backing = Backing::start().await;
    let mock = &backing.mock;
    let mut settings = backing.settings(&[]);
    if let Some(base) = base {
        set(&mut settings, "WORKSPACE_DIR", base.display());
    }
    let first = Binary::start(&settings).await;
    let earlier = first
        .submit(
            "first-turn-marker [[mock:bash echo carried-over > notes.txt; if [ -f tracked.txt ]; then echo after > tracked.txt; fi]] [[mock:text the first answer]]",
            Value::Null,
        )
        .await;
    let record = first.wait_end(&earlier).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "the first answer", "{record}");

    // The gateway is killed and started again on the same JOBS_DIR: the session is in the store.
    first.kill9().await;
    let second = Binary::start(&settings).await;
    let follow_up = second
        .submit(
            "second-turn-marker [[mock:bash cat notes.txt; cat tracked.txt 2>/dev/null]] [[mock:text the second answer]]",
            json!({"continue_from": earlier}),
        )
        .await;
    let record = second.wait_end(&follow_up).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "the second answer", "{record}");
    assert_eq!(record["continue_from"], earlier, "{record}");

    let calls = turn(mock, "second-turn-marker");
    let opening = calls.first().expect("the follow-up called the API");
    let text = opening.all_text();
    assert!(
        text.contains("first-turn-marker") && text.contains("the first answer"),
        "the follow-up's first request carries the earlier turns: {text}"
    );
    let outputs: Vec<String> = calls
        .iter()
        .flat_map(RecordedRequest::tool_outputs)
        .collect();
    assert!(
        outputs.iter().any(|o| o.contains("carried-over")),
        "the follow-up's workspace holds the earlier job's file: {outputs:?}"
    );
    if base.is_some() {
        // Same size as the committed `befor`: only the content (and the time) tell the edit.
        assert!(
            outputs.iter().any(|o| o.contains("after"))
                && !outputs.iter().any(|o| o.contains("befor")),
            "the follow-up's checkout holds the earlier job's edit of a tracked file: {outputs:?}"
        );
    }
}

#[tokio::test]
async fn a_follow_up_job_resumes_the_session_and_the_scratch_workspace_after_a_restart() {
    first_then_follow_up(None).await;
}

#[tokio::test]
async fn a_follow_up_job_resumes_on_a_fresh_checkout_with_the_earlier_changes() {
    let repos = Repos::new();
    repos.push("tracked.txt", "befor\n");
    first_then_follow_up(Some(&repos.base)).await;
}

#[tokio::test]
async fn a_job_that_cannot_be_continued_is_refused_with_the_reason() {
    let backing = Backing::start().await;
    let gw = Binary::start(&backing.settings(&[("JOB_TTL_SECONDS", &2)])).await;

    // Unknown.
    let unknown = "0123456789abcdef0123456789abcdef";
    gw.assert_refused(
        json!({"prompt": "next", "continue_from": unknown}),
        StatusCode::NOT_FOUND,
        "not found",
    )
    .await;

    // Still running.
    let running = gw
        .submit(
            "still-running [[mock:delay 3000]] [[mock:text late]]",
            Value::Null,
        )
        .await;
    gw.assert_refused(
        json!({"prompt": "next", "continue_from": running}),
        StatusCode::CONFLICT,
        "has not finished",
    )
    .await;

    // Expired: forgotten after JOB_TTL_SECONDS, with its session.
    gw.wait_end(&running).await;
    gw.wait_forgotten(&running).await;
    gw.assert_refused(
        json!({"prompt": "next", "continue_from": running}),
        StatusCode::NOT_FOUND,
        "forgotten",
    )
    .await;
}

#[tokio::test]
async fn a_session_over_its_cap_is_not_kept_and_says_so() {
    let backing = Backing::start().await;
    let gw = Binary::start(&backing.settings(&[("MAX_SESSION_BYTES", &16)])).await;
    let earlier = gw.submit("short [[mock:text done]]", Value::Null).await;
    assert_eq!(gw.wait_end(&earlier).await["status"], "completed");
    gw.assert_refused(
        json!({"prompt": "next", "continue_from": earlier}),
        StatusCode::CONFLICT,
        "left no session",
    )
    .await;
}
