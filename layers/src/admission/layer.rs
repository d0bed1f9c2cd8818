//! The admission layer and service.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{Gauge, GaugeSnapshot};
use crate::accessors::inner_accessors;
use crate::reject::{Reject, ResponseFuture};

/// Wraps a service in [`Admission`].
#[derive(Clone)]
pub struct AdmissionLayer<R> {
    /// The gauge every service built by this layer admits into.
    gauge: Gauge,
    /// Builds the rejection response.
    on_overload: R,
}

impl<R> AdmissionLayer<R> {
    /// Admits requests into `gauge`, answering with `on_overload` when it is full or closed.
    pub const fn new(gauge: Gauge, on_overload: R) -> Self {
        Self { gauge, on_overload }
    }
}

impl<S, R: Clone> Layer<S> for AdmissionLayer<R> {
    type Service = Admission<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            gauge: self.gauge.clone(),
            on_overload: self.on_overload.clone(),
        }
    }
}

impl<R> fmt::Debug for AdmissionLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionLayer")
            .field("gauge", &self.gauge)
            .finish_non_exhaustive()
    }
}

/// Admits requests into a [`Gauge`], inserting a [`Ticket`](super::Ticket) into each admitted
/// request; see the [module docs](super).
#[derive(Clone)]
pub struct Admission<S, R> {
    /// The service admitted requests go to.
    inner: S,
    /// Where requests are counted.
    gauge: Gauge,
    /// Builds the rejection response.
    on_overload: R,
}

impl<S, R> Admission<S, R> {
    /// Wraps `inner`, admitting into `gauge` and answering with `on_overload` when it is full.
    pub const fn new(inner: S, gauge: Gauge, on_overload: R) -> Self {
        Self {
            inner,
            gauge,
            on_overload,
        }
    }

    /// Returns an [`AdmissionLayer`] that wraps services this way.
    pub const fn layer(gauge: Gauge, on_overload: R) -> AdmissionLayer<R> {
        AdmissionLayer::new(gauge, on_overload)
    }

    /// The gauge requests are admitted into.
    pub fn gauge(&self) -> &Gauge {
        &self.gauge
    }

    inner_accessors!(S);
}

impl<S: fmt::Debug, R> fmt::Debug for Admission<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("inner", &self.inner)
            .field("gauge", &self.gauge)
            .finish_non_exhaustive()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Admission<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: Reject<GaugeSnapshot, ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.gauge.admit() {
            Ok(ticket) => {
                req.extensions_mut().insert(ticket);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(overloaded) => {
                tracing::debug!(%overloaded, "admission turned a request away");
                ResponseFuture::rejected(self.on_overload.reject(overloaded.snapshot()))
            }
        }
    }
}
