//! What the layers that either answer a request themselves or pass it on share: the strategy that
//! builds their answer, and their response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

/// Builds the response a layer answers with when it turns a request away, given why it did:
/// [`BearerAuth`](crate::auth::BearerAuth) gives the
/// [`AuthFailure`](crate::auth::AuthFailure), [`Admission`](crate::admission::Admission) the
/// [`GaugeSnapshot`](crate::admission::GaugeSnapshot) read at the moment of refusal.
///
/// Implemented for every `Fn(Why) -> Response<B>`, so a closure is enough; implement it on a type
/// of your own when the strategy needs a name or state.
pub trait Reject<Why, B> {
    /// Returns the response for a request turned away for `why`.
    fn reject(&self, why: Why) -> Response<B>;
}

impl<Why, B, F> Reject<Why, B> for F
where
    F: Fn(Why) -> Response<B>,
{
    fn reject(&self, why: Why) -> Response<B> {
        self(why)
    }
}

pin_project! {
    /// Response future of [`BearerAuth`](crate::auth::BearerAuth) and
    /// [`Admission`](crate::admission::Admission): either the inner service's future or the
    /// rejection the layer's strategy built.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        // The request was let through.
        Inner {
            #[pin]
            future: F,
        },
        // The layer answered; `None` once the answer was handed out.
        Rejected {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn rejected(response: Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Rejected { response } => {
                Poll::Ready(Ok(response.take().expect("future polled after completion")))
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
