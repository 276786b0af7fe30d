//! One target's health, shared by every worker: whether active checks
//! hold it up, whether failed requests have ejected it, and how busy it is.
//! Plain atomics, so the request path never takes a lock for it.
//!
//! Passive ejection follows Envoy's outlier detection: `consecutive_failures`
//! failed requests in a row eject a target for `ejection_time`, doubled for
//! each ejection in a row up to `max_ejection_time`. When that time is up the
//! target is not simply trusted again: exactly one request is let through
//! as a trial (or an active check answers first), and only its success
//! brings the target back, while its failure ejects it again for longer.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::millis;
use crate::config::{PassiveHealth, ServiceTarget};

/// What a target can take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Up,
    /// Ejected, its time not yet up.
    Ejected,
    /// Ejected, its time up: one trial request may go.
    TrialDue,
    /// Held down by active checks.
    Down,
}

/// One target of a service and its shared state.
#[derive(Debug)]
pub struct Target {
    pub config: ServiceTarget,
    /// Its name in logs, metrics and the admin API (see [`ServiceTarget::label`]).
    label: String,
    pub(super) in_flight: AtomicU32,
    /// Failed requests in a row.
    failures: AtomicU32,
    /// 0 when in service; else the clock time (ms) the ejection ends.
    ejected_until: AtomicU64,
    /// Ejections in a row, which lengthen the next one.
    ejections: AtomicU32,
    /// When the target last came back from an ejection (ms).
    restored_at: AtomicU64,
    /// A trial request is out.
    trial: AtomicBool,
    /// Active checks: down after `fall` failures in a row, up after `rise`
    /// successes in a row. Up until a check says otherwise.
    checked_up: AtomicBool,
    /// Active checks in a row: positive successes, negative failures.
    check_streak: AtomicI32,
    /// When the next active check is due (ms); 0 at once.
    pub(super) next_check: AtomicU64,
    /// Requests sent to the target, and those that failed, for metrics.
    pub(super) requests: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) ejected_total: AtomicU64,
}

/// What one finished request says about its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// A connect error, a timeout, or a `502`, `503` or `504`.
    Failure,
}

/// What reporting a request changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Ejected(Duration),
    Restored,
}

impl Target {
    pub fn new(config: ServiceTarget) -> Target {
        Target {
            label: config.label(),
            config,
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            restored_at: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            checked_up: AtomicBool::new(true),
            check_streak: AtomicI32::new(0),
            next_check: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            ejected_total: AtomicU64::new(0),
        }
    }

    /// The target's URL as configured, and the address it stands for when
    /// the URL's host name was resolved.
    pub fn name(&self) -> &str {
        &self.label
    }

