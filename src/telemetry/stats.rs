//! Per-second traffic statistics for the admin console: the last
//! [`WINDOW_SECONDS`] seconds, overall and per route, in fixed-size rings.
//!
//! The request path only counts: each worker thread adds its requests to
//! its own shard (an uncontended lock) holding this second's counts and a
//! small log-scale latency histogram per route. Once a second
//! [`Stats::run_ticker`] takes the shards' contents, merges them, computes
//! the percentiles and writes one [`Slot`] per series into the rings, so a
//! ring holds a few numbers per second and no histogram.
//!
//! Memory is bounded: at most [`MAX_ROUTES`] routes have their own series
//! (routes come and go at runtime), the rest share [`OTHER_ROUTES`], and a
//! route silent for the whole window loses its series.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Seconds of history kept.
pub const WINDOW_SECONDS: usize = 900;
/// Routes with a series of their own; traffic of any further route is
/// counted under [`OTHER_ROUTES`].
pub const MAX_ROUTES: usize = 256;
/// The series of routes beyond [`MAX_ROUTES`]. Route ids cannot contain
/// parentheses, so it never names a real route.
pub const OTHER_ROUTES: &str = "(other)";

/// Worker threads map onto this many shards; two threads sharing one only
/// contend for it, they never lose counts.
const SHARDS: usize = 16;

/// What a finished request signalled besides its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// Answered `429 Too Many Requests`.
    pub rate_limited: bool,
    /// Refused by the gateway's authentication or authorisation.
    pub auth_failure: bool,
    /// The upstream exchange failed (connect, TLS, timeout, ...).
    pub upstream_error: bool,
}

/// Positions in the per-second counts.
const REQUESTS: usize = 0;
const S2XX: usize = 1;
const S5XX: usize = 4;
const RATE_LIMITED: usize = 5;
const AUTH_FAILURES: usize = 6;
const UPSTREAM_ERRORS: usize = 7;
const COUNTS: usize = 8;

// The latency histogram: microseconds, exact below 8 µs, then 8 buckets per
// power of two (at most 1/16 = 6.25 % from the bucket's middle) up to
// 2^26 µs (67 s); anything slower lands in the last bucket.
const SUB_BITS: u32 = 3;
const SUBS: usize = 1 << SUB_BITS;
const TOP_EXPONENT: u32 = 25;
const BUCKETS: usize = (TOP_EXPONENT - SUB_BITS + 2) as usize * SUBS;
const SLOWEST_US: u64 = (1 << (TOP_EXPONENT + 1)) - 1;
/// A slot's quantile when the second had no requests.
const NO_LATENCY: u8 = u8::MAX;
const _: () = assert!(BUCKETS <= NO_LATENCY as usize);

/// The histogram bucket of a latency in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < SUBS as u64 {
        return us as usize;
    }
    let us = us.min(SLOWEST_US);
    let exponent = 63 - us.leading_zeros();
    let sub = (us >> (exponent - SUB_BITS)) as usize & (SUBS - 1);
    (exponent - SUB_BITS + 1) as usize * SUBS + sub
}

/// The middle of a bucket, in milliseconds, rounded to the microsecond.
fn bucket_ms(bucket: u8) -> f64 {
    let bucket = bucket as usize;
    let middle_us = if bucket < SUBS {
        bucket as f64 + 0.5
    } else {
        let exponent = (bucket / SUBS) as u32 + SUB_BITS - 1;
        let width = 1u64 << (exponent - SUB_BITS);
        let low = (SUBS + bucket % SUBS) as u64 * width;
        low as f64 + width as f64 / 2.0
    };
    (middle_us).round() / 1000.0
}

/// One second's counts and latencies of one series, before the tick.
#[derive(Clone)]
struct Tally {
    counts: [u32; COUNTS],
    latency: [u32; BUCKETS],
}

impl Tally {
    const EMPTY: Tally = Tally {
        counts: [0; COUNTS],
        latency: [0; BUCKETS],
    };

