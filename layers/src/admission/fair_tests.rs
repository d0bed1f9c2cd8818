//! The order the fair scheduler starts runs in, recorded slot release by slot release.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot::{self, error::TryRecvError};

use super::gauge::Slot;
use super::{AdmitError, Gauge, KeyLimits, Ticket};

/// A gauge's waiting runs and the slots they got, to drive by hand.
struct Bench {
    gauge: Gauge,
    /// Waiting: name, ticket, where its slot arrives.
    waiting: Vec<(String, Ticket, oneshot::Receiver<Slot>)>,
    /// Holding a slot, oldest first.
    running: VecDeque<(String, Ticket, Slot)>,
    /// Names in the order they got a slot.
    started: Vec<String>,
}

impl Bench {
    fn new(concurrency: usize) -> Self {
        Self {
            gauge: Gauge::new(concurrency, 10_000),
            waiting: Vec::new(),
            running: VecDeque::new(),
            started: Vec::new(),
        }
    }

    /// Admits `n` runs of `key` with `limits` and puts them in line.
    fn submit(&mut self, key: &str, n: usize, limits: KeyLimits) {
        for i in 0..n {
            let ticket = self
                .gauge
                .admit_for(Arc::from(key), limits)
                .expect("room in the queue");
            let slot = self.gauge.slot(&ticket);
            self.waiting.push((format!("{key}{i}"), ticket, slot));
            self.collect();
        }
    }

    /// Moves the runs whose slot arrived to `running`, recording their start.
    fn collect(&mut self) {
        let mut still = Vec::new();
        for (name, ticket, mut rx) in self.waiting.drain(..) {
            match rx.try_recv() {
                Ok(slot) => {
                    ticket.activate();
                    self.started.push(name.clone());
                    self.running.push_back((name, ticket, slot));
                }
                Err(TryRecvError::Empty) => still.push((name, ticket, rx)),
                Err(TryRecvError::Closed) => panic!("{name}'s slot was never sent"),
            }
        }
        self.waiting = still;
    }

    /// Ends the oldest run of `key` (any key when `None`), then collects who started.
    fn finish(&mut self, key: Option<&str>) {
        let at = self
            .running
            .iter()
            .position(|(name, ..)| key.is_none_or(|k| name.starts_with(k)))
            .expect("a run to end");
        let (_, ticket, slot) = self.running.remove(at).expect("in range");
        drop(ticket);
        drop(slot);
        self.collect();
    }

    /// Ends the oldest runs until nothing waits.
    fn drain(&mut self) {
        while !self.waiting.is_empty() {
            self.finish(None);
        }
    }
}

fn weight(weight: u32) -> KeyLimits {
    KeyLimits {
        weight,
        ..KeyLimits::default()
    }
}

#[test]
fn a_newcomer_starts_within_the_next_two_releases() {
    let mut bench = Bench::new(2);
    bench.submit("alice", 20, KeyLimits::default());
    bench.submit("bob", 2, KeyLimits::default());
    assert_eq!(bench.started, ["alice0", "alice1"]);
    bench.finish(None);
    bench.finish(None);
    assert_eq!(bench.started[2..], ["bob0", "bob1"]);
    bench.drain();
    // FIFO within a key.
    let alice: Vec<_> = bench
        .started
        .iter()
        .filter(|n| n.starts_with("alice"))
        .collect();
    let expected: Vec<_> = (0..20).map(|i| format!("alice{i}")).collect();
    assert_eq!(alice, expected.iter().collect::<Vec<_>>());
}

#[test]
fn starts_follow_the_weights_within_one_run_per_round() {
    let mut bench = Bench::new(2);
    bench.submit("heavy", 60, weight(3));
    bench.submit("light", 20, weight(1));
    bench.drain();
    // While both keys have work, every round of four starts is three heavy and one light, within
    // one run either way.
    let contended = &bench.started[..60];
    let (mut heavy, mut light) = (0i64, 0i64);
    for name in contended {
        if name.starts_with("heavy") {
            heavy += 1;
        } else {
            light += 1;
        }
        assert!(
            (heavy - 3 * light).abs() <= 3 + 1,
            "out of share at {name}: {heavy} heavy, {light} light in {contended:?}"
        );
    }
    assert_eq!(light, 15, "{contended:?}");
}

#[test]
fn a_key_at_its_max_concurrent_is_passed_over() {
    let mut bench = Bench::new(3);
    let capped = KeyLimits {
        max_concurrent: Some(1),
        ..KeyLimits::default()
    };
    bench.submit("alice", 5, capped);
    bench.submit("bob", 5, KeyLimits::default());
    // Alice holds one slot, her other runs wait; bob takes the rest.
    assert_eq!(bench.started, ["alice0", "bob0", "bob1"]);
    bench.finish(Some("bob"));
    assert_eq!(bench.started[3], "bob2");
    bench.finish(Some("alice"));
    assert_eq!(bench.started[4], "alice1");
    assert_eq!(bench.gauge.key_snapshot("alice").running, 1);
    assert_eq!(bench.gauge.key_snapshot("alice").queued, 3);
}

#[test]
fn a_key_at_its_max_queued_is_turned_away_while_others_are_admitted() {
    let gauge = Gauge::new(1, 100);
    let limits = KeyLimits {
        max_queued: Some(2),
        ..KeyLimits::default()
    };
    let held: Vec<_> = (0..2)
        .map(|_| gauge.admit_for(Arc::from("alice"), limits).expect("room"))
        .collect();
    let refused = gauge.admit_for(Arc::from("alice"), limits).unwrap_err();
    assert_eq!(
        refused,
        AdmitError::KeyFull {
            key: Arc::from("alice"),
            max_queued: 2
        }
    );
    assert!(gauge.admit_for(Arc::from("bob"), limits).is_ok());
    drop(held);
    assert!(gauge.admit_for(Arc::from("alice"), limits).is_ok());
}

#[test]
fn a_weight_change_applies_to_later_admissions_only() {
    let mut bench = Bench::new(1);
    bench.submit("alice", 4, weight(1));
    bench.submit("bob", 2, weight(1));
    // Alice's weight goes up: her queued runs keep their place, her new ones are tagged closer.
    bench.submit("alice", 2, weight(4));
    bench.drain();
    assert_eq!(
        bench.started,
        ["alice0", "bob0", "alice1", "bob1", "alice2", "alice3", "alice0", "alice1"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_dispatch_until_its_instant() {
    let mut bench = Bench::new(1);
    bench.submit("alice", 1, KeyLimits::default());
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    bench.gauge.pause_until(until);
    assert_eq!(bench.gauge.paused_until(), Some(until));
    bench.submit("alice", 1, KeyLimits::default());
    bench.finish(None);
    // The slot is free but nothing new starts while paused.
    assert_eq!(bench.started, ["alice0"]);
    assert_eq!(bench.gauge.snapshot().queued, 1);
    tokio::time::sleep_until(until).await;
    tokio::task::yield_now().await;
    bench.collect();
    assert_eq!(bench.started, ["alice0", "alice0"]);
    assert_eq!(bench.gauge.paused_until(), None);
}

#[tokio::test(start_paused = true)]
async fn resume_ends_a_pause_early() {
    let mut bench = Bench::new(1);
    bench
        .gauge
        .pause_until(tokio::time::Instant::now() + Duration::from_secs(3600));
    bench.submit("bob", 1, KeyLimits::default());
    assert!(bench.started.is_empty());
    bench.gauge.resume();
    bench.collect();
    assert_eq!(bench.started, ["bob0"]);
}
