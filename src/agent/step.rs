//! The gateway's own steps around a run (recording it, queueing it again when the account is
//! rate-limited, harvesting its changes): each is its settings and what it does around one run,
//! and [`StepLayer`] makes any of them a tower layer, so the service plumbing is written once.
//!
//! A step sees the run's request on the way down and its outcome on the way up; the service below
//! it has been polled ready, and a fresh clone of it stays behind for the next run (tower's usual
//! way for a service whose future outlives `call`).

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};

use gateway_layers::BoxError;
use http::Request;
use tower::util::BoxCloneService;
use tower::{Layer, Service};

use super::{AgentOutcome, AgentRequest};

/// A run's outcome, boxed: what a step's service answers.
pub(crate) type RunFuture<E> = Pin<Box<dyn Future<Output = Result<AgentOutcome, E>> + Send>>;

/// The stack below a step, boxed, so a step is written once for any stack (one allocation a
/// step a run, next to a process spawned).
pub(crate) type Below = BoxCloneService<Request<AgentRequest>, AgentOutcome, BoxError>;

/// One step around a run: its settings (cloned into every service the layer builds) and its part.
pub(crate) trait RunStep: Clone {
    /// What the step's service fails with.
    type Error;

    /// What a failed readiness of the stack below becomes.
    fn not_ready(error: BoxError) -> Self::Error;

    /// Sends `request` down `below`, which was polled ready, doing the step's part around the run.
    fn run(&self, below: Below, request: Request<AgentRequest>) -> RunFuture<Self::Error>;
}

/// Puts a [`RunStep`] around a service.
#[derive(Clone, Debug)]
pub(crate) struct StepLayer<P>(pub(crate) P);

impl<P: Clone, S> Layer<S> for StepLayer<P> {
    type Service = Step<P, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Step {
            step: self.0.clone(),
            inner,
        }
    }
}

/// A [`RunStep`] around the service below it; see [`StepLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Step<P, S> {
    step: P,
    inner: S,
}

impl<P, S> Service<Request<AgentRequest>> for Step<P, S>
where
    P: RunStep,
    S: Service<Request<AgentRequest>, Response = AgentOutcome, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = AgentOutcome;
    type Error = P::Error;
    type Future = RunFuture<P::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), P::Error>> {
        self.inner.poll_ready(cx).map_err(P::not_ready)
    }

    fn call(&mut self, request: Request<AgentRequest>) -> Self::Future {
        let fresh = self.inner.clone();
        let ready = mem::replace(&mut self.inner, fresh);
        self.step.run(BoxCloneService::new(ready), request)
    }
}
