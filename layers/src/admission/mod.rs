//! Admission control: a shared [`Gauge`] of running and queued work, the [`Ticket`] each admitted
//! request carries, and the [`AdmissionLayer`] that turns requests away when the queue is full.
//!
//! A [`Gauge`] is built once with two limits: `concurrency`, how many requests may *run* at once,
//! and `queue_depth`, how many may be *in flight* (running plus waiting) before new ones are turned
//! away. [`AdmissionLayer`] asks the gauge for a [`Ticket`]; if there is room the ticket goes into
//! the request's extensions and counts the request as *queued*; if not, the inner service is not
//! called and the response comes from your [`Reject`] strategy (any
//! `Fn(GaugeSnapshot) -> Response<B>` is one), given the gauge's reading at the moment of
//! refusal. To tell a full queue from a closed gauge (shutting down), capture a clone of the
//! [`Gauge`] and ask [`Gauge::is_closed`].
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
//! # Fair dispatch
//!
//! Every ticket is admitted for a key ([`Gauge::admit_for`]; [`Gauge::admit`] uses the key `""`)
//! with [`KeyLimits`]: a weight, a `max_concurrent` and a `max_queued`. Free slots go to waiting
//! tickets by start-time fair queueing (SFQ, Goyal, Vin and Cheng), multi-server form: each key
//! keeps the finish tag of its last admitted run; the virtual time `V` is the least start tag of
//! the runs holding a slot (the largest finish tag so far when none does); a run admitted gets
//! the start tag `S = max(V, last_finish[key])` and the finish tag `S + 1/weight`. A freed slot
//! goes to the waiting ticket with the least `(S, admission order)` among keys below their
//! `max_concurrent`; a key at its limit is passed over, never blocking the others.
//!
//! So runs of one key start first come, first served; keys that compete share the slots in
//! proportion to their weights; and a key that arrives behind another's long queue starts its
//! first runs at the next releases (its tags start at `V`, level with what runs now). A weight
//! changed between admissions applies to the runs admitted after it; nothing waiting moves.
//! [`Gauge::pause_until`] holds all dispatch until an instant (an upstream quota exhausted, say)
//! and resumes by itself.
//!
//! ```
//! use std::sync::Arc;
//!
//! use gateway_layers::admission::{AdmitError, Gauge, KeyLimits};
//!
//! let gauge = Gauge::new(2, 100);
//! let limits = KeyLimits { weight: 1, max_concurrent: None, max_queued: Some(20) };
//! let alice: Vec<_> = (0..20)
//!     .map(|_| gauge.admit_for(Arc::from("alice"), limits))
//!     .collect::<Result<_, _>>()
//!     .expect("room");
//! // Alice has 20 waiting, her limit: she is turned away, bob is not.
//! assert!(matches!(
//!     gauge.admit_for(Arc::from("alice"), limits),
//!     Err(AdmitError::KeyFull { max_queued: 20, .. })
//! ));
//! let bob = gauge.admit_for(Arc::from("bob"), limits).expect("bob has room");
//! assert_eq!(gauge.key_snapshot("alice").queued, 20);
//! assert_eq!(bob.key(), "bob");
//! # drop(alice);
//! ```
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
mod fair;
mod gauge;
mod layer;
mod ticket;

#[cfg(test)]
mod fair_tests;
#[cfg(test)]
mod tests;

pub use self::error::Overloaded;
pub(crate) use self::gauge::Slot;
pub use self::gauge::{AdmitError, Gauge, GaugeSnapshot, KeyLimits, KeySnapshot};
pub use self::layer::{Admission, AdmissionLayer};
pub use self::ticket::{Activation, Ticket};
pub use crate::gate::{Check, Gate, GateLayer};
pub use crate::reject::{Reject, ResponseFuture};
