//! The response future that waits for a permit, then runs the request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tower_service::Service;

use crate::admission::Ticket;
use crate::BoxError;

/// Waits in the gauge's FIFO queue for a permit.
pub(super) type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + 'static>>;

pin_project! {
    /// Response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).
    ///
    /// Owns the request's ticket and, once it has one, its permit: dropping the future at any
    /// point frees both.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        // Declared before `state` so that on drop the counts fall before the permit frees: a
        // waiter woken by the permit never shows up as one active too many.
        ticket: Option<Ticket>,
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // In the queue; `call` is taken when the permit arrives.
        Waiting {
            acquire: Acquire,
            call: Option<(S, Req)>,
        },
        // Holding a permit; the inner future drops before the permit.
        Running {
            #[pin]
            future: S::Future,
            permit: OwnedSemaphorePermit,
        },
        Done,
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(super) fn new(acquire: Acquire, ticket: Ticket, service: S, req: Req) -> Self {
        Self {
            ticket: Some(ticket),
            state: State::Waiting {
                acquire,
                call: Some((service, req)),
            },
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { acquire, call } => {
                    let permit = ready!(acquire.as_mut().poll(cx))?;
                    let (mut service, req) = call.take().expect("request is sent only once");
                    if let Some(ticket) = this.ticket.as_ref() {
                        ticket.activate();
                    }
                    let future = service.call(req);
                    this.state.set(State::Running { future, permit });
                }
                StateProj::Running { future, .. } => {
                    let result = ready!(future.poll(cx));
                    // Free the slot now rather than whenever the caller drops this future.
                    drop(this.ticket.take());
                    this.state.set(State::Done);
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Done => panic!("future polled after completion"),
            }
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting { .. } => "Waiting",
            State::Running { .. } => "Running",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("ticket", &self.ticket)
            .finish()
    }
}
