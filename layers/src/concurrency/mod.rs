//! A fair concurrency limit that shares its counts and its scheduler with admission.
//!
//! [`ConcurrencyLimitLayer`] is built on the same [`Gauge`](crate::admission::Gauge) as the
//! [`AdmissionLayer`](crate::admission::AdmissionLayer) further out. For each request it takes the
//! [`Ticket`](crate::admission::Ticket) out of the request's extensions (or counts the request
//! itself, with [`Gauge::admit_unchecked`](crate::admission::Gauge::admit_unchecked), if it came
//! without one), waits for one of the gauge's run permits, marks the ticket active and only then
//! calls the inner service.
//!
//! Requests get slots in the gauge's fair order (see
//! [Fair dispatch](crate::admission#fair-dispatch)): first come, first served within a key, in
//! proportion to the weights across keys, so no request starves. A request without a ticket
//! counts as the default key `""`.
//!
//! The permit and the ticket live inside the [`ResponseFuture`]. They are released when the run
//! completes, and equally when the future is dropped, whether it was still waiting or already
//! running, or when the inner service panics: a cancelled or timed-out request can never keep a
//! slot.
//!
//! The layer never refuses a request; bounding the queue is admission's job.
//!
//! # Readiness: no back-pressure, by design
//!
//! [`ConcurrencyLimit`]'s `poll_ready` does **not** wait for a permit: it only passes on the inner
//! service's readiness, so as far as the limit goes it is always ready, even with every permit
//! taken. The wait happens inside the [`ResponseFuture`] instead, where the gauge's scheduler
//! serves requests in fair order. This is deliberate: waiting there keeps the queue's order
//! in the one gauge admission counts in, and lets a cancelled request give its
//! place back at once; a permit taken in `poll_ready` would instead be held by whichever service
//! was polled, whether or not a request follows.
//!
//! The consequence: middleware that reacts to `poll_ready` returning `Poll::Pending` never sees
//! back-pressure from this layer. A `LoadShed` placed above it never sheds (every request is let
//! through to wait), and a `Buffer` above it never fills because of it (its worker forwards each
//! request at once; the requests pile up in the gauge's queue, not in the buffer). To bound the
//! queue and turn requests away when it is full, use admission instead:
//! [`AdmissionLayer`](crate::admission::AdmissionLayer) on the same
//! [`Gauge`](crate::admission::Gauge), whose `queue_depth` is the bound and whose
//! [`Reject`](crate::admission::Reject) strategy answers at once when it is reached.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use gateway_layers::{admission::Gauge, concurrency::ConcurrencyLimitLayer};
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), gateway_layers::BoxError> {
//! let gauge = Gauge::new(1, 10);
//! let probe = gauge.clone();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(ConcurrencyLimitLayer::new(gauge.clone()))
//!     .service(service_fn(move |_req: Request<()>| {
//!         // While the job runs, it is the one active request.
//!         let snapshot = probe.snapshot();
//!         async move { Ok::<_, Infallible>(Response::new(snapshot.active)) }
//!     }));
//!
//! let res = svc.oneshot(Request::new(())).await?;
//! assert_eq!(*res.body(), 1);
//! assert_eq!(gauge.snapshot().active, 0);
//! # Ok(())
//! # }
//! ```

mod future;
mod layer;

#[cfg(test)]
mod tests;

pub use self::future::ResponseFuture;
pub use self::layer::{ConcurrencyLimit, ConcurrencyLimitLayer};
