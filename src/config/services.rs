//! `[upstreams.<name>]`: services of several targets that routes name
//! instead of one URL, with how to balance, check and retry them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use actix_web::http::Method;

use super::model::{at_least_one, positive, Errors, Upstream};
use super::raw::{RawBreaker, RawHealthCheck, RawPassive, RawService, RawTarget};

/// Most targets one service may list.
pub const MAX_TARGETS: usize = 256;
/// Largest weight of one target.
pub const MAX_WEIGHT: u32 = 100;

/// A validated upstream service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: Arc<str>,
    pub targets: Vec<ServiceTarget>,
    pub balance: Balance,
    /// Further tries after the first, each on another target when there is one.
    pub retries: u32,
    /// Methods retried after the request reached a target (a `502`, `503`
    /// or `504`, or a timeout); any method is retried when it never did.
    pub retry_methods: Vec<Method>,
    /// Below this share of healthy targets (percent), requests go to all
    /// of them; 0 never does.
    pub panic_threshold: u8,
    /// A target coming back (from an ejection or down by its checks) gets
    /// a share of requests growing from nothing to its full share over
    /// this time; zero: at once.
    pub slow_start: Duration,
    /// Requests in flight to the service at once; more wait...
    pub max_in_flight: u32,
    /// ...up to this many; more are refused at once.
    pub max_pending: u32,
    /// Active checks; none unless a path is set.
    pub health: Option<HealthCheck>,
    pub passive: PassiveHealth,
    /// The error-ratio circuit breaker; none unless configured.
    pub breaker: Option<BreakerConfig>,
}

/// `[upstreams.<name>.breaker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Opens when at least this share (percent) of a window's requests failed...
    pub failure_percent: u8,
    pub window: Duration,
    /// ...and the window had at least this many.
    pub min_requests: u32,
    /// How long it refuses requests before trying again.
    pub open_time: Duration,
    /// Trial requests that must all succeed for it to close.
    pub trial_requests: u32,
}

impl ServiceConfig {
    /// The service in the keys of its `[upstreams.<name>]` section.
    pub fn summary(&self) -> serde_json::Value {
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        serde_json::json!({
            "targets": self.targets.iter().map(|t| serde_json::json!({
                "url": t.upstream.url,
                "weight": t.weight,
            })).collect::<Vec<_>>(),
            "balance": self.balance.as_str(),
            "hash_key": match &self.balance {
                Balance::Hash(key) => Some(key.describe()),
                _ => None,
            },
            "retries": self.retries,
            "retry_methods": self.retry_methods.iter().map(Method::as_str).collect::<Vec<_>>(),
            "panic_threshold": self.panic_threshold,
            "max_in_flight": self.max_in_flight,
            "max_pending": self.max_pending,
            "slow_start": duration(self.slow_start),
            "breaker": self.breaker.map(|b| serde_json::json!({
                "failure_percent": b.failure_percent,
                "window": duration(b.window),
                "min_requests": b.min_requests,
                "open_time": duration(b.open_time),
                "trial_requests": b.trial_requests,
            })),
            "health": self.health.as_ref().map(|h| serde_json::json!({
                "path": h.path,
                "interval": duration(h.interval),
                "timeout": duration(h.timeout),
                "fall": h.fall,
                "rise": h.rise,
                "statuses": h.statuses.iter().map(|s| match *s {
                    StatusMatch::Class(c) => format!("{c}xx"),
                    StatusMatch::Exact(code) => code.to_string(),
                }).collect::<Vec<_>>(),
            })),
            "passive": {
                "consecutive_failures": self.passive.consecutive_failures,
                "ejection_time": duration(self.passive.ejection_time),
                "max_ejection_time": duration(self.passive.max_ejection_time),
            },
        })
    }
}

/// One target of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    pub upstream: Upstream,
    pub weight: u32,
    /// One address the URL's host name resolved to (each is a target of
    /// its own); `None` for an IP literal, or a name not resolved yet
    /// (then resolved for each new connection).
    pub address: Option<std::net::SocketAddr>,
}

impl ServiceTarget {
    /// The host name the URL names, to be re-resolved; `None` for an IP literal.
    pub fn host_name(&self) -> Option<&str> {
        let host = self.upstream.host();
        host.parse::<std::net::IpAddr>().is_err().then_some(host)
    }

