//! The response future shared by the layers that must get hold of something before a request may
//! run (a permit, a workspace) and keep it until the run is over.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;

/// The wait for what a run needs, boxed.
pub(crate) type Wait<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// A layer's part in a [`StagedCall`]: what happens when the wait is over, when it fails and when
/// the run completes.
pub(crate) trait Stage<Req>: fmt::Debug {
    /// What the wait is called in the future's `Debug` (`Waiting`, `Provisioning`).
    const WAITING: &'static str;
    /// What the wait yields.
    type Ready;
    /// How the wait fails.
    type Error;
    /// Held for the length of the run; it drops right after the inner future.
    type Guard;

    /// Called once, when the wait is over and before the inner service is called: may edit the
    /// request, and returns the guard to hold while the request runs.
    fn start(&mut self, ready: Self::Ready, req: &mut Req) -> Self::Guard;

    /// The error the call fails with when the wait fails; the inner service is then never called.
    fn fail(&mut self, error: Self::Error) -> BoxError;

    /// Called once the inner future has completed or was dropped, before its guard drops. May be
    /// called more than once.
    fn finish(&mut self) {}
}

pin_project! {
    /// Waits for what the run needs, then calls the inner service and runs the request while
    /// holding the guard its [`Stage`] made.
    ///
    /// Dropped at any point, it drops the wait with the request never sent, or the inner future;
    /// then its stage's part ([`Stage::finish`]); then the guard. So whatever the run holds is
    /// released (a workspace removed, the run's processes gone) before a concurrency slot counts
    /// as free, and the counts fall before the permit frees (a waiter woken by it never shows up
    /// as one active too many).
    pub(crate) struct StagedCall<P, S, Req>
    where
        P: Stage<Req>,
        S: Service<Req>,
    {
        stage: P,
        #[pin]
        state: State<P, S, Req>,
    }

    impl<P, S, Req> PinnedDrop for StagedCall<P, S, Req>
    where
        P: Stage<Req>,
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let guard = match this.state.as_mut().project() {
                StateProj::Running { guard, .. } => guard.take(),
                _ => None,
            };
            // The run (or the wait) stops first, then the stage lets go, then the guard.
            this.state.set(State::Done);
            this.stage.finish();
            drop(guard);
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<P, S, Req>
    where
        P: Stage<Req>,
        S: Service<Req>,
    {
        // Waiting; `call` is taken when the wait is over. Nothing is held yet: a dropped wait
        // cleans up after itself.
        Waiting {
            wait: Wait<P::Ready, P::Error>,
            call: Option<(S, Req)>,
        },
        // Running. The guard is taken out on drop, so the run stops before it goes.
        Running {
            #[pin]
            future: S::Future,
            guard: Option<P::Guard>,
        },
        Done,
    }
}

impl<P, S, Req> StagedCall<P, S, Req>
where
    P: Stage<Req>,
    S: Service<Req>,
{
    /// Sends `req`, once `wait` is over, to the service in `inner`, which was polled ready; a fresh
    /// clone of it stays behind in `inner`, to be polled for the next request.
    pub(crate) fn new(stage: P, wait: Wait<P::Ready, P::Error>, inner: &mut S, req: Req) -> Self
    where
        S: Clone,
    {
        let clone = inner.clone();
        let service = mem::replace(inner, clone);
        Self {
            stage,
            state: State::Waiting {
                wait,
                call: Some((service, req)),
            },
        }
    }
}

impl<P, S, Req> fmt::Debug for StagedCall<P, S, Req>
where
    P: Stage<Req>,
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting { .. } => P::WAITING,
            State::Running { .. } => "Running",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("stage", &self.stage)
            .finish()
    }
}

impl<P, S, Req> Future for StagedCall<P, S, Req>
where
    P: Stage<Req>,
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { wait, call } => {
                    let ready = match ready!(wait.as_mut().poll(cx)) {
                        Ok(ready) => ready,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(this.stage.fail(error)));
                        }
                    };
                    let (mut service, mut req) = call.take().expect("request is sent only once");
                    // The guard exists before the inner service is called, so a panic in `call`
                    // still drops it while unwinding.
                    let guard = this.stage.start(ready, &mut req);
                    let future = service.call(req);
                    this.state.set(State::Running {
                        future,
                        guard: Some(guard),
                    });
                }
                StateProj::Running { future, .. } => {
                    let result = ready!(future.poll(cx));
                    this.stage.finish();
                    // Drop the run and its guard now rather than whenever the caller drops this
                    // future.
                    this.state.set(State::Done);
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Done => panic!("future polled after completion"),
            }
        }
    }
}

/// Writes a layer's response future: a named wrapper of a [`StagedCall`] with the layer's
/// [`Stage`], as tower's `opaque_future!` names its futures, so the public type shows neither.
///
/// ```text
/// staged_future! {
///     /// Docs.
///     ResponseFuture<S, B> calls Request<B>, through InWorkspace
/// }
/// ```
macro_rules! staged_future {
    ($(#[$attr:meta])* $name:ident<S, $param:ident> calls $request:ty, through $stage:ty $(,)?) => {
        pin_project_lite::pin_project! {
            $(#[$attr])*
            pub struct $name<S, $param>
            where
                S: tower_service::Service<$request>,
            {
                #[pin]
                call: $crate::staged::StagedCall<$stage, S, $request>,
            }
        }

        impl<S, $param> std::future::Future for $name<S, $param>
        where
            S: tower_service::Service<$request>,
            S::Error: Into<$crate::BoxError>,
        {
            type Output = Result<S::Response, $crate::BoxError>;

            fn poll(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Self::Output> {
                self.project().call.poll(cx)
            }
        }

        impl<S, $param> std::fmt::Debug for $name<S, $param>
        where
            S: tower_service::Service<$request>,
        {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.call.fmt(f)
            }
        }
    };
}

pub(crate) use staged_future;