    pub fn availability(&self, now_ms: u64) -> Availability {
        if !self.checked_up.load(Ordering::Relaxed) {
            return Availability::Down;
        }
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => Availability::Up,
            until if now_ms < until => Availability::Ejected,
            _ => Availability::TrialDue,
        }
    }

    /// Claims the one trial request of a target whose ejection is up.
    pub(super) fn claim_trial(&self) -> bool {
        self.trial
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives a trial back unanswered (the request was cancelled).
    pub(super) fn release_trial(&self) {
        self.trial.store(false, Ordering::Release);
    }

    /// Counts a finished request. `may_eject`: whether the service can
    /// spare this target (it is never the last healthy one).
    pub(super) fn report(
        &self,
        verdict: Verdict,
        trial: bool,
        passive: &PassiveHealth,
        may_eject: bool,
        now_ms: u64,
    ) -> Change {
        match verdict {
            Verdict::Success => {
                self.failures.store(0, Ordering::Relaxed);
                if trial || self.ejected_until.load(Ordering::Relaxed) != 0 {
                    return self.restore(now_ms);
                }
                Change::None
            }
            Verdict::Failure => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if trial {
                    // The trial failed: out again, for longer.
                    self.trial.store(false, Ordering::Release);
                    return self.eject(passive, true, now_ms);
                }
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if passive.consecutive_failures == 0
                    || failures < passive.consecutive_failures
                    || !may_eject
                    || self.ejected_until.load(Ordering::Relaxed) != 0
                {
                    return Change::None;
                }
                self.eject(passive, false, now_ms)
            }
        }
    }

    /// Ejects the target; `again`: its trial just failed.
    fn eject(&self, passive: &PassiveHealth, again: bool, now_ms: u64) -> Change {
        let restored = self.restored_at.load(Ordering::Relaxed);
        let long_ago = now_ms.saturating_sub(restored) > millis(passive.max_ejection_time);
        if !again && long_ago {
            // A target that stayed well for a while starts afresh.
            self.ejections.store(0, Ordering::Relaxed);
        }
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        self.ejected_total.fetch_add(1, Ordering::Relaxed);
        let factor = 1u32 << (ejections - 1).min(16);
        let time = passive
            .ejection_time
            .saturating_mul(factor)
            .min(passive.max_ejection_time);
        self.failures.store(0, Ordering::Relaxed);
        self.ejected_until
            .store(now_ms + millis(time).max(1), Ordering::Relaxed);
        Change::Ejected(time)
    }

    fn restore(&self, now_ms: u64) -> Change {
        self.trial.store(false, Ordering::Release);
        if self.ejected_until.swap(0, Ordering::Relaxed) == 0 {
            return Change::None;
        }
        self.restored_at.store(now_ms, Ordering::Relaxed);
        Change::Restored
    }

    /// Counts an active check's result: `Some(up)` when the target's
    /// checked state flips. A good check also ends an ejection whose time
    /// is up, standing in for the trial request.
    pub(super) fn record_check(
        &self,
        passed: bool,
        fall: u32,
        rise: u32,
        now_ms: u64,
    ) -> (Option<bool>, Change) {
        let streak = self.check_streak.load(Ordering::Relaxed);
        let streak = match (passed, streak > 0) {
            (true, true) => streak.saturating_add(1),
            (true, false) => 1,
            (false, false) => streak.saturating_sub(1),
            (false, true) => -1,
        };
        self.check_streak.store(streak, Ordering::Relaxed);
        let was_up = self.checked_up.load(Ordering::Relaxed);
        let flip = if was_up && streak <= -(fall as i32) {
            self.checked_up.store(false, Ordering::Relaxed);
            Some(false)
        } else if !was_up && streak >= rise as i32 {
            self.checked_up.store(true, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.restored_at.store(now_ms, Ordering::Relaxed);
            Some(true)
        } else {
            None
        };
        let until = self.ejected_until.load(Ordering::Relaxed);
        let change = if passed && until != 0 && now_ms >= until {
            self.restore(now_ms)
        } else {
            Change::None
        };
        (flip, change)
    }

    /// The share of its full weight a target just back in service gets
    /// now, growing linearly over `slow_start`; `None` once it is through.
    pub fn warming(&self, now_ms: u64, slow_start: Duration) -> Option<f64> {
        let restored = self.restored_at.load(Ordering::Relaxed);
        let ramp = millis(slow_start);
        let elapsed = now_ms.saturating_sub(restored);
        (restored != 0 && elapsed < ramp).then(|| elapsed as f64 / ramp as f64)
    }

    /// For the admin API: the target's state now.
    pub fn state_name(&self, now_ms: u64) -> &'static str {
        match self.availability(now_ms) {
            Availability::Up => "up",
            Availability::Ejected => "ejected",
            Availability::TrialDue => "trial",
            Availability::Down => "down",
        }
    }

    /// When the current ejection ends (ms), if ejected.
    pub fn ejected_until(&self) -> Option<u64> {
        Some(self.ejected_until.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Tries sent to the target, those that failed, and its ejections.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.ejected_total.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Upstream;

    fn target() -> Target {
        Target::new(ServiceTarget {
            upstream: Upstream::parse("http://127.0.0.1:1").unwrap(),
            weight: 1,
            address: None,
        })
    }

    fn passive() -> PassiveHealth {
        PassiveHealth {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_trial_brings_back() {
        let t = target();
        let p = passive();
        assert_eq!(t.report(Verdict::Failure, false, &p, true, 0), Change::None);
        assert_eq!(t.report(Verdict::Failure, false, &p, true, 0), Change::None);
        // A success in between starts the count again.
        assert_eq!(t.report(Verdict::Success, false, &p, true, 0), Change::None);
        for _ in 0..2 {
            t.report(Verdict::Failure, false, &p, true, 0);
        }
        assert_eq!(
            t.report(Verdict::Failure, false, &p, true, 1_000),
            Change::Ejected(Duration::from_secs(10))
        );
        assert_eq!(t.availability(10_999), Availability::Ejected);
        assert_eq!(t.availability(11_000), Availability::TrialDue);
        // One trial at a time.
        assert!(t.claim_trial());
        assert!(!t.claim_trial());
        // The trial fails: ejected again, twice as long.
        assert_eq!(
            t.report(Verdict::Failure, true, &p, true, 11_000),
            Change::Ejected(Duration::from_secs(20))
        );
        assert_eq!(t.availability(30_999), Availability::Ejected);
        assert!(t.claim_trial());
        // Capped at the maximum.
        assert_eq!(
            t.report(Verdict::Failure, true, &p, true, 31_000),
            Change::Ejected(Duration::from_secs(25))
        );
        assert!(t.claim_trial());
        assert_eq!(
            t.report(Verdict::Success, true, &p, true, 56_000),
            Change::Restored
        );
        assert_eq!(t.availability(56_000), Availability::Up);
        assert!(t.claim_trial(), "the trial flag is free again");
        t.release_trial();
    }

    #[test]
    fn the_last_healthy_target_is_not_ejected() {
        let t = target();
        let p = passive();
        for _ in 0..10 {
            assert_eq!(
                t.report(Verdict::Failure, false, &p, false, 0),
                Change::None
            );
        }
        assert_eq!(t.availability(0), Availability::Up);
        // Once another can take over, the next failure ejects it.
        assert!(matches!(
            t.report(Verdict::Failure, false, &p, true, 0),
            Change::Ejected(_)
        ));
    }

    #[test]
    fn a_long_good_spell_resets_the_ejection_length() {
        let t = target();
        let p = passive();
        let eject = |at| {
            for _ in 0..3 {
                t.report(Verdict::Failure, false, &p, true, at);
            }
        };
        eject(0);
        t.report(Verdict::Success, true, &p, true, 10_000);
        eject(11_000);
        assert_eq!(t.ejected_until(), Some(31_000), "soon after: doubled");
        t.report(Verdict::Success, true, &p, true, 31_000);
        eject(31_000 + 25_001);
        assert_eq!(t.ejected_until(), Some(66_001), "long after: the base time");
    }

    #[test]
    fn active_checks_need_fall_and_rise_in_a_row() {
        let t = target();
        let check = |passed| t.record_check(passed, 3, 2, 0).0;
        assert_eq!(check(false), None);
        assert_eq!(check(false), None);
        assert_eq!(check(true), None, "one success breaks the run");
        assert_eq!(check(false), None);
        assert_eq!(check(false), None);
        assert_eq!(check(false), Some(false));
        assert_eq!(t.availability(0), Availability::Down);
        assert_eq!(check(true), None, "one success is not enough");
        assert_eq!(check(false), None);
        assert_eq!(check(true), None);
        assert_eq!(check(true), Some(true));
        assert_eq!(t.availability(0), Availability::Up);
    }

    #[test]
    fn a_good_check_ends_an_ejection_whose_time_is_up() {
        let t = target();
        let p = passive();
        for _ in 0..3 {
            t.report(Verdict::Failure, false, &p, true, 0);
        }
        assert_eq!(t.record_check(true, 3, 2, 5_000).1, Change::None);
        assert_eq!(t.availability(5_000), Availability::Ejected);
        assert_eq!(t.record_check(true, 3, 2, 10_000).1, Change::Restored);
        assert_eq!(t.availability(10_000), Availability::Up);
    }
}
