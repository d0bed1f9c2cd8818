//! `GET /jobs/{id}/events`: the run as it happens, replayed to late subscribers, ending with the
//! final record.

mod common;

use common::*;

/// Index of the first event for which `matches` holds.
fn position(events: &[Sse], matches: impl Fn(&Sse) -> bool) -> Option<usize> {
    events.iter().position(matches)
}

fn is_tool_call(event: &Sse) -> bool {
    event.event == "agent" && {
        let data = event.json();
        data["type"] == "assistant"
            && data["message"]["content"].as_array().is_some_and(|parts| {
                parts
                    .iter()
                    .any(|p| p["type"] == "tool_use" && p["name"] == "Bash")
            })
    }
}

fn is_tool_result(event: &Sse) -> bool {
    event.event == "agent" && event.data.contains("tool_result") && event.data.contains("marker-42")
}

fn assert_whole_story(events: &[Sse], job_id: &str) {
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"status"), "{names:?}");
    assert_eq!(events[0].json()["status"], "queued");
    let running = position(events, |e| {
        e.event == "status" && e.json()["status"] == "running"
    })
    .expect("a running status");
    let call =
        position(events, is_tool_call).unwrap_or_else(|| panic!("no Bash tool call in {names:?}"));
    let result = position(events, is_tool_result).expect("no tool result");
    let end = events.len() - 1;
    assert_eq!(events[end].event, "end", "{names:?}");
    assert!(running < call && call < result && result < end, "{names:?}");
    let record = events[end].json();
    assert_eq!(record["job_id"], job_id);
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "done");
    // Ids count up from 0 so a client can resume with Last-Event-ID.
    let ids: Vec<usize> = events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (0..events.len()).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_stream_shows_the_tool_call_before_the_final_record_to_every_subscriber() {
    let gw = Gateway::start().await;
    let job_id = submit(
        &gw,
        "Run it. [[mock:bash echo marker-$((6*7))]] [[mock:delay 300]] [[mock:text done]]",
        300,
    )
    .await;
    // Two subscribers follow it live, at once.
    let (first, second) = tokio::join!(
        async { read_events(open_events(&gw, TOKEN, &job_id).await).await },
        async { read_events(open_events(&gw, TOKEN, &job_id).await).await },
    );
    assert_whole_story(&first, &job_id);
    assert_whole_story(&second, &job_id);

    // One arriving after the end still gets the whole story, then the stream closes.
    let late = read_events(open_events(&gw, TOKEN, &job_id).await).await;
    assert_whole_story(&late, &job_id);
    assert_eq!(late.len(), first.len());

    // A client resuming after an event gets only what followed it.
    let resumed = events_request(&gw, TOKEN, &job_id).header("last-event-id", "1");
    let resumed = read_events(send(resumed).await).await;
    assert_eq!(resumed.len(), first.len() - 2);
    assert_eq!(resumed[0].id.as_deref(), Some("2"));
}

#[tokio::test]
async fn a_cancelled_job_stream_ends_with_the_error_record() {
    let gw = Gateway::fake("hang.sh").await;
    let job_id = submit(&gw, "hang", 600).await;
    let stream = open_events(&gw, TOKEN, &job_id).await;
    let reader = tokio::spawn(read_events(stream));
    gw.wait_agent_process().await;
    let (status, _) = cancel_as(&gw, TOKEN, &job_id).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let events = reader.await.unwrap();
    let last = events.last().expect("events");
    assert_eq!(last.event, "end");
    assert_ended(&last.json(), "error", "cancelled");
}