    fn add(&mut self, class: Option<usize>, bucket: usize, flags: Flags) {
        self.counts[REQUESTS] += 1;
        if let Some(class) = class {
            self.counts[class] += 1;
        }
        self.counts[RATE_LIMITED] += flags.rate_limited as u32;
        self.counts[AUTH_FAILURES] += flags.auth_failure as u32;
        self.counts[UPSTREAM_ERRORS] += flags.upstream_error as u32;
        self.latency[bucket] += 1;
    }

    fn merge(&mut self, other: &Tally) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// The bucket holding quantile `q` (nearest rank).
    fn quantile(&self, q: f64, total: u64) -> u8 {
        if total == 0 {
            return NO_LATENCY;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (bucket, &n) in self.latency.iter().enumerate() {
            seen += n as u64;
            if seen >= rank {
                return bucket as u8;
            }
        }
        (BUCKETS - 1) as u8
    }

    fn slot(&self) -> Slot {
        let total: u64 = self.latency.iter().map(|&n| n as u64).sum();
        Slot {
            counts: self.counts,
            quantiles: [
                self.quantile(0.50, total),
                self.quantile(0.95, total),
                self.quantile(0.99, total),
            ],
        }
    }
}

/// The index in the counts of a status's class: 2xx to 5xx, nothing for 1xx.
fn class_of(status: u16) -> Option<usize> {
    match status {
        200..=299 => Some(S2XX),
        300..=399 => Some(S2XX + 1),
        400..=499 => Some(S2XX + 2),
        500.. => Some(S5XX),
        _ => None,
    }
}

/// One second of one series in a ring: 36 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    counts: [u32; COUNTS],
    /// Histogram buckets of p50, p95 and p99.
    quantiles: [u8; 3],
}

impl Slot {
    const EMPTY: Slot = Slot {
        counts: [0; COUNTS],
        quantiles: [NO_LATENCY; 3],
    };
}

/// Maps keyed by route id, hashed with FNV-1a: a route's requests hash its
/// id each time, and ids are short and chosen by the operator, not by
/// clients, so a fast hash without resistance to flooding is the right one.
type RouteMap<V> = HashMap<Box<str>, V, BuildHasherDefault<Fnv>>;

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One worker thread's counts for the second under way.
struct Shard {
    overall: Tally,
    routes: RouteMap<Tally>,
}

/// A shard on its own cache lines, so two workers never share one.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// The rings of one series: one slot per second of the window.
struct Series {
    slots: Box<[Slot]>,
    /// The last second with requests.
    last_active: u64,
}

impl Series {
    fn new(second: u64) -> Series {
        Series {
            slots: vec![Slot::EMPTY; WINDOW_SECONDS].into_boxed_slice(),
            last_active: second,
        }
    }

    fn slot_mut(&mut self, second: u64) -> &mut Slot {
        &mut self.slots[second as usize % WINDOW_SECONDS]
    }
}

/// The closed seconds.
struct Rings {
    /// The last second closed, once one has been.
    closed: Option<u64>,
    overall: Series,
    /// Per route id, and [`OTHER_ROUTES`].
    routes: RouteMap<Series>,
}

