//! The service and layer behind [`BearerAuth`](crate::auth::BearerAuth) and
//! [`Admission`](crate::admission::Admission): check each request, then either call the inner
//! service or answer with the response the [`Reject`] strategy builds.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::accessors::inner_accessors;
use crate::reject::{Reject, ResponseFuture};

/// What a [`Gate`] asks of each request: let it through, after noting in its extensions what the
/// services further in should know, or say why not.
///
/// Implemented by this crate's checks only: [`TokenCheck`](crate::auth::TokenCheck) for
/// [`BearerAuth`](crate::auth::BearerAuth) and [`Gauge`](crate::admission::Gauge) for
/// [`Admission`](crate::admission::Admission).
pub trait Check<B>: sealed::Sealed {
    /// Why a request was turned away; the gate's [`Reject`] strategy builds the response from it.
    type Why;

    /// Lets `req` through, or says why not.
    fn check(&self, req: &mut Request<B>) -> Result<(), Self::Why>;
}

mod sealed {
    /// Keeps [`Check`](super::Check) to the checks of this crate.
    #[allow(unreachable_pub)]
    pub trait Sealed {}

    impl Sealed for crate::auth::TokenCheck {}
    impl Sealed for crate::admission::Gauge {}
}

/// Wraps a service in a [`Gate`]; used as [`BearerAuthLayer`](crate::auth::BearerAuthLayer) and
/// [`AdmissionLayer`](crate::admission::AdmissionLayer), which say how to build one.
#[derive(Clone)]
pub struct GateLayer<C, R> {
    /// Decides which requests pass; each service this layer builds gets a clone.
    pub(crate) check: C,
    /// Builds the rejection response.
    pub(crate) reject: R,
}

impl<S, C: Clone, R: Clone> Layer<S> for GateLayer<C, R> {
    type Service = Gate<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            check: self.check.clone(),
            reject: self.reject.clone(),
        }
    }
}

/// Calls the inner service for the requests its [`Check`] lets through and answers the others
/// itself, with the response its [`Reject`] strategy builds; used as
/// [`BearerAuth`](crate::auth::BearerAuth) and [`Admission`](crate::admission::Admission).
///
/// A refusal is a response, not an error, so the service keeps the inner service's error type.
#[derive(Clone)]
pub struct Gate<S, C, R> {
    /// The service the requests let through go to.
    pub(crate) inner: S,
    /// Decides which requests pass.
    pub(crate) check: C,
    /// Builds the rejection response.
    pub(crate) reject: R,
}

impl<S, C, R> Gate<S, C, R> {
    inner_accessors!(S);
}

impl<S, C, R, ReqBody, ResBody> Service<Request<ReqBody>> for Gate<S, C, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Check<ReqBody>,
    R: Reject<C::Why, ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.check.check(&mut req) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(why) => ResponseFuture::rejected(self.reject.reject(why)),
        }
    }
}
