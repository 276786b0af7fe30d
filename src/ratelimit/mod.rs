//! Rate limiting with sliding-window counters: the pipeline phase that runs
//! after authentication and before proxying, and the response headers it adds.

mod shared;
mod store;
mod window;

use std::fmt::{self, Write as _};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::HttpRequest;

pub use shared::SharedCounters;
pub use store::{CounterStore, StoreError};
pub use window::{Decision, WindowCounter};

use crate::auth::{Session, User};
use crate::config::{AddressPrefixes, FailMode, KeyPart, RateLimitPolicy, Route};
use crate::error::GatewayError;
use crate::storage::{now_ms, Storage};

/// Where decisions are made; a trait so tests and benchmarks can swap the store.
pub trait Counters {
    /// Admits and counts one request if `key` is under `limit` in `window`.
    fn acquire(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>>;

    /// Gives back one request counted by `acquire` in the current window.
    fn release(&self, key: &str, window: Duration) -> impl Future<Output = Result<(), StoreError>>;
}

impl Counters for CounterStore {
    fn acquire(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> {
        std::future::ready(CounterStore::acquire(self, key, window, limit))
    }

    fn release(&self, key: &str, window: Duration) -> impl Future<Output = Result<(), StoreError>> {
        std::future::ready(CounterStore::release(self, key, window))
    }
}

/// The gateway's counters: this node's own, or shared through Redis
/// (`storage.backend = "redis"`).
pub enum Limiter {
    Local(CounterStore),
    Shared(SharedCounters),
}

impl Limiter {
    /// Opens the counters kept in the sled tree `tree` (at most `capacity`
    /// keys in memory); with a shared Redis, the counters there under the
    /// same name, with these as the fallback.
    pub fn open(
        storage: &Storage,
        tree: &'static str,
        capacity: usize,
        evictions: prometheus::IntCounter,
    ) -> Result<Limiter, sled::Error> {
        let local = CounterStore::open(storage, tree, capacity, evictions)?;
        Ok(match storage.shared() {
            Some(shared) => Limiter::Shared(SharedCounters::new(shared.clone(), tree, local)),
            None => Limiter::Local(local),
        })
    }

    /// This node's own counters (with Redis, the fallback ones).
    pub fn local(&self) -> &CounterStore {
        match self {
            Limiter::Local(store) => store,
            Limiter::Shared(shared) => shared.local(),
        }
    }

    /// Forgets a key; true when it existed.
    pub async fn reset(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Limiter::Local(store) => store.reset(key),
            Limiter::Shared(shared) => shared.reset(key).await,
        }
    }

    /// The `n` keys starting with `prefix` nearest their limit.
    pub async fn busiest(&self, prefix: &str, n: usize) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            Limiter::Local(store) => Ok(store.busiest(prefix, n)),
            Limiter::Shared(shared) => shared.busiest(prefix, n).await,
        }
    }
}

impl Counters for Limiter {
    async fn acquire(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
    ) -> Result<Decision, StoreError> {
        match self {
            Limiter::Local(store) => store.acquire(key, window, limit),
            Limiter::Shared(shared) => shared.acquire(key, window, limit).await,
        }
    }

    async fn release(&self, key: &str, window: Duration) -> Result<(), StoreError> {
        match self {
            Limiter::Local(store) => store.release(key, window),
            Limiter::Shared(shared) => shared.release(key, window).await,
        }
    }
}

/// One policy's decision for a request.
#[derive(Debug, Clone)]
pub struct Applied {
    pub policy: Arc<RateLimitPolicy>,
    pub decision: Decision,
}

/// Every policy decision made for a request, for headers and the access log.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub applied: Vec<Applied>,
    pub limited: bool,
    /// Store failures let through by `fail = "open"` policies.
    pub store_errors: Vec<Arc<str>>,
}

/// The sled tree holding rate-limit counters (login throttling has its own).
pub const COUNTER_TREE: &str = "ratelimit_counters";

/// A client address as limits count it: the whole address for IPv4 (by
/// default), the network for IPv6, since one host usually owns a whole /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressKey {
    network: ipnet::IpNet,
}

impl AddressKey {
    /// The key of `ip`: its network of the configured prefix length. An
    /// IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) counts as IPv4.
    pub fn new(ip: IpAddr, prefixes: AddressPrefixes) -> AddressKey {
        let ip = ip.to_canonical();
        let prefix = match ip {
            IpAddr::V4(_) => prefixes.v4,
            IpAddr::V6(_) => prefixes.v6,
        };
        let network = ipnet::IpNet::new(ip, prefix)
            .map(|net| net.trunc())
            .unwrap_or_else(|_| ipnet::IpNet::from(ip));
        AddressKey { network }
    }
}

impl fmt::Display for AddressKey {
    /// A whole address prints as itself, a network as `addr/len`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.network.prefix_len() == self.network.max_prefix_len() {
            write!(f, "{}", self.network.addr())
        } else {
            write!(f, "{}", self.network)
        }
    }
}

