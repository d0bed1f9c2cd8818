//! A per-request deadline on the run, not on the wait.
//!
//! [`DeadlineLayer`] bounds how long the inner service may take to answer. The bound is the
//! request's [`Deadline`] extension when it has one, the layer's default otherwise, so one stack
//! serves jobs that each choose their own timeout.
//!
//! The timer starts when the request reaches this layer. Placed inside
//! [`ConcurrencyLimitLayer`](crate::concurrency::ConcurrencyLimitLayer), that is when the job
//! starts running: time spent waiting in the queue never counts.
//!
//! When the deadline passes, the inner future is dropped at once (so whatever it owns, a child
//! process or a workspace, is released by its own `Drop`) and the call fails with [`Elapsed`].
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//!
//! use gateway_layers::deadline::{Deadline, DeadlineLayer, Elapsed};
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), gateway_layers::BoxError> {
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(60)))
//!     .service(service_fn(|_req: Request<()>| async {
//!         tokio::time::sleep(Duration::from_secs(10)).await;
//!         Ok::<_, Infallible>(Response::new("finished"))
//!     }));
//!
//! // Within the default of 60s.
//! let res = svc.clone().oneshot(Request::new(())).await?;
//! assert_eq!(*res.body(), "finished");
//!
//! // This request allows itself only 5s.
//! let mut req = Request::new(());
//! req.extensions_mut().insert(Deadline(Duration::from_secs(5)));
//! let err = svc.oneshot(req).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! assert_eq!(err.to_string(), "deadline of 5s elapsed");
//! # Ok(())
//! # }
//! ```

mod error;
mod future;
mod layer;

#[cfg(test)]
mod tests;

pub use self::error::Elapsed;
pub use self::future::ResponseFuture;
pub use self::layer::{Deadline, DeadlineLayer, DeadlineService};