/// Requests per second over the last [`WINDOW_SECONDS`], overall and per
/// route. Shared by every worker; see the module documentation.
pub struct Stats {
    shards: Box<[Padded]>,
    rings: Mutex<Rings>,
    /// Unix second `epoch_unix` began at `epoch`: seconds are counted on the
    /// monotonic clock, so a wall-clock step neither reorders nor loses them.
    epoch: Instant,
    epoch_unix: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counts stay usable after a panic elsewhere; they are plain numbers.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let into_second = Duration::from_nanos(now.subsec_nanos() as u64);
        let instant = Instant::now();
        Stats {
            shards: (0..SHARDS)
                .map(|_| {
                    Padded(Mutex::new(Shard {
                        overall: Tally::EMPTY,
                        routes: RouteMap::default(),
                    }))
                })
                .collect(),
            rings: Mutex::new(Rings {
                closed: None,
                overall: Series::new(0),
                routes: RouteMap::default(),
            }),
            epoch: instant.checked_sub(into_second).unwrap_or(instant),
            epoch_unix: now.as_secs(),
        }
    }

    /// Counts one finished request (`route` is `None` when none matched: it
    /// counts overall only). Called on the request path: a lock only this
    /// thread normally takes, a few additions and, for a route's first
    /// request in a second, one allocation.
    pub fn record(&self, route: Option<&str>, status: u16, latency: Duration, flags: Flags) {
        let class = class_of(status);
        let bucket = bucket_of(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        let mut shard = lock(&self.shard().0);
        shard.overall.add(class, bucket, flags);
        let Some(route) = route else { return };
        if let Some(tally) = shard.routes.get_mut(route) {
            tally.add(class, bucket, flags);
            return;
        }
        let key = if shard.routes.len() < MAX_ROUTES {
            route
        } else {
            OTHER_ROUTES
        };
        shard
            .routes
            .entry(key.into())
            .or_insert(Tally::EMPTY)
            .add(class, bucket, flags);
    }

    /// This thread's shard.
    fn shard(&self) -> &Padded {
        &self.shards[super::thread_index() % SHARDS]
    }

    /// The current Unix second, on the monotonic clock.
    pub fn current_second(&self) -> u64 {
        self.epoch_unix + self.epoch.elapsed().as_secs()
    }

    /// Closes `second`: everything recorded since the last tick is counted
    /// in it, seconds skipped since the last tick are empty, and routes
    /// silent for the whole window are forgotten. A second not after the
    /// last one closed changes nothing; its requests go to the next.
    pub fn tick(&self, second: u64) {
        let mut rings = lock(&self.rings);
        if rings.closed.is_some_and(|closed| second <= closed) {
            return;
        }
        let mut overall = Tally::EMPTY;
        let mut routes = RouteMap::<Tally>::default();
        for shard in self.shards.iter() {
            let taken = {
                let mut shard = lock(&shard.0);
                overall.merge(&shard.overall);
                shard.overall = Tally::EMPTY;
                std::mem::take(&mut shard.routes)
            };
            for (route, tally) in taken {
                match routes.entry(route) {
                    MapEntry::Occupied(mut held) => held.get_mut().merge(&tally),
                    MapEntry::Vacant(free) => {
                        free.insert(tally);
                    }
                }
            }
        }
        rings.close(second, &overall, routes);
    }

    /// Closes each second as it ends, just after it ends; runs until the
    /// task is aborted.
    pub async fn run_ticker(&self) {
        loop {
            let next = self.epoch + Duration::from_secs(self.epoch.elapsed().as_secs() + 1);
            // A few milliseconds late, so a request finishing on the boundary
            // is not waiting on the lock when the second closes.
            tokio::time::sleep_until((next + Duration::from_millis(5)).into()).await;
            self.tick(self.current_second() - 1);
        }
    }

    /// The last `seconds` closed seconds (at most [`WINDOW_SECONDS`]),
    /// oldest first, in the admin API's shape. Every route with a series
    /// is listed, with zeros for seconds it was silent.
    pub fn snapshot(&self, seconds: usize) -> StatsSnapshot {
        let seconds = seconds.min(WINDOW_SECONDS);
        let rings = lock(&self.rings);
        let last = rings
            .closed
            .unwrap_or_else(|| self.current_second().saturating_sub(1));
        let start = (last + 1).saturating_sub(seconds as u64);
        let view = |series: &Series| SeriesView::of(series, start, seconds);
        let overall = view(&rings.overall);
        let routes = rings
            .routes
            .iter()
            .map(|(id, series)| (id.to_string(), view(series)))
            .collect();
        let totals = Totals::of(&rings.overall, start, seconds);
        StatsSnapshot {
            interval_seconds: 1,
            start,
            seconds,
            overall,
            routes,
            totals,
        }
    }

    /// Routes with a series of their own (and [`OTHER_ROUTES`] when used).
    pub fn tracked_routes(&self) -> usize {
        lock(&self.rings).routes.len()
    }
}

