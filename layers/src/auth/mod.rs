//! Bearer-token authentication with constant-time comparison.
//!
//! [`BearerAuthLayer`] checks `Authorization: Bearer <token>` against a set of accepted
//! [`Tokens`]. The scheme is matched case-insensitively (RFC 7235), so `bearer` and `BEARER` work.
//! The presented token is hashed with SHA-256 and the digest is compared in constant time with
//! *every* accepted digest, without stopping at a match: the time a check takes tells an attacker
//! neither how much of a token was right, nor its length, nor which token matched. Only digests are
//! stored, and [`Tokens`]'s `Debug` shows names only.
//!
//! On success the request carries an [`AuthenticatedCaller`] naming the token that matched, and
//! the current tracing span's `caller` field, if it declares one, records that name. On
//! failure the inner service is not called; the response comes from your [`Reject`]
//! strategy (any `Fn(AuthFailure) -> Response<B>` is one), given the reason: an absent
//! credential ([`AuthFailure::Missing`]) or a wrong one ([`AuthFailure::Invalid`]).
//!
//! [`BearerAuthLayer::token_source`] also accepts the token alone in a header of its own
//! ([`TokenSource::BearerOrHeader`]), as API-key clients send it (`x-api-key: <token>`); the
//! same tokens, digests and constant-time check apply.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use gateway_layers::auth::{AuthFailure, AuthenticatedCaller, BearerAuthLayer, Tokens};
//! use http::{header::AUTHORIZATION, Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut tokens = Tokens::new();
//! tokens.insert("deploy-bot", "first-secret");
//! tokens.insert("alice", "second-secret");
//!
//! let svc = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(tokens, |failure: AuthFailure| {
//!         let mut res = Response::new(failure.to_string());
//!         *res.status_mut() = StatusCode::UNAUTHORIZED;
//!         res
//!     }))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let caller = req.extensions().get::<AuthenticatedCaller>().map(|c| c.name.clone());
//!         Ok::<_, Infallible>(Response::new(format!("hello {}", caller.unwrap_or_default())))
//!     }));
//!
//! let req = Request::builder()
//!     .header(AUTHORIZATION, "bearer second-secret")
//!     .body(String::new())?;
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.body(), "hello alice");
//!
//! let req = Request::builder()
//!     .header(AUTHORIZATION, "Bearer guess")
//!     .body(String::new())?;
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(res.body(), "Invalid token");
//! # Ok(())
//! # }
//! ```

mod failure;
mod header;
mod layer;
mod tokens;

#[cfg(test)]
mod tests;

pub use self::failure::AuthFailure;
pub use self::header::TokenSource;
pub use self::layer::{BearerAuth, BearerAuthLayer, TokenCheck};
pub use self::tokens::{AuthenticatedCaller, Tokens};
pub use crate::gate::{Check, Gate, GateLayer};
pub use crate::reject::{Reject, ResponseFuture};
