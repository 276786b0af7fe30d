//! Upstream services: several targets behind one name, the choice of one
//! for each request, and their health (passive ejection here, active checks
//! in [`checks`]). One view of each target is shared by every worker.
//!
//! A service's state outlives configuration reloads: a reload that keeps
//! a target (same service, same URL) keeps its health and counters.

mod breaker;
pub mod checks;
pub mod dns;
mod ketama;
mod target;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use rand::Rng as _;

use crate::config::{Balance, ServiceConfig, ServiceTarget, MAX_TARGETS};
use breaker::Breaker;
use ketama::Ring;

pub use ketama::Ring as HashRing;
pub use target::{Availability, Change, Target, Verdict};

/// Every service of one configuration, by name.
#[derive(Default)]
pub struct Services {
    by_name: HashMap<Arc<str>, Arc<Service>>,
    /// What the targets' host names last resolved to.
    pub answers: Arc<dns::Answers>,
}

impl Services {
    /// The services of `configs`, a target for each address a host name
    /// last resolved to, keeping the state of every target that `previous`
    /// already had.
    pub fn build<'a>(
        configs: impl IntoIterator<Item = &'a Arc<ServiceConfig>>,
        previous: Option<&Services>,
    ) -> Services {
        let answers = previous.map_or_else(Default::default, |p| p.answers.clone());
        let by_name = configs
            .into_iter()
            .map(|config| {
                let before = previous.and_then(|p| p.get(&config.name));
                let service = Arc::new(Service::new(config.clone(), before, &answers));
                (config.name.clone(), service)
            })
            .collect();
        Services { by_name, answers }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Service>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.by_name.values()
    }
}

/// A service and its targets' shared state.
pub struct Service {
    pub config: Arc<ServiceConfig>,
    pub targets: Vec<Arc<Target>>,
    /// Smooth weighted round robin: target indices in the order they take
    /// turns, one entry per unit of weight.
    schedule: Vec<u16>,
    turn: AtomicUsize,
    /// For consistent hashing: the Ketama ring of the targets.
    ring: Ring,
    /// Whether the service last spread requests over all its targets
    /// because too few were healthy.
    panicking: AtomicBool,
    /// Retries sent, for metrics.
    pub(crate) retries: AtomicU64,
    /// Requests retrying now, for the retry budget.
    retrying: AtomicU32,
    /// Requests in flight (at most `max_in_flight`)...
    admitted: AtomicU32,
    /// ...and those waiting for a place (at most `max_pending`), woken
    /// when one comes free. A plain counter, not a semaphore, so the
    /// common case takes no lock: one compare-and-swap in, one subtraction out.
    waiting: AtomicU32,
    freed: Notify,
    /// Kept across reloads, like the targets' health.
    breaker: Arc<Breaker>,
    /// Requests refused: over the limits, or by the open breaker.
    pub(crate) refused_overloaded: AtomicU64,
    pub(crate) refused_open: AtomicU64,
}

/// Why a service refused a request before any target was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_in_flight` requests in flight and `max_pending` waiting, or
    /// no slot came free in time.
    Overloaded,
    /// The circuit breaker is open.
    CircuitOpen,
}

impl Refusal {
    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Overloaded => "max_in_flight requests in flight and max_pending waiting",
            Refusal::CircuitOpen => "the circuit breaker is open",
        }
    }
}

/// A request's place among the service's requests in flight, given back
/// when dropped.
pub struct Admission<'a>(&'a Service);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let service = self.0;
        service.admitted.fetch_sub(1, Ordering::AcqRel);
        if service.waiting.load(Ordering::Acquire) > 0 {
            service.freed.notify_one();
        }
    }
}

/// Retries may be at most this share (percent) of the requests in flight...
const RETRY_BUDGET_PERCENT: u32 = 20;
/// ...or this many, whichever is more.
const RETRY_BUDGET_MIN: u32 = 3;

/// Targets a request has already tried, by index (services have at most
/// 256 targets).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried([u64; 4]);

impl Tried {
    pub fn add(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    pub fn contains(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }
}

/// Why no target was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTarget {
    /// None is healthy (or untried).
    NoneHealthy,
}

