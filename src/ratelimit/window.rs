//! Sliding-window counter arithmetic: the current and previous fixed
//! windows, the previous weighted by how much of it still overlaps the
//! sliding window. Pure functions of time, so they are tested exactly.

/// Counts for one key: the current fixed window and the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowCounter {
    /// Start of the current fixed window, in Unix milliseconds (a multiple of the window).
    pub window_start: u64,
    pub current: u64,
    pub previous: u64,
}

/// The outcome of asking for one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Requests left in the sliding window after this one.
    pub remaining: u64,
    /// Milliseconds until the estimate drops enough to admit one more request
    /// (0 when allowed now).
    pub retry_after_ms: u64,
    /// Milliseconds until the current fixed window ends.
    pub reset_after_ms: u64,
}

impl WindowCounter {
    /// Moves the windows forward to the one containing `now`.
    fn roll(&mut self, now: u64, window: u64) {
        let start = now - now % window;
        if start == self.window_start {
            return;
        }
        self.previous = if start == self.window_start + window {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.window_start = start;
    }

    /// The weighted count of requests in the sliding window ending at `now`.
    fn estimate(&self, now: u64, window: u64) -> f64 {
        let elapsed = (now - self.window_start) as f64 / window as f64;
        self.previous as f64 * (1.0 - elapsed) + self.current as f64
    }

    /// Admits one request (and counts it) if the sliding estimate is below `limit`.
    pub fn acquire(&mut self, now: u64, window: u64, limit: u64) -> Decision {
        self.decide(now, window, limit, true)
    }

    /// Reports the state without counting anything.
    pub fn peek(&mut self, now: u64, window: u64, limit: u64) -> Decision {
        self.decide(now, window, limit, false)
    }

    /// Takes back one count, if the window it was counted in is still current.
    pub fn release(&mut self, now: u64, window: u64) {
        if now - now % window == self.window_start {
            self.current = self.current.saturating_sub(1);
        }
    }

    /// Counts one event unconditionally (e.g. a failed login).
    pub fn record(&mut self, now: u64, window: u64) {
        self.roll(now, window);
        self.current += 1;
    }

    fn decide(&mut self, now: u64, window: u64, limit: u64, count: bool) -> Decision {
        self.roll(now, window);
        let allowed = self.estimate(now, window) + 1.0 <= limit as f64;
        if allowed && count {
            self.current += 1;
        }
        self.report(now, window, limit, allowed)
    }

    /// The decision a counter standing as it does at `now` (rolled to the
    /// window containing it, and counting the request if `allowed`) gives.
    /// Shared counters decide in Redis and report here, the same way.
    pub fn report(&self, now: u64, window: u64, limit: u64, allowed: bool) -> Decision {
        let reset_after_ms = self.window_start + window - now;
        let used = self.estimate(now, window).ceil() as u64;
        Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(used),
            retry_after_ms: if allowed {
                0
            } else {
                self.retry_after(now, window, limit)
            },
            reset_after_ms,
        }
    }

    /// How long until one more request fits: the previous window's weight
    /// decays linearly; if the current window alone is full, wait for it to end.
    fn retry_after(&self, now: u64, window: u64, limit: u64) -> u64 {
        let elapsed = now - self.window_start;
        let room = limit as f64 - 1.0 - self.current as f64;
        if room < 0.0 || self.previous == 0 {
            // The current window alone is at the limit: after it ends, its count
            // becomes the weighted previous one; wait until that has decayed enough.
            let next_previous = self.current as f64;
            let fraction = if next_previous == 0.0 {
                0.0
            } else {
                (1.0 - (limit as f64 - 1.0) / next_previous).max(0.0)
            };
            return window - elapsed + (fraction * window as f64).ceil() as u64;
        }
        // previous * (1 - t/window) <= room  ⇒  t >= window * (1 - room/previous)
        let t = (window as f64 * (1.0 - room / self.previous as f64)).ceil() as u64;
        t.saturating_sub(elapsed).max(1)
    }

    /// The sliding-window count at `now`, rounded up.
    pub fn used(mut self, now: u64, window: u64) -> u64 {
        self.roll(now, window);
        self.estimate(now, window).ceil() as u64
    }

    /// True once the counter can no longer affect any decision.
    pub fn is_expired(&self, now: u64, window: u64) -> bool {
        now >= self.window_start + 2 * window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 60_000;

    #[test]
    fn admits_exactly_the_limit_within_one_window() {
        let mut c = WindowCounter::default();
        let t0 = 10 * W;
        let admitted = (0..100)
            .filter(|i| c.acquire(t0 + i, W, 50).allowed)
            .count();
        assert_eq!(admitted, 50);
        let d = c.peek(t0 + 100, W, 50);
        assert_eq!(d.remaining, 0);
        assert!(!c.acquire(t0 + 100, W, 50).allowed);
    }

    #[test]
    fn no_double_burst_at_the_window_boundary() {
        let mut c = WindowCounter::default();
        let end = 11 * W;
        // Fill the limit just before the boundary...
        for i in 0..50 {
            assert!(c.acquire(end - 10 - i, W, 50).allowed || i > 0);
        }
        // ...then right after it the previous window still weighs almost fully.
        let admitted = (0..50)
            .filter(|i| c.acquire(end + i, W, 50).allowed)
            .count();
        assert!(
            admitted <= 1,
            "admitted {admitted} right after the boundary"
        );
        // Half a window later, about half the limit is available again.
        let mut later = c;
        let admitted = (0..50)
            .filter(|i| later.acquire(end + W / 2 + i, W, 50).allowed)
            .count();
        assert!(
            (24..=26).contains(&admitted),
            "admitted {admitted} half a window later"
        );
    }

    #[test]
    fn retry_after_points_to_when_a_request_fits() {
        let mut c = WindowCounter::default();
        let t0 = 20 * W;
        for _ in 0..10 {
            c.acquire(t0, W, 10);
        }
        let d = c.acquire(t0 + 1000, W, 10);
        assert!(!d.allowed);
        let wait = d.retry_after_ms;
        let mut probe = c;
        assert!(!probe.peek(t0 + 1000 + wait - 2, W, 10).allowed || wait <= 2);
        assert!(c.acquire(t0 + 1000 + wait, W, 10).allowed);
    }

    #[test]
    fn counters_expire_after_two_windows() {
        let mut c = WindowCounter::default();
        c.record(5 * W, W);
        assert!(!c.is_expired(6 * W + 1, W));
        assert!(c.is_expired(7 * W, W));
        let d = c.peek(7 * W, W, 1);
        assert!(d.allowed);
    }
}