    /// How logs, metrics and the admin API name the target: its URL, and
    /// the address it stands for when its host name was resolved.
    pub fn label(&self) -> String {
        match self.address {
            Some(address) => format!("{} [{address}]", self.upstream.url),
            None => self.upstream.url.clone(),
        }
    }
}

/// How a service spreads requests over its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// The less busy (per weight) of two targets picked at random.
    LeastRequests,
    /// Consistent hashing of a part of the request (nginx's
    /// `hash $key consistent`).
    Hash(HashKey),
}

impl Balance {
    pub fn as_str(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequests => "least_requests",
            Balance::Hash(_) => "hash",
        }
    }
}

/// What consistent hashing places a request by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client address (through trusted proxies).
    ClientIp,
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The session's user.
    User,
}

impl HashKey {
    fn parse(text: &str) -> Result<HashKey, String> {
        let bad = || {
            format!("{text:?} is not a hash key (one of: client_ip, user, \"header:<name>\", \"cookie:<name>\")")
        };
        Ok(match text {
            "client_ip" => HashKey::ClientIp,
            "user" => HashKey::User,
            _ => match text.split_once(':') {
                Some(("header", name)) => HashKey::Header(
                    HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?,
                ),
                Some(("cookie", name)) if !name.trim().is_empty() => {
                    HashKey::Cookie(name.trim().to_owned())
                }
                _ => return Err(bad()),
            },
        })
    }

    fn describe(&self) -> String {
        match self {
            HashKey::ClientIp => "client_ip".into(),
            HashKey::User => "user".into(),
            HashKey::Header(name) => format!("header:{name}"),
            HashKey::Cookie(name) => format!("cookie:{name}"),
        }
    }
}

/// `[upstreams.<name>.health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and query) requested with GET on each target.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failed checks that take a target down.
    pub fall: u32,
    /// Consecutive good checks that bring it back.
    pub rise: u32,
    /// Statuses that count as good: classes (`2`) or exact codes.
    pub statuses: Vec<StatusMatch>,
}

/// An expected status: a class (`"2xx"`) or one code (`"204"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Class(u16),
    Exact(u16),
}

impl HealthCheck {
    /// Whether a check answered with `status` passes.
    pub fn passes(&self, status: u16) -> bool {
        self.statuses.iter().any(|m| match *m {
            StatusMatch::Class(class) => status / 100 == class,
            StatusMatch::Exact(code) => status == code,
        })
    }
}

/// `[upstreams.<name>.passive]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Consecutive failed requests (connect errors, timeouts, `502`-`504`)
    /// that eject a target; 0 never does.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one in a row doubles it.
    pub ejection_time: Duration,
    pub max_ejection_time: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
        }
    }
}

/// The methods retried after a request reached a target, by default.
pub const IDEMPOTENT_METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::PUT,
    Method::DELETE,
];

/// Whether `name` can name a service: what a route's `upstream` holds when
/// it is not a URL.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Validates every service (`None`: its section could not be read, which
/// is already reported).
pub(super) fn services(
    e: &mut Errors,
    raw: BTreeMap<String, Option<RawService>>,
) -> BTreeMap<String, Arc<ServiceConfig>> {
    let mut out = BTreeMap::new();
    for (name, raw) in raw {
        if !valid_name(&name) {
            e.push(
                format!("upstreams.{name}"),
                "a service name is 1-64 letters, digits, '-', '_' and '.'",
            );
            continue;
        }
        let Some(raw) = raw else { continue };
        if let Some(service) = service(e, &name, raw) {
            out.insert(name, Arc::new(service));
        }
    }
    out
}