impl Service {
    fn new(
        config: Arc<ServiceConfig>,
        previous: Option<&Arc<Service>>,
        answers: &dns::Answers,
    ) -> Service {
        let expanded = expand(&config.targets, answers);
        let targets = expanded
            .iter()
            .map(|t| {
                previous
                    .and_then(|p| p.targets.iter().find(|old| old.config == *t))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Target::new(t.clone())))
            })
            .collect();
        let weights: Vec<u32> = expanded.iter().map(|t| t.weight).collect();
        let ring = match config.balance {
            Balance::Hash(_) => {
                let points: Vec<(String, u32)> = expanded
                    .iter()
                    .map(|t| match t.address {
                        Some(address) => (address.to_string(), t.weight),
                        None => (t.upstream.authority.to_string(), t.weight),
                    })
                    .collect();
                Ring::new(points.iter().map(|(key, weight)| (key.as_str(), *weight)))
            }
            _ => Ring::default(),
        };
        Service {
            schedule: smooth_schedule(&weights),
            ring,
            targets,
            turn: AtomicUsize::new(0),
            panicking: AtomicBool::new(previous.is_some_and(|p| p.panicking())),
            retries: AtomicU64::new(0),
            retrying: AtomicU32::new(0),
            admitted: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            freed: Notify::new(),
            breaker: previous.map_or_else(Default::default, |p| p.breaker.clone()),
            refused_overloaded: AtomicU64::new(0),
            refused_open: AtomicU64::new(0),
            config,
        }
    }

    /// Lets a request in, or refuses it at once: when the breaker is open,
    /// or `max_in_flight` are in flight and `max_pending` already wait. A
    /// request that waits gives up after `wait`.
    pub async fn admit(&self, wait: Duration) -> Result<Admission<'_>, Refusal> {
        if let Some(config) = &self.config.breaker {
            if self.breaker.admit(config, now_ms()) == breaker::Admit::No {
                self.refused_open.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::CircuitOpen);
            }
        }
        if self.take_place() {
            return Ok(Admission(self));
        }
        let max_pending = self.config.max_pending;
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max_pending).then_some(n + 1)
            })
            .is_ok();
        let admitted = queued
            && tokio::time::timeout(wait, self.wait_for_place())
                .await
                .is_ok();
        if queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        if admitted {
            return Ok(Admission(self));
        }
        self.refused_overloaded.fetch_add(1, Ordering::Relaxed);
        Err(Refusal::Overloaded)
    }

    /// Takes a place among the requests in flight, if one is free.
    fn take_place(&self) -> bool {
        let max = self.config.max_in_flight;
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Waits until a place is taken. Registered for a wake-up before each
    /// try, so a place freed between the try and the wait is not missed.
    async fn wait_for_place(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.take_place() {
                return;
            }
            freed.await;
        }
    }

    /// `closed`, `open` or `half_open`; `closed` without a breaker.
    pub fn breaker_state(&self) -> &'static str {
        self.breaker.state_name()
    }

    /// Seconds until the open breaker lets trial requests through (1-60).
    pub fn breaker_retry_after(&self) -> u64 {
        let Some(config) = &self.config.breaker else {
            return 1;
        };
        self.breaker
            .remaining_ms(config, now_ms())
            .div_ceil(1000)
            .clamp(1, 60)
    }

    /// Times the breaker opened.
    pub fn breaker_opened(&self) -> u64 {
        self.breaker.opened.load(Ordering::Relaxed)
    }

    /// Whether too few targets are healthy, so requests go to all of them.
    pub fn panicking(&self) -> bool {
        self.panicking.load(Ordering::Relaxed)
    }

    /// Chooses a target for a request, not one in `tried` when another is
    /// available; `hash`: the request's key for consistent hashing (none
    /// when the request lacks it: then round robin). Notes whether the
    /// service is in panic mode, for the metrics task to log and count.
    pub fn pick(&self, tried: &Tried, hash: Option<u32>) -> Result<Picked, NoTarget> {
        let now = now_ms();
        let mut healthy = Tried::default();
        let mut healthy_count = 0usize;
        for (i, target) in self.targets.iter().enumerate() {
            match target.availability(now) {
                Availability::Up => {
                    healthy.add(i);
                    healthy_count += 1;
                }
                // The one trial request goes first, so a recovered target
                // is found out as soon as its ejection is over.
                Availability::TrialDue if !tried.contains(i) && target.claim_trial() => {
                    return Ok(self.picked(i, true));
                }
                _ => {}
            }
        }
        let threshold = usize::from(self.config.panic_threshold);
        let panic = healthy_count * 100 < threshold * self.targets.len();
        // Written only when it changes: every worker reads this line.
        if self.panicking.load(Ordering::Relaxed) != panic {
            self.panicking.store(panic, Ordering::Relaxed);
        }
        let eligible = |i: usize| !tried.contains(i) && (panic || healthy.contains(i));
        let chosen = match (&self.config.balance, hash) {
            // The key's own target, or the next one on the ring (slow start
            // would move keys about, so hashing has none).
            (Balance::Hash(_), Some(hash)) => self.ring.walk(hash).find(|&i| eligible(i)),
            _ => {
                // A target warming up is passed over at random, less and
                // less often; if that leaves none, it is taken all the same.
                let slow_start = self.config.slow_start;
                let warm = |i: usize| {
                    slow_start.is_zero()
                        || self.targets[i]
                            .warming(now, slow_start)
                            .is_none_or(|share| rand::thread_rng().gen_bool(share))
                };
                self.choose(|i| eligible(i) && warm(i))
                    .or_else(|| self.choose(eligible))
            }
        };
        chosen
            .map(|i| self.picked(i, false))
            .ok_or(NoTarget::NoneHealthy)
    }

    /// Round robin or least requests among the targets `eligible` admits.
    fn choose(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        match self.config.balance {
            Balance::LeastRequests => self.least_requests(eligible),
            _ => self.round_robin(eligible),
        }
    }

    fn round_robin(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| usize::from(self.schedule[(start + k) % len]))
            .find(|&i| eligible(i))
    }

    /// Power of two random choices: the less busy, per unit of weight, of
    /// two eligible targets.
    fn least_requests(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        // Each target is asked once (`eligible` may draw at random).
        let mut candidates = [0u16; MAX_TARGETS];
        let mut count = 0;
        for i in (0..self.targets.len()).filter(|&i| eligible(i)) {
            candidates[count] = i as u16;
            count += 1;
        }
        let candidates = &candidates[..count];
        match candidates {
            [] => None,
            [only] => Some(usize::from(*only)),
            _ => {
                let mut rng = rand::thread_rng();
                let a = rng.gen_range(0..count);
                let b = (a + rng.gen_range(1..count)) % count;
                let (a, b) = (usize::from(candidates[a]), usize::from(candidates[b]));
                let load = |i: usize| {
                    let t = &self.targets[i];
                    // in_flight / weight, compared without division.
                    (u64::from(t.in_flight()) + 1) * 100 / u64::from(t.config.weight)
                };
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }

    fn picked(&self, index: usize, trial: bool) -> Picked {
        let target = self.targets[index].clone();
        target.in_flight.fetch_add(1, Ordering::Relaxed);
        target.requests.fetch_add(1, Ordering::Relaxed);
        Picked {
            index,
            target,
            trial,
            reported: false,
        }
    }

    /// Leave to retry within the budget: retries in flight at most 20 %
    /// of the requests in flight, or 3. So a failing service gets at most
    /// a fifth more load from retries, never a multiple of it.
    pub fn retry_permit(&self) -> Option<RetryPermit<'_>> {
        let in_flight: u32 = self.targets.iter().map(|t| t.in_flight()).sum();
        let budget = (in_flight * RETRY_BUDGET_PERCENT / 100).max(RETRY_BUDGET_MIN);
        self.retrying
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < budget).then_some(n + 1)
            })
            .ok()
            .map(|_| RetryPermit(&self.retrying))
    }

    /// Counts a retry sent.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Seconds a client should wait when no target can take a request:
    /// until the first ejection ends, at least 1 and at most 60.
    pub fn retry_after(&self) -> u64 {
        let now = now_ms();
        let soonest = self
            .targets
            .iter()
            .filter_map(|t| t.ejected_until())
            .min()
            .map_or(0, |until| until.saturating_sub(now));
        soonest.div_ceil(1000).clamp(1, 60)
    }

    /// Counts a finished request on `picked`'s target, ejecting it after
    /// too many failures in a row unless it is the last healthy one.
    pub fn report(&self, mut picked: Picked, verdict: Verdict) -> Change {
        picked.reported = true;
        let now = now_ms();
        if let Some(config) = &self.config.breaker {
            self.breaker
                .record(config, verdict == Verdict::Failure, now);
        }
        let may_eject = verdict == Verdict::Failure
            && self
                .targets
                .iter()
                .enumerate()
                .any(|(i, t)| i != picked.index && t.availability(now) == Availability::Up);
        picked
            .target
            .report(verdict, picked.trial, &self.config.passive, may_eject, now)
    }
}

