//! Admission control: a shared [`Gauge`] of running and queued work, the [`Ticket`] each admitted
//! request carries, and the [`AdmissionLayer`] that turns requests away when the queue is full.
//!
//! A [`Gauge`] is built once with two limits: `concurrency`, how many requests may *run* at once,
//! and `queue_depth`, how many may be *in flight* (running plus waiting) before new ones are turned
//! away. [`AdmissionLayer`] asks the gauge for a [`Ticket`]; if there is room the ticket goes into
//! the request's extensions and counts the request as *queued*; if not, the inner service is not
//! called and the response comes from your [`OnOverload`] strategy (any
//! `Fn(GaugeSnapshot) -> Response<B>` is one).
//!
//! The ticket is released by `Drop`: when the request (or the last clone of the ticket) goes
//! away, its slot is freed, whether the request completed, failed or was abandoned. Further in,
//! [`ConcurrencyLimitLayer`](crate::concurrency::ConcurrencyLimitLayer), built on the same gauge,
//! waits for a run permit and moves the ticket from queued to active.
//!
//! [`Gauge::close`] stops admission for a graceful shutdown: new requests are turned away while
//! the ones already admitted finish. Callers who admit by hand instead of through the layer use
//! [`Gauge::admit`], which fails with the typed error [`Overloaded`].
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use gateway_layers::admission::{AdmissionLayer, Gauge, GaugeSnapshot, Ticket};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two may run at once; at most three may be in flight, running or queued.
//! let gauge = Gauge::new(2, 3);
//!
//! let svc = ServiceBuilder::new()
//!     .layer(AdmissionLayer::new(gauge.clone(), |snapshot: GaugeSnapshot| {
//!         let mut res = Response::new(format!("{} queued, try later", snapshot.queued));
//!         *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
//!         res
//!     }))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let queued = req.extensions().get::<Ticket>().is_some_and(|t| !t.is_active());
//!         Ok::<_, Infallible>(Response::new(format!("admitted, queued: {queued}")))
//!     }));
//!
//! let res = svc.clone().oneshot(Request::new(String::new())).await?;
//! assert_eq!(res.body(), "admitted, queued: true");
//! // The request, and its ticket with it, is gone: the slot is free again.
//! assert_eq!(gauge.snapshot().queued, 0);
//!
//! // Fill the queue by hand; the next request is turned away.
//! let held: Vec<_> = (0..3).filter_map(|_| gauge.try_admit()).collect();
//! assert_eq!(held.len(), 3);
//! let res = svc.oneshot(Request::new(String::new())).await?;
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.body(), "3 queued, try later");
//! # Ok(())
//! # }
//! ```

mod error;
mod gauge;
mod layer;
mod ticket;

#[cfg(test)]
mod tests;

pub use self::error::Overloaded;
pub use self::gauge::{Gauge, GaugeSnapshot};
pub use self::layer::{Admission, AdmissionLayer, OnOverload};
pub use self::ticket::{Activation, Ticket};
pub use crate::reject::ResponseFuture;
