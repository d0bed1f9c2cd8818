//! The admission layer and service: a [`Gate`] whose check is the [`Gauge`].

use std::fmt;

use http::Request;

use super::{Gauge, GaugeSnapshot};
use crate::gate::{Check, Gate, GateLayer};

/// Admits each request into the gauge, inserting its [`Ticket`](super::Ticket); a refusal gives
/// the gauge's reading at that moment.
impl<B> Check<B> for Gauge {
    type Why = GaugeSnapshot;

    fn check(&self, req: &mut Request<B>) -> Result<(), GaugeSnapshot> {
        let ticket = self.admit().map_err(|overloaded| {
            tracing::debug!(%overloaded, "admission turned a request away");
            overloaded.snapshot()
        })?;
        req.extensions_mut().insert(ticket);
        Ok(())
    }
}

/// Wraps a service in [`Admission`].
pub type AdmissionLayer<R> = GateLayer<Gauge, R>;

impl<R> AdmissionLayer<R> {
    /// Admits requests into `gauge`, answering with `on_overload` when it is full or closed.
    pub const fn new(gauge: Gauge, on_overload: R) -> Self {
        Self {
            check: gauge,
            reject: on_overload,
        }
    }
}

impl<R> fmt::Debug for AdmissionLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionLayer")
            .field("gauge", &self.check)
            .finish_non_exhaustive()
    }
}

/// Admits requests into a [`Gauge`], inserting a [`Ticket`](super::Ticket) into each admitted
/// request and answering the others with the response its [`Reject`](super::Reject) strategy
/// builds from a [`GaugeSnapshot`]; see the [module docs](super).
pub type Admission<S, R> = Gate<S, Gauge, R>;

impl<S, R> Admission<S, R> {
    /// Wraps `inner`, admitting into `gauge` and answering with `on_overload` when it is full.
    pub const fn new(inner: S, gauge: Gauge, on_overload: R) -> Self {
        Self {
            inner,
            check: gauge,
            reject: on_overload,
        }
    }

    /// Returns an [`AdmissionLayer`] that wraps services this way.
    pub const fn layer(gauge: Gauge, on_overload: R) -> AdmissionLayer<R> {
        AdmissionLayer::new(gauge, on_overload)
    }

    /// The gauge requests are admitted into.
    pub fn gauge(&self) -> &Gauge {
        &self.check
    }
}

impl<S: fmt::Debug, R> fmt::Debug for Admission<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("inner", &self.inner)
            .field("gauge", &self.check)
            .finish_non_exhaustive()
    }
}
