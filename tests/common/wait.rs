//! The one bounded wait of the harness: poll until something holds, or fail saying what never did.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(20);

/// What a probe of [`eventually`] answers: done (with a value), or not yet (with what it saw).
pub trait Probe {
    /// What the wait answers once it is done.
    type Done;
    /// `Ok` when done; `Err` with what was seen (for the failure message) while not.
    fn settled(self) -> Result<Self::Done, String>;
}

impl Probe for bool {
    type Done = ();
    fn settled(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Probe for Option<T> {
    type Done = T;
    fn settled(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Probe for Result<T, E> {
    type Done = T;
    fn settled(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Asks `probe` every 20 ms until it is done (`true`, `Some(value)`, `Ok(value)`) and answers its
/// value; panics after `limit` with `what` it waited for and the last thing the probe saw (the
/// `Err` of a `Result` probe).
pub async fn eventually<P, F, Fut>(what: impl AsRef<str>, limit: Duration, mut probe: F) -> P::Done
where
    P: Probe,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let seen = match probe().await.settled() {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            let what = what.as_ref();
            if seen.is_empty() {
                panic!("timed out after {limit:?} waiting until {what}");
            }
            panic!("timed out after {limit:?} waiting until {what}; last seen: {seen}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Seconds, for the limits of [`eventually`].
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