/// A retry in flight, counted against the budget until dropped.
pub struct RetryPermit<'a>(&'a AtomicU32);

impl Drop for RetryPermit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A target chosen for one request. Counts as in flight until dropped;
/// a trial not reported (the request was cancelled) is given back.
pub struct Picked {
    pub index: usize,
    pub target: Arc<Target>,
    trial: bool,
    reported: bool,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.target.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.trial && !self.reported {
            self.target.release_trial();
        }
    }
}

/// The service's targets with each host name replaced by a target per
/// address it last resolved to (all with its weight), at most
/// [`MAX_TARGETS`]; a name not resolved yet stays one target.
fn expand(targets: &[ServiceTarget], answers: &dns::Answers) -> Vec<ServiceTarget> {
    let mut expanded = Vec::with_capacity(targets.len());
    for target in targets {
        match target.host_name().and_then(|name| answers.get(name)) {
            Some(addresses) => expanded.extend(addresses.iter().map(|ip| ServiceTarget {
                address: Some(std::net::SocketAddr::new(*ip, target.upstream.port())),
                ..target.clone()
            })),
            None => expanded.push(target.clone()),
        }
    }
    expanded.truncate(MAX_TARGETS);
    expanded
}

/// nginx's smooth weighted round robin, unrolled once: weights 5, 1, 1
/// give a a b a c a a, not a a a a a b c.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

