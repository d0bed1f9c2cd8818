//! The body of a streamed answer: SSE events sent one by one, with the scripted pause after the
//! first content delta so a client sees partial output before the delay.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::wire;

/// A body that sends `events` as SSE frames, pausing `delay` after the first content delta (or after
/// `message_start` when there is none). It ends early when the client goes away or `shutdown` turns
/// true, so a long delay never outlives the mock or the connection.
pub(crate) fn sse_body(
    events: Vec<Value>,
    delay: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) -> Body {
    let pause_after = events
        .iter()
        .position(|e| e["type"] == "content_block_delta")
        .unwrap_or(0);
    // One frame in flight is enough: each send waits for the client to take the previous one.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for (i, event) in events.iter().enumerate() {
            if tx.send(Bytes::from(wire::sse_frame(event))).await.is_err() {
                return;
            }
            if let (Some(delay), true) = (delay, i == pause_after) {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    });
    Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>))
}
