//! The intake of the run routes (chat completions, Messages, Responses): the body is read within
//! its bounds and checked, and only then is a queue slot taken (see [`crate::bounds`]). Each route
//! answers a refusal in its own error shape, so it passes its own mapper.

use axum::body::{Body, Bytes};
use http::HeaderMap;

use crate::agent::AgentRequest;
use crate::bounds::Refusal;
use crate::metrics::Entry;
use crate::state::AppState;

/// Reads the body of an `entry` call within the intake's bounds, has `prepare` check it and build
/// the run, and takes a queue slot for the run (the `request` of it); the body is dropped once
/// its size has been charged, so that it is not held through the run.
pub(crate) async fn take_in<R, E>(
    state: &AppState,
    entry: Entry,
    headers: &HeaderMap,
    body: Body,
    refused: fn(&Refusal) -> E,
    prepare: impl AsyncFnOnce(&Bytes) -> Result<R, E>,
    request: fn(&mut R) -> &mut http::Request<AgentRequest>,
) -> Result<R, E> {
    let body = state
        .intake
        .read(entry, headers, body)
        .await
        .map_err(|refusal| refused(&refusal))?;
    let mut run = prepare(&body).await?;
    let admitted = state
        .intake
        .admit(entry, body.len())
        .map_err(|refusal| refused(&refusal))?;
    request(&mut run).extensions_mut().insert(admitted.ticket);
    Ok(run)
}