/// Who is asking, as the key parts see it.
pub struct Requester<'a> {
    pub client: AddressKey,
    pub principal: Option<(&'a User, &'a Session)>,
}

/// Applies every policy of the route in order; every one must admit the
/// request. A rejected request never reaches the upstream.
pub async fn check(
    counters: &impl Counters,
    route: &Route,
    req: &HttpRequest,
    who: &Requester<'_>,
    outcome: &mut Outcome,
) -> Result<(), GatewayError> {
    let mut counted: Vec<(String, &RateLimitPolicy)> = Vec::new();
    for policy in &route.rate_limits {
        let key = counter_key(policy, route, req, who);
        let limit = policy.limit_for(who.principal.iter().flat_map(|(user, _)| user.roles.iter()));
        let decision = match counters.acquire(&key, policy.window, limit).await {
            Ok(decision) => decision,
            Err(err) => {
                outcome.store_errors.push(policy.name.clone());
                if policy.fail == FailMode::Closed {
                    return Err(GatewayError::ServiceUnavailable);
                }
                // Open: this node's own counters decide, where there are any.
                match err.fallback {
                    Some(decision) => decision,
                    None => continue,
                }
            }
        };
        outcome.applied.push(Applied {
            policy: policy.clone(),
            decision,
        });
        if decision.allowed {
            counted.push((key, policy));
            continue;
        }
        // The request goes nowhere: the policies that admitted it give
        // their count back, as a lone policy never counts a rejection.
        for (key, policy) in &counted {
            let _ = counters.release(key, policy.window).await;
        }
        outcome.limited = true;
        return Err(GatewayError::RateLimited {
            limit,
            window: policy.window.as_secs().max(1),
            retry_after: decision.retry_after_ms.div_ceil(1000).max(1),
        });
    }
    Ok(())
}

/// Header values longer than this enter counter keys as their SHA-256.
const MAX_HEADER_KEY: usize = 64;

/// `policy|part|part…`. Anonymous requests fall back to the client address
/// for `user` and `session` parts.
pub fn counter_key(
    policy: &RateLimitPolicy,
    route: &Route,
    req: &HttpRequest,
    who: &Requester,
) -> String {
    let mut key = String::with_capacity(64);
    key.push_str(&policy.name);
    for part in &policy.key {
        key.push('|');
        let _ = match (part, who.principal) {
            (KeyPart::Ip, _) => write!(key, "{}", who.client),
            (KeyPart::User, Some((user, _))) => write!(key, "user:{}", user.name),
            (KeyPart::Session, Some((_, session))) => write!(key, "session:{}", session.id),
            (KeyPart::User | KeyPart::Session, None) => write!(key, "ip:{}", who.client),
            (KeyPart::Route, _) => write!(key, "{}", route.id),
            (KeyPart::Method, _) => write!(key, "{}", req.method()),
            (KeyPart::Header(name), _) => {
                let value = req.headers().get(name).map_or(&[][..], |v| v.as_bytes());
                if value.len() <= MAX_HEADER_KEY {
                    write!(key, "{}", String::from_utf8_lossy(value))
                } else {
                    // Long values are hashed so a client cannot make counter keys arbitrarily large.
                    let digest = <sha2::Sha256 as sha2::Digest>::digest(value);
                    key.push_str(&crate::auth::token::to_hex(&digest));
                    Ok(())
                }
            }
        };
    }
    key
}

impl Outcome {
    /// The decision closest to its limit: reported in the `X-RateLimit-*` headers.
    pub fn closest(&self) -> Option<&Applied> {
        self.applied
            .iter()
            .min_by_key(|a| (a.decision.allowed, a.decision.remaining, a.decision.limit))
    }

