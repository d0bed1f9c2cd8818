//! The deadline extension, layer and service.

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::ResponseFuture;
use crate::accessors::inner_accessors;
use crate::BoxError;

/// Request extension: how long this request's run may take, overriding the layer's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Duration);

/// Wraps a service in [`DeadlineService`].
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    /// Used for requests without a [`Deadline`] extension.
    default: Duration,
}

impl DeadlineLayer {
    /// Bounds runs by `default` unless a request carries its own [`Deadline`].
    pub const fn new(default: Duration) -> Self {
        Self { default }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService::new(inner, self.default)
    }
}

/// Fails a request with [`Elapsed`](super::Elapsed) when the inner service takes longer than the
/// request's deadline; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    /// The service whose answer is awaited.
    inner: S,
    /// Used for requests without a [`Deadline`] extension.
    default: Duration,
}

impl<S> DeadlineService<S> {
    /// Wraps `inner`, bounding runs by `default` unless a request carries its own [`Deadline`].
    pub const fn new(inner: S, default: Duration) -> Self {
        Self { inner, default }
    }

    /// Returns a [`DeadlineLayer`] that wraps services this way.
    pub const fn layer(default: Duration) -> DeadlineLayer {
        DeadlineLayer::new(default)
    }

    /// The deadline for requests without a [`Deadline`] extension.
    pub const fn default_deadline(&self) -> Duration {
        self.default
    }

    inner_accessors!(S);
}

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let duration = req
            .extensions()
            .get::<Deadline>()
            .map_or(self.default, |deadline| deadline.0);
        // The sleep is created here, so the clock starts when the run does.
        ResponseFuture::new(self.inner.call(req), duration)
    }
}
