//! Chat conversations continued by their session handle: the built binary, the real `claude` CLI
//! against the mock Anthropic API, the default SQLite store. A request presenting the handle sends
//! only its new turn, and the model still receives the earlier ones, also after a restart; an
//! unknown or expired handle is refused with the reason.

mod common;
mod store_support;

use common::{answer, assert_openai_error};
use reqwest::StatusCode;
use serde_json::{json, Value};
use store_support::*;

/// `POST /v1/chat/completions` with `body` and the extra `headers`; answers the status, the
/// `x-session-id` header and the body.
async fn chat(
    gw: &Binary,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let mut request = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(TOKEN)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let handle = response
        .headers()
        .get("x-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, handle, read_json(response).await)
}

/// Continues the conversation `handle` (by the header) with one user message.
async fn continued(
    gw: &Binary,
    handle: &str,
    content: &str,
) -> (StatusCode, Option<String>, Value) {
    chat(gw, one_message(content), &[("x-session-id", handle)]).await
}

/// A body with one user message.
fn one_message(content: &str) -> Value {
    json!({"model": "sonnet", "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn a_conversation_continues_by_its_handle_with_only_the_new_turn_after_a_restart() {
    let backing = Backing::start().await;
    let mock = &backing.mock;
    let settings = backing.settings(&[]);
    let first = Binary::start(&settings).await;
    let (status, header, body) = chat(
        &first,
        one_message("chat-first-marker [[mock:text the first reply]]"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(answer(&body), "the first reply");
    let handle = body["session_id"]
        .as_str()
        .expect("a session handle")
        .to_owned();
    assert_eq!(
        header.as_deref(),
        Some(handle.as_str()),
        "the header carries it too"
    );

    first.kill9().await;
    let second = Binary::start(&settings).await;
    // The body field continues it.
    let mut next = one_message("chat-second-marker [[mock:text the second reply]]");
    next["session_id"] = json!(handle);
    let (status, header, body) = chat(&second, next, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(answer(&body), "the second reply");
    assert_eq!(header.as_deref(), Some(handle.as_str()));
    // So does the header, from the turn just kept.
    let (status, _, body) = continued(
        &second,
        &handle,
        "chat-third-marker [[mock:text the third reply]]",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(answer(&body), "the third reply");

    let requests = mock.message_requests();
    let third = requests
        .iter()
        .find(|r| r.prompt_text().contains("chat-third-marker"))
        .expect("the third turn reached the model");
    let text = third.all_text();
    for earlier in [
        "chat-first-marker",
        "the first reply",
        "chat-second-marker",
        "the second reply",
    ] {
        assert!(
            text.contains(earlier),
            "the model receives {earlier:?}: {text}"
        );
    }
}

#[tokio::test]
async fn an_unknown_or_expired_handle_is_a_404_never_a_fresh_start() {
    let backing = Backing::start().await;
    let mock = &backing.mock;
    let gw = Binary::start(&backing.settings(&[("JOB_TTL_SECONDS", &1)])).await;

    let mut unknown = one_message("never run");
    unknown["session_id"] = json!("0123456789abcdef0123456789abcdef");
    let (status, _, body) = chat(&gw, unknown, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "session_not_found", "{body}");

    let (status, handle, body) =
        chat(&gw, one_message("short-lived [[mock:text soon gone]]"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let handle = handle.expect("a handle");
    // A job finished after the turn is forgotten after the turn's session: once it is gone, so
    // is the session.
    let later = gw.submit("later [[mock:text done]]", Value::Null).await;
    gw.wait_end(&later).await;
    gw.wait_forgotten(&later).await;
    let (status, _, expired) = continued(&gw, &handle, "after expiry [[mock:text never]]").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{expired}");
    assert_openai_error(&expired, "session_not_found", "expired");
    assert!(
        !mock
            .message_requests()
            .iter()
            .any(|r| r.prompt_text().contains("after expiry")),
        "no fresh start reached the model"
    );
}