fn service(e: &mut Errors, name: &str, raw: RawService) -> Option<ServiceConfig> {
    let RawService {
        targets,
        balance,
        hash_key,
        retries,
        retry_methods,
        panic_threshold,
        max_in_flight,
        max_pending,
        slow_start,
        health,
        passive,
        breaker,
    } = raw;
    let path = |field: &str| format!("upstreams.{name}.{field}");
    let before = e.len();
    let targets = match targets {
        None => {
            e.push(path("targets"), "is required (a list of URLs)");
            Vec::new()
        }
        Some(list) if list.is_empty() || list.len() > MAX_TARGETS => {
            e.push(
                path("targets"),
                format!("must list 1 to {MAX_TARGETS} targets"),
            );
            Vec::new()
        }
        Some(list) => list
            .into_iter()
            .enumerate()
            .filter_map(|(i, raw)| target(e, &path(&format!("targets[{i}]")), raw))
            .collect(),
    };
    for (i, t) in targets.iter().enumerate() {
        if targets[..i]
            .iter()
            .any(|o| o.upstream.url == t.upstream.url)
        {
            e.push(
                path("targets"),
                format!(
                    "{:?} is listed twice (give it a weight instead)",
                    t.upstream.url
                ),
            );
        }
    }
    let balance = match (balance.as_deref().unwrap_or("round_robin"), hash_key) {
        ("round_robin", None) => Balance::RoundRobin,
        ("least_requests", None) => Balance::LeastRequests,
        ("hash", Some(key)) => match HashKey::parse(&key) {
            Ok(key) => Balance::Hash(key),
            Err(problem) => {
                e.push(path("hash_key"), problem);
                Balance::RoundRobin
            }
        },
        ("hash", None) => {
            e.push(path("hash_key"), "is required with balance = \"hash\"");
            Balance::RoundRobin
        }
        ("round_robin" | "least_requests", Some(_)) => {
            e.push(path("hash_key"), "is only for balance = \"hash\"");
            Balance::RoundRobin
        }
        (other, _) => {
            e.push(
                path("balance"),
                format!("{other:?} is not one of round_robin, least_requests, hash"),
            );
            Balance::RoundRobin
        }
    };
    let retry_methods = match retry_methods {
        None => IDEMPOTENT_METHODS.to_vec(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                e.check(
                    &path(&format!("retry_methods[{i}]")),
                    super::model::parse_method(m),
                )
            })
            .collect(),
    };
    let panic_threshold = match panic_threshold {
        Some(p) if p > 100 => {
            e.push(path("panic_threshold"), "is a percentage, 0 to 100");
            50
        }
        p => p.unwrap_or(50),
    };
    let max_in_flight = at_least_one(e, &path("max_in_flight"), max_in_flight, 1024);
    let max_pending = max_pending.unwrap_or(1024);
    let breaker = breaker.map(|raw| breaker_config(e, &path("breaker"), raw));
    let health = health.and_then(|raw| health_check(e, &path("health"), raw));
    let passive = passive.map_or_else(PassiveHealth::default, |raw| {
        passive_health(e, &path("passive"), raw)
    });
    let retries = match retries {
        Some(n) if n > 5 => {
            e.push(path("retries"), "must be at most 5");
            1
        }
        n => n.unwrap_or(1),
    };
    (e.len() == before).then(|| ServiceConfig {
        name: name.into(),
        targets,
        balance,
        retries,
        retry_methods,
        panic_threshold,
        max_in_flight,
        max_pending,
        slow_start: slow_start.map_or(Duration::ZERO, |d| d.0),
        health,
        passive,
        breaker,
    })
}

fn breaker_config(e: &mut Errors, path: &str, raw: RawBreaker) -> BreakerConfig {
    let RawBreaker {
        failure_percent,
        window,
        min_requests,
        open_time,
        trial_requests,
    } = raw;
    let key = |field: &str| format!("{path}.{field}");
    let failure_percent = match failure_percent {
        Some(p) if p == 0 || p > 100 => {
            e.push(key("failure_percent"), "is a percentage, 1 to 100");
            50
        }
        p => p.unwrap_or(50),
    };
    let min_requests = at_least_one(e, &key("min_requests"), min_requests, 20);
    let trial_requests = at_least_one(e, &key("trial_requests"), trial_requests, 3);
    BreakerConfig {
        failure_percent,
        window: positive(e, &key("window"), window, Duration::from_secs(10)),
        min_requests,
        open_time: positive(e, &key("open_time"), open_time, Duration::from_secs(30)),
        trial_requests,
    }
}

