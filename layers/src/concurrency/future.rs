//! The response future that waits for a permit, then runs the request.

use tokio::sync::oneshot::error::RecvError;
use tower_service::Service;

use crate::admission::{Slot, Ticket};
use crate::staged::{staged_future, Stage, StagedCall, Wait};
use crate::BoxError;

staged_future! {
    /// Response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).
    ///
    /// Owns the request's ticket and, once it has one, its permit: dropping the future at any
    /// point frees both.
    ResponseFuture<S, Req> calls Req, through Activate
}

/// The concurrency layer's part in the call: the request's ticket, made active when the permit
/// arrives. The permit is the guard held while the request runs.
#[derive(Debug)]
pub(super) struct Activate {
    // Let go after the run stops and before its permit frees (see `StagedCall`): the request
    // counts as active until everything it held is released, and a waiter woken by the permit
    // never shows up as one active too many.
    ticket: Option<Ticket>,
}

impl<Req> Stage<Req> for Activate {
    const WAITING: &'static str = "Waiting";
    type Ready = Slot;
    type Error = RecvError;
    type Guard = Slot;

    fn start(&mut self, permit: Slot, _req: &mut Req) -> Slot {
        if let Some(ticket) = self.ticket.as_ref() {
            ticket.activate();
        }
        permit
    }

    fn fail(&mut self, error: RecvError) -> BoxError {
        error.into()
    }

    fn finish(&mut self) {
        // Free the slot now rather than whenever the caller drops this future.
        drop(self.ticket.take());
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    /// Waits in the gauge's fair queue with `acquire`, then sends `req` to the service in
    /// `inner`, which was polled ready.
    pub(super) fn new(
        acquire: Wait<Slot, RecvError>,
        ticket: Ticket,
        inner: &mut S,
        req: Req,
    ) -> Self
    where
        S: Clone,
    {
        let stage = Activate {
            ticket: Some(ticket),
        };
        Self {
            call: StagedCall::new(stage, acquire, inner, req),
        }
    }
}