impl Rings {
    fn close(&mut self, second: u64, overall: &Tally, tallies: RouteMap<Tally>) {
        // Every series gets every second, so a slot always belongs to the
        // current lap of its ring: clear those skipped since the last tick.
        let window = WINDOW_SECONDS as u64;
        let first = match self.closed {
            Some(closed) => (closed + 1).max(second.saturating_sub(window - 1)),
            None => second,
        };
        for series in std::iter::once(&mut self.overall).chain(self.routes.values_mut()) {
            for skipped in first..second {
                *series.slot_mut(skipped) = Slot::EMPTY;
            }
            *series.slot_mut(second) = Slot::EMPTY;
        }
        self.closed = Some(second);
        if overall.counts[REQUESTS] > 0 {
            *self.overall.slot_mut(second) = overall.slot();
            self.overall.last_active = second;
        }

        let mut other: Option<Tally> = None;
        for (route, tally) in tallies {
            let own = self.routes.len() - self.routes.contains_key(OTHER_ROUTES) as usize;
            let tracked =
                &*route != OTHER_ROUTES && (own < MAX_ROUTES || self.routes.contains_key(&route));
            let series = tracked.then(|| {
                self.routes
                    .entry(route)
                    .or_insert_with(|| Series::new(second))
            });
            match series {
                Some(series) => {
                    *series.slot_mut(second) = tally.slot();
                    series.last_active = second;
                }
                None => other.get_or_insert(Tally::EMPTY).merge(&tally),
            }
        }
        if let Some(other) = other {
            let series = self
                .routes
                .entry(OTHER_ROUTES.into())
                .or_insert_with(|| Series::new(second));
            *series.slot_mut(second) = other.slot();
            series.last_active = second;
        }
        self.routes
            .retain(|_, series| second - series.last_active < window);
    }
}

/// The seconds of one series, in the admin API's shape: arrays of equal
/// length, oldest first.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SeriesView {
    pub requests: Vec<u32>,
    pub s2xx: Vec<u32>,
    pub s3xx: Vec<u32>,
    pub s4xx: Vec<u32>,
    pub s5xx: Vec<u32>,
    pub rate_limited: Vec<u32>,
    pub auth_failures: Vec<u32>,
    pub upstream_errors: Vec<u32>,
    pub p50_ms: Vec<Option<f64>>,
    pub p95_ms: Vec<Option<f64>>,
    pub p99_ms: Vec<Option<f64>>,
}

impl SeriesView {
    fn of(series: &Series, start: u64, seconds: usize) -> SeriesView {
        let mut view = SeriesView::default();
        let columns = [
            &mut view.requests,
            &mut view.s2xx,
            &mut view.s3xx,
            &mut view.s4xx,
            &mut view.s5xx,
            &mut view.rate_limited,
            &mut view.auth_failures,
            &mut view.upstream_errors,
        ];
        let slots =
            || (start..start + seconds as u64).map(|s| series.slots[s as usize % WINDOW_SECONDS]);
        for (i, column) in columns.into_iter().enumerate() {
            *column = slots().map(|slot| slot.counts[i]).collect();
        }
        let quantile = |i: usize| {
            slots()
                .map(|slot| (slot.quantiles[i] != NO_LATENCY).then(|| bucket_ms(slot.quantiles[i])))
                .collect()
        };
        view.p50_ms = quantile(0);
        view.p95_ms = quantile(1);
        view.p99_ms = quantile(2);
        view
    }
}

/// Sums over the seconds of a snapshot.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
    pub rate_limited: u64,
    pub auth_failures: u64,
    pub upstream_errors: u64,
}