fn target(e: &mut Errors, path: &str, raw: RawTarget) -> Option<ServiceTarget> {
    let (url, weight) = match raw {
        RawTarget::Url(url) => (url, None),
        RawTarget::Weighted { url, weight } => (url, weight),
    };
    let weight = match weight {
        Some(w) if w == 0 || w > MAX_WEIGHT => {
            e.push(
                format!("{path}.weight"),
                format!("must be 1 to {MAX_WEIGHT}"),
            );
            return None;
        }
        w => w.unwrap_or(1),
    };
    let upstream = e.check(path, Upstream::parse(&url))?;
    Some(ServiceTarget {
        upstream,
        weight,
        address: None,
    })
}

fn health_check(e: &mut Errors, path: &str, raw: RawHealthCheck) -> Option<HealthCheck> {
    let RawHealthCheck {
        path: check_path,
        interval,
        timeout,
        fall,
        rise,
        statuses,
    } = raw;
    let key = |field: &str| format!("{path}.{field}");
    let check_path = match check_path {
        None => {
            e.push(
                key("path"),
                "is required to check targets (e.g. \"/healthz\")",
            );
            return None;
        }
        Some(p) if !p.starts_with('/') || p.parse::<actix_web::http::Uri>().is_err() => {
            e.push(
                key("path"),
                format!("{p:?} must be a path starting with '/'"),
            );
            return None;
        }
        Some(p) => p,
    };
    let interval = positive(e, &key("interval"), interval, Duration::from_secs(5));
    let timeout = positive(e, &key("timeout"), timeout, Duration::from_secs(2));
    let fall = at_least_one(e, &key("fall"), fall, 3);
    let rise = at_least_one(e, &key("rise"), rise, 2);
    let statuses = match statuses {
        None => vec![StatusMatch::Class(2), StatusMatch::Class(3)],
        Some(list) if list.is_empty() => {
            e.push(key("statuses"), "must list at least one status");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| e.check(&key(&format!("statuses[{i}]")), status_match(s)))
            .collect(),
    };
    Some(HealthCheck {
        path: check_path,
        interval,
        timeout,
        fall,
        rise,
        statuses,
    })
}

fn status_match(text: &str) -> Result<StatusMatch, String> {
    let bad = || format!("{text:?} is not a status (\"204\") or a class (\"2xx\")");
    match text.strip_suffix("xx") {
        Some(class) => match class.parse::<u16>() {
            Ok(c @ 1..=5) if class.len() == 1 => Ok(StatusMatch::Class(c)),
            _ => Err(bad()),
        },
        None => match text.parse::<u16>() {
            Ok(code @ 100..=599) => Ok(StatusMatch::Exact(code)),
            _ => Err(bad()),
        },
    }
}

fn passive_health(e: &mut Errors, path: &str, raw: RawPassive) -> PassiveHealth {
    let RawPassive {
        consecutive_failures,
        ejection_time,
        max_ejection_time,
    } = raw;
    let default = PassiveHealth::default();
    let key = |field: &str| format!("{path}.{field}");
    let ejection_time = positive(
        e,
        &key("ejection_time"),
        ejection_time,
        default.ejection_time,
    );
    let max_ejection_time = positive(
        e,
        &key("max_ejection_time"),
        max_ejection_time,
        default.max_ejection_time.max(ejection_time),
    );
    if max_ejection_time < ejection_time {
        e.push(
            key("max_ejection_time"),
            "must not be shorter than ejection_time",
        );
    }
    PassiveHealth {
        consecutive_failures: consecutive_failures.unwrap_or(default.consecutive_failures),
        ejection_time,
        max_ejection_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_as_classes_or_codes() {
        assert_eq!(status_match("2xx"), Ok(StatusMatch::Class(2)));
        assert_eq!(status_match("204"), Ok(StatusMatch::Exact(204)));
        for bad in ["6xx", "22xx", "xx", "42", "abc", "600"] {
            assert!(status_match(bad).is_err(), "{bad}");
        }
        let check = HealthCheck {
            path: "/".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 1,
            rise: 1,
            statuses: vec![StatusMatch::Class(2), StatusMatch::Exact(404)],
        };
        assert!(check.passes(200) && check.passes(299) && check.passes(404));
        assert!(!check.passes(301) && !check.passes(500));
    }
}