/// A duration in whole milliseconds, the unit health state is kept in.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds on the process's monotonic clock: what ejection times and
/// check schedules are kept in.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Starting at 1 keeps 0 free to mean "never".
    1 + millis(EPOCH.get_or_init(Instant::now).elapsed()).min(u64::MAX - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PassiveHealth, ServiceTarget, Upstream, IDEMPOTENT_METHODS};

    fn service(weights: &[u32], balance: Balance, panic_threshold: u8) -> Service {
        let config = ServiceConfig {
            name: "svc".into(),
            targets: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| ServiceTarget {
                    upstream: Upstream::parse(&format!("http://127.0.0.1:{}", 1000 + i)).unwrap(),
                    weight,
                    address: None,
                })
                .collect(),
            balance,
            retries: 1,
            retry_methods: IDEMPOTENT_METHODS.to_vec(),
            panic_threshold,
            max_in_flight: 1024,
            max_pending: 1024,
            slow_start: Duration::ZERO,
            breaker: None,
            health: None,
            passive: PassiveHealth {
                consecutive_failures: 1,
                ..PassiveHealth::default()
            },
        };
        Service::new(Arc::new(config), None, &dns::Answers::default())
    }

    fn picks(service: &Service, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| service.pick(&Tried::default(), None).unwrap().index)
            .collect()
    }

    #[test]
    fn a_resolved_name_is_a_target_per_address_whose_health_outlives_new_answers() {
        let mut config = service(&[1], Balance::RoundRobin, 50)
            .config
            .as_ref()
            .clone();
        config.targets[0].upstream = Upstream::parse("http://api.test:8080").unwrap();
        config.targets.push(ServiceTarget {
            upstream: Upstream::parse("http://127.0.0.1:9").unwrap(),
            weight: 2,
            address: None,
        });
        let configs = [Arc::new(config)];
        // Not resolved yet: the name is one target, resolved per connection.
        let services = Services::build(&configs, None);
        assert_eq!(services.get("svc").unwrap().targets.len(), 2);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        services
            .answers
            .record("api.test", vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        let services = Services::build(&configs, Some(&services));
        let names: Vec<&str> = services
            .get("svc")
            .unwrap()
            .targets
            .iter()
            .map(|t| t.name())
            .collect();
        assert_eq!(
            names,
            [
                "http://api.test:8080 [10.0.0.1:8080]",
                "http://api.test:8080 [10.0.0.2:8080]",
                "http://127.0.0.1:9"
            ]
        );
        let kept = services.get("svc").unwrap().targets[1].clone();
        services
            .answers
            .record("api.test", vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        let services = Services::build(&configs, Some(&services));
        let targets = &services.get("svc").unwrap().targets;
        assert!(Arc::ptr_eq(&targets[0], &kept), "10.0.0.2 keeps its state");
        assert_eq!(
            targets[1].config.address,
            Some("10.0.0.3:8080".parse().unwrap())
        );
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 1]), [0, 1]);
        let s = service(&[3, 1], Balance::RoundRobin, 50);
        let got = picks(&s, 400);
        assert_eq!(got.iter().filter(|&&i| i == 0).count(), 300);
    }

    #[test]
    fn least_requests_prefers_the_idle_target() {
        let s = service(&[1, 1], Balance::LeastRequests, 50);
        // Hold three requests on target 0: every new one goes to 1.
        let held: Vec<Picked> = (0..3).map(|_| s.picked(0, false)).collect();
        assert!(picks(&s, 20).iter().all(|&i| i == 1));
        drop(held);
        let spread = picks(&s, 200);
        assert!(spread.contains(&0) && spread.contains(&1));
    }

    #[test]
    fn retries_avoid_tried_targets_and_ejected_ones() {
        let s = service(&[1, 1, 1], Balance::RoundRobin, 0);
        let mut tried = Tried::default();
        tried.add(0);
        tried.add(1);
        for _ in 0..5 {
            assert_eq!(s.pick(&tried, None).unwrap().index, 2);
        }
        tried.add(2);
        assert_eq!(s.pick(&tried, None).err(), Some(NoTarget::NoneHealthy));
        // Eject target 1 (one failure is enough here).
        let one = s.picked(1, false);
        assert!(matches!(
            s.report(one, Verdict::Failure),
            Change::Ejected(_)
        ));
        assert!(picks(&s, 30).iter().all(|&i| i != 1));
    }

    #[test]
    fn the_last_healthy_target_stays_and_panic_spreads_over_all() {
        let s = service(&[1, 1], Balance::RoundRobin, 50);
        let first = s.picked(0, false);
        assert!(matches!(
            s.report(first, Verdict::Failure),
            Change::Ejected(_)
        ));
        // Target 1 is now the last healthy one: never ejected.
        for _ in 0..3 {
            let last = s.picked(1, false);
            assert_eq!(s.report(last, Verdict::Failure), Change::None);
        }
        // One of two healthy is not below 50 %: no panic, all to target 1.
        assert_eq!(s.pick(&Tried::default(), None).unwrap().index, 1);
        assert!(!s.panicking());
        // With a higher threshold the same state is a panic: both serve.
        let s = service(&[1, 1, 1], Balance::RoundRobin, 50);
        for i in 0..2 {
            let p = s.picked(i, false);
            assert!(matches!(s.report(p, Verdict::Failure), Change::Ejected(_)));
        }
        s.pick(&Tried::default(), None).unwrap();
        assert!(s.panicking());
        let spread = picks(&s, 30);
        assert!((0..3).all(|i| spread.contains(&i)), "{spread:?}");
    }

    #[test]
    fn a_target_back_from_ejection_ramps_up_over_slow_start() {
        let mut config = (*service(&[1, 1], Balance::RoundRobin, 0).config).clone();
        config.slow_start = Duration::from_secs(3600);
        let s = Service::new(Arc::new(config), None, &dns::Answers::default());
        // Eject target 1, then let its trial succeed: it is back, warming.
        let p = s.picked(1, false);
        assert!(matches!(s.report(p, Verdict::Failure), Change::Ejected(_)));
        let trial = s.picked(1, true);
        assert_eq!(s.report(trial, Verdict::Success), Change::Restored);
        let share = s.targets[1]
            .warming(now_ms(), Duration::from_secs(3600))
            .unwrap();
        assert!(share < 0.01, "{share}");
        // Barely into its ramp, it gets (almost) nothing; target 0 the rest.
        let got = picks(&s, 200);
        assert!(got.iter().filter(|&&i| i == 1).count() <= 5, "{got:?}");
        // Alone, it is taken all the same.
        let mut tried = Tried::default();
        tried.add(0);
        assert_eq!(s.pick(&tried, None).unwrap().index, 1);
    }

    #[tokio::test]
    async fn admission_waits_in_a_bounded_line_then_refuses() {
        let mut config = (*service(&[1], Balance::RoundRobin, 0).config).clone();
        config.max_in_flight = 1;
        config.max_pending = 1;
        let s = Arc::new(Service::new(
            Arc::new(config),
            None,
            &dns::Answers::default(),
        ));
        let first = s.admit(Duration::from_secs(5)).await.unwrap();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.admit(Duration::from_secs(5)).await.is_ok() })
        };
        while s.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // One in flight, one waiting: the next is refused at once.
        assert_eq!(
            s.admit(Duration::from_secs(5)).await.err(),
            Some(Refusal::Overloaded)
        );
        drop(first);
        assert!(
            waiter.await.unwrap(),
            "the waiting request got the freed place"
        );
        // A wait that runs out is refused too.
        let held = s.admit(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            s.admit(Duration::from_millis(20)).await.err(),
            Some(Refusal::Overloaded)
        );
        drop(held);
        assert_eq!(s.refused_overloaded.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_reload_keeps_the_state_of_kept_targets() {
        let s = Arc::new(service(&[1, 1], Balance::RoundRobin, 0));
        let p = s.picked(0, false);
        s.report(p, Verdict::Failure);
        let mut before = Services::default();
        before.by_name.insert("svc".into(), s.clone());
        let mut config = (*s.config).clone();
        config.targets.truncate(1);
        let after = Services::build([&Arc::new(config)], Some(&before));
        let kept = &after.get("svc").unwrap().targets[0];
        assert!(Arc::ptr_eq(kept, &s.targets[0]));
        assert!(kept.ejected_until().is_some());
    }
}
