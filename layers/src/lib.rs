//! Reusable [tower] layers for services that run expensive jobs behind HTTP.
//!
//! Every layer is generic over [`http::Request<B>`] and passes what it learns to the layers below it
//! through the request's [`http::Extensions`], so the layers compose with any tower-based HTTP
//! server (hyper, axum, tonic) and know nothing about the job they guard.
//!
//! | module | layer | reads | inserts | rejects with |
//! |---|---|---|---|---|
//! | [`auth`] | [`BearerAuthLayer`](auth::BearerAuthLayer) | `Authorization` (or an API-key header: [`TokenSource`](auth::TokenSource)) | [`AuthenticatedCaller`](auth::AuthenticatedCaller) | a response you shape ([`Reject`](auth::Reject)) |
//! | [`admission`] | [`AdmissionLayer`](admission::AdmissionLayer) | the shared [`Gauge`](admission::Gauge) | [`Ticket`](admission::Ticket) | a response you shape ([`Reject`](admission::Reject)) |
//! | [`concurrency`] | [`ConcurrencyLimitLayer`](concurrency::ConcurrencyLimitLayer) | [`Ticket`](admission::Ticket) | (holds a permit) | never: it waits, in fair order (FIFO within a key) |
//! | [`deadline`] | [`DeadlineLayer`](deadline::DeadlineLayer) | [`Deadline`](deadline::Deadline) | | [`Elapsed`](deadline::Elapsed) |
//! | [`workspace`] | [`WorkspaceLayer`](workspace::WorkspaceLayer) | | [`WorkspacePath`](workspace::WorkspacePath) | [`ProvisionFailed`](workspace::ProvisionFailed) |
//!
//! # Order
//!
//! The layers are meant to be stacked outermost first in this order:
//!
//! ```text
//! auth ─► admission ─► (router, maybe a spawned task) ─► concurrency ─► deadline ─► workspace ─► job
//! ```
//!
//! - **auth** comes first so that a caller without a valid token never takes a queue slot.
//! - **admission** answers "queue full" at once, before any work is done, and hands out a
//!   [`Ticket`](admission::Ticket) that counts the request as *queued* for as long as the request
//!   (or a clone of the ticket) lives. It may sit in front of a router or of code that spawns the
//!   rest of the stack in a background task: the ticket travels with the request.
//! - **concurrency** waits, in the gauge's fair order (FIFO within a key), for one of its slots, then turns the
//!   ticket from *queued* into *active*. Admission and concurrency share one
//!   [`Gauge`](admission::Gauge), so a health endpoint reads both numbers from one place. Its
//!   `poll_ready` never waits for a permit, so it exerts no back-pressure: a `LoadShed` or `Buffer`
//!   above it never sees the limit, and bounding the queue is admission's job.
//! - **deadline** sits *inside* concurrency, so its timer starts when the job starts running: time
//!   spent waiting in the queue never counts against a job's deadline.
//! - **workspace** sits inside deadline, so preparing the workspace is part of the run; it removes
//!   the workspace when the run completes, fails, times out or is dropped.
//!
//! Rejections that a client should see as an HTTP answer (bad token, queue full) are responses, so
//! those layers keep the inner service's error type. Failures inside the run are typed errors
//! ([`Elapsed`](deadline::Elapsed), [`ProvisionFailed`](workspace::ProvisionFailed), and
//! [`Overloaded`](admission::Overloaded) for callers that admit by hand), carried as [`BoxError`]
//! and turned into responses in one place with `err.is::<T>()`.
//!
//! Every resource (queue slot, permit, workspace) is owned by a value whose `Drop` releases it, so
//! a timeout, a cancelled request, a dropped connection or a panic cannot leak one.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, path::PathBuf, sync::Arc, time::Duration};
//!
//! use gateway_layers::{
//!     BoxError,
//!     admission::{AdmissionLayer, Gauge, GaugeSnapshot},
//!     auth::{AuthFailure, AuthenticatedCaller, BearerAuthLayer, Tokens},
//!     concurrency::ConcurrencyLimitLayer,
//!     deadline::DeadlineLayer,
//!     workspace::{Provision, ProvisionFuture, WorkspaceLayer, WorkspacePath},
//! };
//! use http::{header::AUTHORIZATION, Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! /// Hands out a fixed directory; a real provisioner would clone a repository.
//! struct Scratch;
//!
//! impl Provision for Scratch {
//!     fn provision(&self) -> ProvisionFuture {
//!         Box::pin(async { Ok(PathBuf::from("/tmp/job")) })
//!     }
//!     fn release(&self, _path: PathBuf) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // One gauge, built once, shared by admission and concurrency.
//! let gauge = Gauge::new(2, 10);
//!
//! let svc = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(
//!         Tokens::single("ci", "s3cret"),
//!         |failure: AuthFailure| {
//!             let mut res = Response::new(failure.to_string());
//!             *res.status_mut() = StatusCode::UNAUTHORIZED;
//!             res
//!         },
//!     ))
//!     .layer(AdmissionLayer::new(gauge.clone(), |_: GaugeSnapshot| {
//!         let mut res = Response::new("queue full".to_string());
//!         *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
//!         res
//!     }))
//!     // Errors from the layers below become responses here, in one place.
//!     .map_result(|result: Result<Response<String>, BoxError>| {
//!         Ok::<_, BoxError>(result.unwrap_or_else(|err| {
//!             let mut res = Response::new(err.to_string());
//!             *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!             res
//!         }))
//!     })
//!     .layer(ConcurrencyLimitLayer::new(gauge.clone()))
//!     .layer(DeadlineLayer::new(Duration::from_secs(60)))
//!     .layer(WorkspaceLayer::new(Arc::new(Scratch)))
//!     .service_fn(|req: Request<String>| async move {
//!         let caller = req.extensions().get::<AuthenticatedCaller>().map(|c| c.name.clone());
//!         let path = req.extensions().get::<WorkspacePath>().map(|p| p.0.clone());
//!         Ok::<_, Infallible>(Response::new(format!("{caller:?} ran in {path:?}")))
//!     });
//!
//! let req = Request::builder()
//!     .header(AUTHORIZATION, "Bearer s3cret")
//!     .body(String::new())?;
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.body(), r#"Some("ci") ran in Some("/tmp/job")"#);
//!
//! let res = svc.oneshot(Request::new(String::new())).await?;
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! # Ok(())
//! # }
//! ```
//!
//! [tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod admission;
pub mod auth;
pub mod concurrency;
pub mod deadline;
pub mod workspace;

mod accessors;
mod gate;
mod reject;
mod staged;

/// Errors travel boxed through the stack.
///
/// Layers that fail a request return one of this crate's typed errors in this box; ask which one
/// with `err.is::<T>()` or `err.downcast_ref::<T>()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