impl Totals {
    fn of(series: &Series, start: u64, seconds: usize) -> Totals {
        let mut sums = [0u64; COUNTS];
        for second in start..start + seconds as u64 {
            let slot = &series.slots[second as usize % WINDOW_SECONDS];
            for (sum, &n) in sums.iter_mut().zip(&slot.counts) {
                *sum += n as u64;
            }
        }
        let [requests, s2xx, s3xx, s4xx, s5xx, rate_limited, auth_failures, upstream_errors] = sums;
        Totals {
            requests,
            s2xx,
            s3xx,
            s4xx,
            s5xx,
            rate_limited,
            auth_failures,
            upstream_errors,
        }
    }
}

/// `GET /admin/api/stats`: slot `i` of every array is second `start + i`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsSnapshot {
    pub interval_seconds: u32,
    pub start: u64,
    pub seconds: usize,
    pub overall: SeriesView,
    pub routes: BTreeMap<String, SeriesView>,
    pub totals: Totals,
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Flags = Flags {
        rate_limited: false,
        auth_failure: false,
        upstream_error: false,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn buckets_cover_the_range_in_order() {
        let mut last = 0;
        for us in [
            0,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            100,
            1000,
            65_535,
            1 << 20,
            SLOWEST_US,
        ] {
            let bucket = bucket_of(us);
            assert!(bucket >= last, "{us} µs went backwards");
            assert!(bucket < BUCKETS);
            last = bucket;
            // The middle of its bucket is within 1/16 of the value.
            let middle_us = bucket_ms(bucket as u8) * 1000.0;
            assert!(
                (middle_us - us as f64).abs() <= (us as f64 / 16.0).max(0.5) + 0.5,
                "{us} µs reads as {middle_us}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(SLOWEST_US + 1), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_known_latencies() {
        let stats = Stats::new();
        // 1..=100 ms: p50 is 50 ms, p95 95 ms, p99 99 ms, each within a bucket.
        for n in 1..=100 {
            stats.record(Some("api"), 200, ms(n), OK);
        }
        stats.tick(1000);
        let snap = stats.snapshot(1);
        for (got, want) in [
            (snap.overall.p50_ms[0], 50.0),
            (snap.overall.p95_ms[0], 95.0),
            (snap.overall.p99_ms[0], 99.0),
            (snap.routes["api"].p99_ms[0], 99.0),
        ] {
            let got = got.expect("requests were made");
            assert!((got - want).abs() <= want / 16.0, "{got} for {want}");
        }
        // One slow request in a hundred moves p99, not p50.
        for _ in 0..99 {
            stats.record(None, 200, ms(1), OK);
        }
        stats.record(None, 200, ms(2000), OK);
        stats.tick(1001);
        let snap = stats.snapshot(1);
        assert!(snap.overall.p50_ms[0].unwrap() < 1.1);
        assert!(snap.overall.p95_ms[0].unwrap() < 1.1);
        assert!(
            snap.overall.p99_ms[0].unwrap() < 1.1,
            "nearest rank 99 is still 1 ms"
        );
        stats.record(None, 200, ms(2000), OK);
        stats.tick(1002);
        let p99 = stats.snapshot(1).overall.p99_ms[0].unwrap();
        assert!((p99 - 2000.0).abs() < 2000.0 / 16.0, "{p99}");
    }

    #[test]
    fn counts_status_classes_and_flags() {
        let stats = Stats::new();
        stats.record(Some("a"), 101, ms(1), OK);
        stats.record(Some("a"), 204, ms(1), OK);
        stats.record(Some("a"), 302, ms(1), OK);
        stats.record(Some("a"), 404, ms(1), OK);
        let limited = Flags {
            rate_limited: true,
            ..OK
        };
        stats.record(Some("a"), 429, ms(1), limited);
        let denied = Flags {
            auth_failure: true,
            ..OK
        };
        stats.record(Some("b"), 401, ms(1), denied);
        let failed = Flags {
            upstream_error: true,
            ..OK
        };
        stats.record(Some("b"), 502, ms(1), failed);
        stats.record(None, 404, ms(1), OK);
        stats.tick(50);
        let snap = stats.snapshot(1);
        let a = &snap.routes["a"];
        assert_eq!(
            (a.requests[0], a.s2xx[0], a.s3xx[0], a.s4xx[0], a.s5xx[0]),
            (5, 1, 1, 2, 0)
        );
        assert_eq!(a.rate_limited[0], 1);
        let b = &snap.routes["b"];
        assert_eq!(
            (b.auth_failures[0], b.upstream_errors[0], b.s5xx[0]),
            (1, 1, 1)
        );
        assert_eq!(snap.overall.requests[0], 8);
        assert_eq!(
            snap.totals,
            Totals {
                requests: 8,
                s2xx: 1,
                s3xx: 1,
                s4xx: 4,
                s5xx: 1,
                rate_limited: 1,
                auth_failures: 1,
                upstream_errors: 1,
            }
        );
    }

    #[test]
    fn empty_seconds_have_zeros_and_no_latency() {
        let stats = Stats::new();
        stats.record(Some("a"), 200, ms(3), OK);
        stats.tick(100);
        // Nothing in 101, and the ticks for 102..104 never ran.
        stats.tick(101);
        stats.record(Some("a"), 200, ms(3), OK);
        stats.tick(105);
        let snap = stats.snapshot(6);
        assert_eq!(snap.start, 100);
        assert_eq!(snap.seconds, 6);
        assert_eq!(snap.overall.requests, [1, 0, 0, 0, 0, 1]);
        assert_eq!(snap.routes["a"].requests, [1, 0, 0, 0, 0, 1]);
        assert!(snap.overall.p50_ms[0].is_some());
        assert_eq!(snap.overall.p50_ms[1..5], [None; 4]);
        assert!(snap.overall.p99_ms[5].is_some());
        assert_eq!(snap.totals.requests, 2);
        // Arrays all have the asked-for length, even before any tick.
        let fresh = Stats::new().snapshot(WINDOW_SECONDS + 10);
        assert_eq!(fresh.seconds, WINDOW_SECONDS);
        assert_eq!(fresh.overall.p95_ms.len(), WINDOW_SECONDS);
        assert!(fresh.overall.requests.iter().all(|&n| n == 0));
        assert!(fresh.routes.is_empty());
    }

    #[test]
    fn a_repeated_second_waits_for_the_next() {
        let stats = Stats::new();
        stats.tick(10);
        stats.record(None, 200, ms(1), OK);
        stats.tick(10);
        stats.tick(9);
        assert_eq!(stats.snapshot(1).overall.requests, [0]);
        stats.tick(11);
        assert_eq!(stats.snapshot(2).overall.requests, [0, 1]);
    }

    #[test]
    fn the_ring_wraps_around() {
        let stats = Stats::new();
        let window = WINDOW_SECONDS as u64;
        for second in 0..window * 2 + 7 {
            for _ in 0..second % 5 {
                stats.record(Some("r"), 200, ms(1), OK);
            }
            stats.tick(second);
        }
        let last = window * 2 + 6;
        let snap = stats.snapshot(WINDOW_SECONDS);
        assert_eq!(snap.start, last + 1 - window);
        let expected: Vec<u32> = (snap.start..=last).map(|s| (s % 5) as u32).collect();
        assert_eq!(snap.overall.requests, expected);
        assert_eq!(snap.routes["r"].requests, expected);
        // A gap longer than the window clears everything.
        stats.tick(last + window + 3);
        let snap = stats.snapshot(WINDOW_SECONDS);
        assert!(snap.overall.requests.iter().all(|&n| n == 0));
    }

    #[test]
    fn routes_beyond_the_cap_share_the_other_series() {
        let stats = Stats::new();
        for i in 0..MAX_ROUTES + 10 {
            stats.record(Some(&format!("r{i}")), 200, ms(1), OK);
        }
        stats.tick(1);
        let snap = stats.snapshot(1);
        assert_eq!(snap.routes.len(), MAX_ROUTES + 1);
        assert_eq!(snap.routes[OTHER_ROUTES].requests, [10]);
        let own: u32 = snap
            .routes
            .iter()
            .filter(|(id, _)| *id != OTHER_ROUTES)
            .map(|(_, s)| s.requests[0])
            .sum();
        assert_eq!(own, MAX_ROUTES as u32);
        assert_eq!(snap.overall.requests, [MAX_ROUTES as u32 + 10]);
        // The routes that got a series keep it; newcomers still fold.
        stats.record(Some("r0"), 200, ms(1), OK);
        stats.record(Some("late"), 200, ms(1), OK);
        stats.tick(2);
        let snap = stats.snapshot(1);
        assert_eq!(snap.routes["r0"].requests, [1]);
        assert!(!snap.routes.contains_key("late"));
        assert_eq!(snap.routes[OTHER_ROUTES].requests, [1]);
    }

    #[test]
    fn routes_silent_for_the_whole_window_are_dropped() {
        let stats = Stats::new();
        stats.record(Some("gone"), 200, ms(1), OK);
        stats.record(Some("kept"), 200, ms(1), OK);
        stats.tick(1000);
        let window = WINDOW_SECONDS as u64;
        stats.record(Some("kept"), 200, ms(1), OK);
        stats.tick(1000 + window - 1);
        // "gone"'s request is still in the window.
        assert!(stats.snapshot(WINDOW_SECONDS).routes.contains_key("gone"));
        stats.tick(1000 + window);
        let snap = stats.snapshot(WINDOW_SECONDS);
        assert!(!snap.routes.contains_key("gone"));
        assert_eq!(snap.routes["kept"].requests.iter().sum::<u32>(), 1);
        assert_eq!(stats.tracked_routes(), 1);
        // Dropping freed room under the cap for a new route.
        stats.record(Some("new"), 200, ms(1), OK);
        stats.tick(1000 + window + 1);
        assert_eq!(stats.snapshot(1).routes["new"].requests, [1]);
    }

    #[test]
    fn workers_on_other_threads_are_counted() {
        let stats = std::sync::Arc::new(Stats::new());
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        stats.record(Some("r"), 200, ms(1), OK);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        stats.tick(7);
        assert_eq!(stats.snapshot(1).routes["r"].requests, [4000]);
    }

    #[test]
    fn the_snapshot_has_the_api_shape() {
        let stats = Stats::new();
        stats.record(Some("api"), 200, ms(2), OK);
        stats.tick(500);
        let json = serde_json::to_value(stats.snapshot(2)).unwrap();
        assert_eq!(json["interval_seconds"], 1);
        assert_eq!(json["start"], 499);
        assert_eq!(json["seconds"], 2);
        for series in [&json["overall"], &json["routes"]["api"]] {
            for key in [
                "requests",
                "s2xx",
                "s3xx",
                "s4xx",
                "s5xx",
                "rate_limited",
                "auth_failures",
                "upstream_errors",
                "p50_ms",
                "p95_ms",
                "p99_ms",
            ] {
                assert_eq!(series[key].as_array().unwrap().len(), 2, "{key}");
            }
            assert_eq!(series["p50_ms"][0], serde_json::Value::Null);
            assert!(series["p50_ms"][1].as_f64().unwrap() > 1.8);
        }
        assert_eq!(json["totals"]["requests"], 1);
        assert_eq!(json["totals"].as_object().unwrap().len(), 8);
    }

    #[test]
    fn a_slot_is_small() {
        assert_eq!(std::mem::size_of::<Slot>(), 36);
    }
}
