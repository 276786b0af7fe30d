//! The error-ratio circuit breaker of a service: when too many of its
//! requests fail within a window it opens and refuses requests at once
//! (rather than let them wait on a failing service), then lets a few
//! trial requests through, and closes only when they all succeed.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::millis;
use crate::config::BreakerConfig;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// A breaker's state, shared by every worker.
#[derive(Debug, Default)]
pub struct Breaker {
    state: AtomicU8,
    /// When the current counting window began (ms).
    window_start: AtomicU64,
    requests: AtomicU32,
    failures: AtomicU32,
    /// When it last opened, or went half-open (ms).
    since: AtomicU64,
    /// Trial requests let through while half-open, and those that succeeded.
    trials: AtomicU32,
    trials_passed: AtomicU32,
    /// Times it opened, for metrics.
    pub(super) opened: AtomicU64,
}

/// What a breaker said of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// A half-open trial: its outcome decides.
    Trial,
    No,
}

impl Breaker {
    /// Whether a request may go now.
    pub fn admit(&self, config: &BreakerConfig, now: u64) -> Admit {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admit::Yes,
            state => {
                let since = self.since.load(Ordering::Relaxed);
                let over = now.saturating_sub(since) >= millis(config.open_time);
                if state == OPEN && !over {
                    return Admit::No;
                }
                if over {
                    // Open long enough, or half-open with trials that never
                    // answered: a fresh round of trials.
                    if self
                        .state
                        .compare_exchange(state, HALF_OPEN, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.trials.store(0, Ordering::Relaxed);
                        self.trials_passed.store(0, Ordering::Relaxed);
                        self.since.store(now, Ordering::Relaxed);
                    }
                }
                let taken = self
                    .trials
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                        (n < config.trial_requests).then_some(n + 1)
                    });
                if taken.is_ok() {
                    Admit::Trial
                } else {
                    Admit::No
                }
            }
        }
    }

    /// Counts a finished request.
    pub fn record(&self, config: &BreakerConfig, failed: bool, now: u64) {
        match self.state.load(Ordering::Acquire) {
            CLOSED => {
                let start = self.window_start.load(Ordering::Relaxed);
                if now.saturating_sub(start) >= millis(config.window)
                    && self
                        .window_start
                        .compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    self.requests.store(0, Ordering::Relaxed);
                    self.failures.store(0, Ordering::Relaxed);
                }
                let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
                let failures = self.failures.load(Ordering::Relaxed) + u32::from(failed);
                if failed {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
                if requests >= config.min_requests
                    && u64::from(failures) * 100
                        >= u64::from(config.failure_percent) * u64::from(requests)
                {
                    self.open(CLOSED, now);
                }
            }
            HALF_OPEN if failed => self.open(HALF_OPEN, now),
            HALF_OPEN => {
                let passed = self.trials_passed.fetch_add(1, Ordering::Relaxed) + 1;
                if passed >= config.trial_requests
                    && self
                        .state
                        .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    self.window_start.store(now, Ordering::Relaxed);
                    self.requests.store(0, Ordering::Relaxed);
                    self.failures.store(0, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    fn open(&self, from: u8, now: u64) {
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.since.store(now, Ordering::Relaxed);
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Time left until an open breaker tries again (ms).
    pub fn remaining_ms(&self, config: &BreakerConfig, now: u64) -> u64 {
        let until = self.since.load(Ordering::Relaxed) + millis(config.open_time);
        until.saturating_sub(now)
    }

    /// `closed`, `open` or `half_open`.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            CLOSED => "closed",
            OPEN => "open",
            _ => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_percent: 50,
            window: Duration::from_secs(10),
            min_requests: 4,
            open_time: Duration::from_secs(5),
            trial_requests: 2,
        }
    }

    #[test]
    fn opens_on_the_failure_ratio_and_closes_after_good_trials() {
        let (b, c) = (Breaker::default(), config());
        // Too few requests to judge, however many failed.
        for _ in 0..3 {
            b.record(&c, true, 1);
        }
        assert_eq!(b.admit(&c, 1), Admit::Yes);
        b.record(&c, false, 1);
        // 3 of 4 failed: open, and it refuses at once.
        assert_eq!(b.state_name(), "open");
        assert_eq!(b.admit(&c, 2), Admit::No);
        // After open_time: two trials, no more.
        assert_eq!(b.admit(&c, 5_001), Admit::Trial);
        assert_eq!(b.admit(&c, 5_001), Admit::Trial);
        assert_eq!(b.admit(&c, 5_001), Admit::No);
        b.record(&c, false, 5_002);
        assert_eq!(b.state_name(), "half_open");
        b.record(&c, false, 5_003);
        assert_eq!(b.state_name(), "closed");
        assert_eq!(b.admit(&c, 5_004), Admit::Yes);
        assert_eq!(b.opened.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let (b, c) = (Breaker::default(), config());
        for _ in 0..4 {
            b.record(&c, true, 1);
        }
        assert_eq!(b.admit(&c, 6_000), Admit::Trial);
        b.record(&c, true, 6_001);
        assert_eq!(b.state_name(), "open");
        assert_eq!(b.admit(&c, 6_002), Admit::No);
    }

    #[test]
    fn trials_that_never_answer_are_given_another_round() {
        let (b, c) = (Breaker::default(), config());
        for _ in 0..4 {
            b.record(&c, true, 1);
        }
        assert_eq!(b.admit(&c, 6_000), Admit::Trial);
        assert_eq!(b.admit(&c, 6_000), Admit::Trial);
        assert_eq!(b.admit(&c, 6_001), Admit::No);
        assert_eq!(b.admit(&c, 11_001), Admit::Trial);
    }

    #[test]
    fn a_new_window_forgets_old_failures() {
        let (b, c) = (Breaker::default(), config());
        for _ in 0..3 {
            b.record(&c, true, 1);
        }
        // The next window: one success is one of one.
        b.record(&c, false, 10_002);
        for _ in 0..3 {
            b.record(&c, false, 10_003);
        }
        assert_eq!(b.state_name(), "closed");
    }
}
