//! The one flow of the run routes (chat completions, Messages, Responses): the body is read
//! within its bounds and checked, with the session it continues attached, and only then is a
//! queue slot taken (see [`crate::bounds`]); then the run answers, whole or streamed. What differs
//! between the routes (the checks, the error shape, the answer) is their [`RunRoute`].

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use gateway_layers::deadline::Deadline;
use http::HeaderMap;

use crate::agent::{AgentRequest, RunOptions};
use crate::bounds::Refusal;
use crate::config::Config;
use crate::metrics::Entry;
use crate::routes::jobs::Caller;
use crate::state::AppState;

/// What a run route does its own way.
pub(crate) trait RunRoute {
    /// The run, checked and ready to take a queue slot.
    type Run;
    /// The route's error shape, which a refusal of the intake is worded in too.
    type Error: IntoResponse + for<'a> From<&'a Refusal>;
    /// The route's entry in the metrics and the intake.
    const ENTRY: Entry;

    /// Checks the body and builds the run, with the session it continues attached.
    async fn prepare(state: &AppState, call: TakenIn<'_>) -> Result<Self::Run, Self::Error>;

    /// The agent request of the run, which carries its queue ticket.
    fn request(run: &mut Self::Run) -> &mut http::Request<AgentRequest>;

    /// Runs it and answers, whole or streamed.
    async fn answer(
        state: &AppState,
        owner: String,
        run: Self::Run,
    ) -> Result<Response, Self::Error>;
}

/// A conversation route's run (chat completions, Messages, Responses), checked and built: the
/// chat agent on the model asked for, within the chat budget and deadline.
pub(crate) struct Conversation {
    /// The model as requested (or the default).
    pub(crate) model: String,
    /// What goes down the agent stack.
    pub(crate) request: http::Request<AgentRequest>,
    /// Answer as Server-Sent Events.
    pub(crate) streaming: bool,
    /// The answer is the run's structured output (a JSON Schema was asked for), not its text.
    pub(crate) structured: bool,
}

impl Conversation {
    /// The run of `prompt` on `model` with `options` (already checked against the policy);
    /// `streaming` asks the agent for partial messages.
    pub(crate) fn new(
        config: &Config,
        model: String,
        prompt: String,
        streaming: bool,
        options: RunOptions,
    ) -> Self {
        let structured = options.json_schema.is_some();
        let mut request = http::Request::new(AgentRequest {
            prompt: prompt.into(),
            agent: config.chat_agent.clone(),
            model: Some(model.clone()),
            max_budget_usd: config.chat_budget_usd,
            partial_messages: streaming,
            options,
        });
        request
            .extensions_mut()
            .insert(Deadline(config.chat_timeout));
        Self {
            model,
            request,
            streaming,
            structured,
        }
    }
}

/// A call to a run route once its body is read: who made it, its headers, its body.
pub(crate) struct TakenIn<'a> {
    /// The caller.
    pub(crate) owner: &'a str,
    /// The request's headers.
    pub(crate) headers: &'a HeaderMap,
    /// The body, within its bounds.
    pub(crate) body: &'a Bytes,
}

/// A call to a run route as it arrives: who made it, its headers, and its body, not yet read.
pub(crate) struct RunCall {
    owner: String,
    headers: HeaderMap,
    body: Body,
}

impl FromRequest<AppState> for RunCall {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Infallible> {
        let (mut parts, body) = request.into_parts();
        let Caller(owner) = Caller::from_request_parts(&mut parts, state).await?;
        Ok(RunCall {
            owner,
            headers: parts.headers,
            body,
        })
    }
}

impl RunCall {
    /// Takes the call in as route `R` and runs it; a refusal before the run is `R`'s error. The
    /// body is dropped once its size has been charged, so that it is not held through the run.
    pub(crate) async fn answer<R: RunRoute>(self, state: AppState) -> Response {
        let RunCall {
            owner,
            headers,
            body,
        } = self;
        let answered = async {
            let body = state
                .intake
                .read(R::ENTRY, &headers, body)
                .await
                .map_err(|refusal| R::Error::from(&refusal))?;
            let call = TakenIn {
                owner: &owner,
                headers: &headers,
                body: &body,
            };
            let mut run = R::prepare(&state, call).await?;
            let admitted = state
                .intake
                .admit(R::ENTRY, body.len(), &owner)
                .map_err(|refusal| R::Error::from(&refusal))?;
            let extensions = R::request(&mut run).extensions_mut();
            extensions.insert(admitted.ticket);
            // The run's cost is charged to the caller's key when it ends.
            extensions.insert(crate::quota::ChargeTo(owner.clone()));
            drop(body);
            R::answer(&state, owner, run).await
        };
        answered.await.unwrap_or_else(IntoResponse::into_response)
    }
}
