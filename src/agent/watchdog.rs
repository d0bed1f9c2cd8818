//! The inactivity watchdog: an agent that prints nothing for too long is hung.
//!
//! Seed defect 16: a hung agent was only caught by the 45-minute job timeout. The run kicks the
//! watchdog on every byte from stdout or stderr; if it ever fires, the run stops.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{sleep, Instant, Sleep};

/// A timer pushed back by every sign of life.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// How long silence may last before the timer fires.
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Watchdog {
    /// Starts the timer.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            timer: Box::pin(sleep(timeout)),
        }
    }

    /// The agent showed life: restart the full period.
    pub(crate) fn kick(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.timeout);
    }

    /// Changes the period and restarts the timer (the short drain once the agent has exited).
    pub(crate) fn set_period(&mut self, period: Duration) {
        self.timeout = period;
        self.kick();
    }

    /// Completes when the timer runs out. Cancel safe: use it in `select!` and kick between polls.
    pub(crate) async fn expired(&mut self) {
        self.timer.as_mut().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_after_the_timeout_without_activity() {
        let start = Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(10));
        dog.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn each_kick_restarts_the_timeout() {
        let start = Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(10));
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(6)).await;
            dog.kick();
        }
        dog.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(28));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_period_applies_from_now() {
        let start = Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(600));
        tokio::time::advance(Duration::from_secs(5)).await;
        dog.set_period(Duration::from_secs(2));
        dog.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }
}
