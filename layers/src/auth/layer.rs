//! The bearer authentication layer and service: a [`Gate`] whose check is a [`TokenCheck`].

use std::fmt;
use std::sync::Arc;

use http::Request;

use super::{AuthFailure, TokenSource, Tokens};
use crate::gate::{Check, Gate, GateLayer};

/// The [`Check`] of [`BearerAuth`]: the accepted tokens, and where a request's token is read
/// from. On success the request gets an [`AuthenticatedCaller`](super::AuthenticatedCaller).
#[derive(Clone, Debug)]
pub struct TokenCheck {
    /// The accepted tokens, shared by every service a layer builds.
    tokens: Arc<Tokens>,
    /// Where the token is read from.
    source: TokenSource,
}

impl TokenCheck {
    /// Reads the token from `Authorization: Bearer`, as a new layer does.
    fn bearer(tokens: Tokens) -> Self {
        Self {
            tokens: Arc::new(tokens),
            source: TokenSource::Bearer,
        }
    }
}

impl<B> Check<B> for TokenCheck {
    type Why = AuthFailure;

    fn check(&self, req: &mut Request<B>) -> Result<(), AuthFailure> {
        let caller = self
            .tokens
            .authorize_from(req.headers(), &self.source)
            .inspect_err(|failure| {
                tracing::debug!(%failure, "bearer authentication refused a request");
            })?;
        // Names the caller in the request's log lines when the current span declares a `caller`
        // field (a no-op otherwise). The name, never the token.
        tracing::Span::current().record("caller", &*caller.name);
        req.extensions_mut().insert(caller);
        Ok(())
    }
}

/// Wraps a service in [`BearerAuth`].
///
/// Cloning the layer shares its [`Tokens`] (they sit behind an [`Arc`]).
pub type BearerAuthLayer<R> = GateLayer<TokenCheck, R>;

impl<R> BearerAuthLayer<R> {
    /// Accepts `tokens` and answers refused requests with `on_failure`.
    pub fn new(tokens: Tokens, on_failure: R) -> Self {
        Self {
            check: TokenCheck::bearer(tokens),
            reject: on_failure,
        }
    }

    /// Reads the token where `source` says (`Authorization: Bearer` by default).
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.check.source = source;
        self
    }
}

impl<R> fmt::Debug for BearerAuthLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("tokens", &self.check.tokens)
            .field("source", &self.check.source)
            .finish_non_exhaustive()
    }
}

/// Calls the inner service only for requests bearing an accepted token, answering the others
/// with the response its [`Reject`](super::Reject) strategy builds from the [`AuthFailure`]; see
/// the [module docs](super).
pub type BearerAuth<S, R> = Gate<S, TokenCheck, R>;

impl<S, R> BearerAuth<S, R> {
    /// Wraps `inner`, accepting `tokens` and answering refused requests with `on_failure`.
    pub fn new(inner: S, tokens: Tokens, on_failure: R) -> Self {
        Self {
            inner,
            check: TokenCheck::bearer(tokens),
            reject: on_failure,
        }
    }

    /// Returns a [`BearerAuthLayer`] that wraps services this way.
    pub fn layer(tokens: Tokens, on_failure: R) -> BearerAuthLayer<R> {
        BearerAuthLayer::new(tokens, on_failure)
    }
}

impl<S: fmt::Debug, R> fmt::Debug for BearerAuth<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("tokens", &self.check.tokens)
            .finish_non_exhaustive()
    }
}
