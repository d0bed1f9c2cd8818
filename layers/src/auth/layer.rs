//! The bearer authentication layer and service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{AuthFailure, TokenSource, Tokens};
use crate::accessors::inner_accessors;
use crate::reject::{Reject, ResponseFuture};

/// Wraps a service in [`BearerAuth`].
///
/// Cloning the layer shares its [`Tokens`] (they sit behind an [`Arc`]).
#[derive(Clone)]
pub struct BearerAuthLayer<R> {
    /// The accepted tokens, shared by every service this layer builds.
    tokens: Arc<Tokens>,
    /// Where the token is read from.
    source: TokenSource,
    /// Builds the rejection response.
    on_failure: R,
}

impl<R> BearerAuthLayer<R> {
    /// Accepts `tokens` and answers refused requests with `on_failure`.
    pub fn new(tokens: Tokens, on_failure: R) -> Self {
        Self {
            tokens: Arc::new(tokens),
            source: TokenSource::Bearer,
            on_failure,
        }
    }

    /// Reads the token where `source` says (`Authorization: Bearer` by default).
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.source = source;
        self
    }
}

impl<S, R: Clone> Layer<S> for BearerAuthLayer<R> {
    type Service = BearerAuth<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            tokens: self.tokens.clone(),
            source: self.source.clone(),
            on_failure: self.on_failure.clone(),
        }
    }
}

impl<R> fmt::Debug for BearerAuthLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("tokens", &self.tokens)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Calls the inner service only for requests bearing an accepted token; see the
/// [module docs](super).
#[derive(Clone)]
pub struct BearerAuth<S, R> {
    /// The service authenticated requests go to.
    inner: S,
    /// The accepted tokens.
    tokens: Arc<Tokens>,
    /// Where the token is read from.
    source: TokenSource,
    /// Builds the rejection response.
    on_failure: R,
}

impl<S, R> BearerAuth<S, R> {
    /// Wraps `inner`, accepting `tokens` and answering refused requests with `on_failure`.
    pub fn new(inner: S, tokens: Tokens, on_failure: R) -> Self {
        Self {
            inner,
            tokens: Arc::new(tokens),
            source: TokenSource::Bearer,
            on_failure,
        }
    }

    /// Returns a [`BearerAuthLayer`] that wraps services this way.
    pub fn layer(tokens: Tokens, on_failure: R) -> BearerAuthLayer<R> {
        BearerAuthLayer::new(tokens, on_failure)
    }

    inner_accessors!(S);
}

impl<S: fmt::Debug, R> fmt::Debug for BearerAuth<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for BearerAuth<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: Reject<AuthFailure, ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.tokens.authorize_from(req.headers(), &self.source) {
            Ok(caller) => {
                // Names the caller in the request's log lines when the current span declares a
                // `caller` field (a no-op otherwise). The name, never the token.
                tracing::Span::current().record("caller", &*caller.name);
                req.extensions_mut().insert(caller);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(failure) => {
                tracing::debug!(%failure, "bearer authentication refused a request");
                ResponseFuture::rejected(self.on_failure.reject(failure))
            }
        }
    }
}
