//! The concurrency limit layer and service.

use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::ResponseFuture;
use crate::accessors::inner_accessors;
use crate::admission::{Gauge, Ticket};
use crate::BoxError;

/// Wraps a service in [`ConcurrencyLimit`].
///
/// Every service this layer builds waits on the one gauge it was given: the state is built once,
/// not per [`layer`](Layer::layer) call, so cloned stacks share their limit.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    /// Holds the permits and the counts.
    gauge: Gauge,
}

impl ConcurrencyLimitLayer {
    /// Limits runs to the permits of `gauge`.
    pub const fn new(gauge: Gauge) -> Self {
        Self { gauge }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::new(inner, self.gauge.clone())
    }
}

/// Runs at most as many requests at once as its gauge has slots, in fair order; see the
/// [module docs](super).
///
/// Its [`poll_ready`](#method.poll_ready) never waits for a permit, so it exerts no back-pressure:
/// bound the queue with admission, not with a `LoadShed` or `Buffer` above it.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    /// The service that runs a request once it holds a permit.
    inner: S,
    /// Holds the permits and the counts.
    gauge: Gauge,
}

impl<S> ConcurrencyLimit<S> {
    /// Wraps `inner`, limiting runs to the permits of `gauge`.
    pub const fn new(inner: S, gauge: Gauge) -> Self {
        Self { inner, gauge }
    }

    /// Returns a [`ConcurrencyLimitLayer`] that wraps services this way.
    pub const fn layer(gauge: Gauge) -> ConcurrencyLimitLayer {
        ConcurrencyLimitLayer::new(gauge)
    }

    /// The gauge whose permits this service waits for.
    pub fn gauge(&self) -> &Gauge {
        &self.gauge
    }

    inner_accessors!(S);
}

impl<S, B> Service<Request<B>> for ConcurrencyLimit<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request<B>>;

    /// Ready whenever the inner service is: this does **not** wait for a permit, so as far as the
    /// limit goes the service is always ready, even with every permit taken.
    ///
    /// Deliberately so: requests wait for their permit in the [`ResponseFuture`], FIFO through
    /// the gauge, never here. A `LoadShed` or `Buffer` placed above this service therefore never
    /// sees back-pressure from the limit; to turn requests away when too many wait, put an
    /// [`AdmissionLayer`](crate::admission::AdmissionLayer) on the same [`Gauge`] further out.
    /// See [Readiness](super#readiness-no-back-pressure-by-design) in the module docs.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ticket = match req.extensions_mut().remove::<Ticket>() {
            Some(ticket) if ticket.belongs_to(&self.gauge) => ticket,
            other => {
                // A ticket from another gauge is not ours to activate: leave it where it was.
                if let Some(foreign) = other {
                    req.extensions_mut().insert(foreign);
                }
                self.gauge.admit_unchecked()
            }
        };
        // Takes its place in the gauge's fair order now; the slot arrives down the channel.
        let acquire = Box::pin(self.gauge.slot(&ticket));
        // The service that was polled ready goes with the request; a fresh clone stays behind
        // to be polled for the next one.
        ResponseFuture::new(acquire, ticket, &mut self.inner, req)
    }
}