    /// Adds `X-RateLimit-*` for the closest policy and the IETF draft
    /// `RateLimit-Policy` / `RateLimit` fields listing every policy.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let Some(closest) = self.closest() else {
            return;
        };
        let now_secs = now_ms() / 1000;
        let d = &closest.decision;
        let reset = now_secs + d.reset_after_ms.div_ceil(1000);
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(d.limit),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(d.remaining),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(reset),
        );
        let mut policy = String::new();
        let mut state = String::new();
        for (i, applied) in self.applied.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let d = &applied.decision;
            let _ = write!(
                policy,
                "{sep}\"{}\";q={};w={}",
                applied.policy.name,
                d.limit,
                applied.policy.window.as_secs().max(1)
            );
            let t = if d.allowed {
                d.reset_after_ms
            } else {
                d.retry_after_ms
            };
            let _ = write!(
                state,
                "{sep}\"{}\";r={};t={}",
                applied.policy.name,
                d.remaining,
                t.div_ceil(1000)
            );
        }
        if let Ok(v) = HeaderValue::from_str(&policy) {
            headers.insert(HeaderName::from_static("ratelimit-policy"), v);
        }
        if let Ok(v) = HeaderValue::from_str(&state) {
            headers.insert(HeaderName::from_static("ratelimit"), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;
    use actix_web::test::TestRequest;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Failing;
    impl Counters for Failing {
        async fn acquire(&self, _: &str, _: Duration, _: u64) -> Result<Decision, StoreError> {
            Err(StoreError::for_tests())
        }
        async fn release(&self, _: &str, _: Duration) -> Result<(), StoreError> {
            Err(StoreError::for_tests())
        }
    }

    struct Counting(AtomicU64);
    impl Counters for Counting {
        async fn acquire(&self, _: &str, _: Duration, limit: u64) -> Result<Decision, StoreError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Decision {
                allowed: n <= limit,
                limit,
                remaining: limit.saturating_sub(n),
                retry_after_ms: if n <= limit { 0 } else { 1500 },
                reset_after_ms: 9000,
            })
        }
        async fn release(&self, _: &str, _: Duration) -> Result<(), StoreError> {
            self.0.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn policy(name: &str, fail: FailMode, key: Vec<KeyPart>, limit: u64) -> Arc<RateLimitPolicy> {
        Arc::new(RateLimitPolicy {
            name: name.into(),
            key,
            limit,
            window: Duration::from_secs(60),
            fail,
            roles: vec![("premium".into(), 1000)],
        })
    }

    fn route(policies: Vec<Arc<RateLimitPolicy>>) -> Route {
        let mut route = Route::for_tests("r", "/*", None);
        route.rate_limits = policies;
        route
    }

    fn anonymous() -> Requester<'static> {
        Requester {
            client: AddressKey::new("192.0.2.7".parse().unwrap(), AddressPrefixes::default()),
            principal: None,
        }
    }

    #[test]
    fn addresses_count_by_prefix() {
        let key = |ip: &str, v4, v6| {
            AddressKey::new(ip.parse().unwrap(), AddressPrefixes { v4, v6 }).to_string()
        };
        assert_eq!(key("192.0.2.7", 32, 64), "192.0.2.7");
        assert_eq!(key("192.0.2.7", 24, 64), "192.0.2.0/24");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 32, 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff::1", 32, 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8::1", 32, 128), "2001:db8::1");
        // IPv4 through a dual-stack socket is IPv4, not one big ::ffff:0:0/64.
        assert_eq!(key("::ffff:192.0.2.7", 32, 64), "192.0.2.7");
    }

    #[actix_web::test]
    async fn a_failing_store_follows_the_policy_fail_mode() {
        let req = TestRequest::default().to_http_request();
        let open = route(vec![policy("p", FailMode::Open, vec![KeyPart::Ip], 5)]);
        let mut outcome = Outcome::default();
        assert!(check(&Failing, &open, &req, &anonymous(), &mut outcome)
            .await
            .is_ok());
        assert_eq!(outcome.store_errors.len(), 1);
        let closed = route(vec![policy("p", FailMode::Closed, vec![KeyPart::Ip], 5)]);
        let err = check(
            &Failing,
            &closed,
            &req,
            &anonymous(),
            &mut Outcome::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, GatewayError::ServiceUnavailable);
    }

    #[test]
    fn keys_fall_back_to_the_client_address_for_anonymous_requests() {
        let req = TestRequest::default()
            .insert_header(("x-api-key", "k1"))
            .to_http_request();
        let p = policy(
            "per",
            FailMode::Open,
            vec![
                KeyPart::User,
                KeyPart::Route,
                KeyPart::Header(HeaderName::from_static("x-api-key")),
            ],
            5,
        );
        let r = route(vec![p.clone()]);
        assert_eq!(
            counter_key(&p, &r, &req, &anonymous()),
            "per|ip:192.0.2.7|r|k1"
        );
    }

    #[actix_web::test]
    async fn headers_report_the_closest_policy_and_list_all() {
        let req = TestRequest::default().to_http_request();
        let counters = Counting(AtomicU64::new(0));
        let r = route(vec![
            policy("wide", FailMode::Open, vec![KeyPart::Ip], 100),
            policy("narrow", FailMode::Open, vec![KeyPart::Ip], 3),
        ]);
        let mut outcome = Outcome::default();
        check(&counters, &r, &req, &anonymous(), &mut outcome)
            .await
            .unwrap();
        let mut headers = HeaderMap::new();
        outcome.write_headers(&mut headers);
        assert_eq!(headers.get("x-ratelimit-limit").unwrap(), "3");
        assert_eq!(headers.get("x-ratelimit-remaining").unwrap(), "1");
        assert_eq!(
            headers.get("ratelimit-policy").unwrap(),
            "\"wide\";q=100;w=60, \"narrow\";q=3;w=60"
        );
        assert_eq!(
            headers.get("ratelimit").unwrap(),
            "\"wide\";r=99;t=9, \"narrow\";r=1;t=9"
        );
    }

    #[test]
    fn role_limits_take_the_highest_applicable() {
        let p = policy("p", FailMode::Open, vec![KeyPart::User], 10);
        let roles = ["basic".to_string(), "premium".to_string()];
        assert_eq!(p.limit_for(roles.iter()), 1000);
        assert_eq!(p.limit_for(["basic".to_string()].iter()), 10);
    }
}
