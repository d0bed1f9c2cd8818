//! The response future that races the run against its deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{sleep, Sleep};

use super::Elapsed;
use crate::BoxError;

pin_project! {
    /// Response future of [`DeadlineService`](super::DeadlineService).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        // The deadline, for the error.
        duration: Duration,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            future: F,
            #[pin]
            sleep: Sleep,
        },
        // Finished or expired; the inner future is gone.
        Done,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F, duration: Duration) -> Self {
        Self {
            state: State::Running {
                future,
                sleep: sleep(duration),
            },
            duration,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let StateProj::Running { future, sleep } = this.state.as_mut().project() else {
            panic!("future polled after completion");
        };
        // The run first: an answer that is ready in the same instant as the deadline wins.
        if let Poll::Ready(result) = future.poll(cx) {
            this.state.set(State::Done);
            return Poll::Ready(result.map_err(Into::into));
        }
        if sleep.poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Drop the run now, not when the caller gets round to dropping this future.
        this.state.set(State::Done);
        Poll::Ready(Err(Elapsed::new(*this.duration).into()))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("duration", &self.duration)
            .field("done", &matches!(self.state, State::Done))
            .finish()
    }
}
