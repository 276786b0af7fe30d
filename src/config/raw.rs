//! The configuration exactly as an operator writes it (TOML file and
//! `PORTCULLIS_` environment), before validation. Every field is optional so
//! that defaults live in one place: the conversion to the validated model.
//! Unknown keys are errors, so a typo can never pass silently.

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration};

/// `[server]`: the proxy listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_header_bytes: Option<ByteSize>,
    pub max_body_bytes: Option<ByteSize>,
    pub request_timeout: Option<HumanDuration>,
    pub header_timeout: Option<HumanDuration>,
    pub body_timeout: Option<HumanDuration>,
    pub keep_alive: Option<HumanDuration>,
    pub shutdown_grace: Option<HumanDuration>,
    pub workers: Option<usize>,
    pub max_connections: Option<usize>,
    pub allow_underscore_headers: Option<bool>,
    pub client_ipv4_prefix: Option<u8>,
    pub client_ipv6_prefix: Option<u8>,
    /// The rate-limit policies applied to routes that name none.
    pub rate_limit: Option<OneOrMany>,
}

/// One `[rate_limits.<name>]` policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub key: Option<Vec<String>>,
    pub limit: Option<u64>,
    pub window: Option<HumanDuration>,
    pub fail: Option<String>,
    pub roles: Option<std::collections::BTreeMap<String, u64>>,
}

/// A route's `rate_limit`: one policy name (or "none") or a list of names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[upstream]`: the pooled client that talks to upstream services.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub max_connections: Option<usize>,
    pub connect_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub resolve_interval: Option<HumanDuration>,
    pub resolvers: Option<Vec<String>>,
}

/// One `[upstreams.<name>]` service: several targets behind one name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub targets: Option<Vec<RawTarget>>,
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub retries: Option<u32>,
    pub retry_methods: Option<Vec<String>>,
    pub panic_threshold: Option<u8>,
    pub max_in_flight: Option<u32>,
    pub max_pending: Option<u32>,
    pub slow_start: Option<HumanDuration>,
    pub health: Option<RawHealthCheck>,
    pub passive: Option<RawPassive>,
    pub breaker: Option<RawBreaker>,
}

/// `[upstreams.<name>.breaker]`: the error-ratio circuit breaker.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failure_percent: Option<u8>,
    pub window: Option<HumanDuration>,
    pub min_requests: Option<u32>,
    pub open_time: Option<HumanDuration>,
    pub trial_requests: Option<u32>,
}

/// A service's target: a URL, or a URL with a weight.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTarget {
    Url(String),
    Weighted { url: String, weight: Option<u32> },
}

/// `[upstreams.<name>.health]`: active checks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    pub statuses: Option<Vec<String>>,
}

/// `[upstreams.<name>.passive]`: ejection on failed requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub consecutive_failures: Option<u32>,
    pub ejection_time: Option<HumanDuration>,
    pub max_ejection_time: Option<HumanDuration>,
}

/// `[admin]`: the operations listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub token: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub role: Option<String>,
    pub viewer_role: Option<String>,
    pub session_idle_timeout: Option<HumanDuration>,
    pub session_lifetime: Option<HumanDuration>,
    pub recent_log_bytes: Option<ByteSize>,
    pub audit_records: Option<usize>,
}

/// `[session]`: the session cookies Portcullis issues.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub cookie_name: Option<String>,
    pub secure: Option<bool>,
    pub same_site: Option<String>,
    pub idle_timeout: Option<HumanDuration>,
    pub max_lifetime: Option<HumanDuration>,
    pub rotate_after: Option<HumanDuration>,
    pub rotation_grace: Option<HumanDuration>,
    pub touch_interval: Option<HumanDuration>,
    pub tunnel_check_interval: Option<HumanDuration>,
    pub login_path: Option<String>,
    pub logout_path: Option<String>,
    pub session_path: Option<String>,
    pub trusted_origins: Option<Vec<String>>,
    pub user_id_header: Option<String>,
    pub roles_header: Option<String>,
    pub session_id_header: Option<String>,
}

/// `[login]`: passwords and brute-force throttling.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    pub min_password_length: Option<usize>,
    pub max_failures_per_user: Option<u64>,
    pub max_failures_per_ip: Option<u64>,
    pub failure_window: Option<HumanDuration>,
    pub max_concurrent_hashes: Option<usize>,
    pub max_hash_wait: Option<HumanDuration>,
}

/// `[storage]`: the embedded database.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub path: Option<String>,
    pub cache_capacity: Option<ByteSize>,
    pub session_cache: Option<usize>,
    pub rate_limit_keys: Option<usize>,
    pub login_throttle_keys: Option<usize>,
    pub flush_interval: Option<HumanDuration>,
    pub sweep_interval: Option<HumanDuration>,
    pub backend: Option<String>,
    pub redis: Option<RawRedis>,
}

/// `[storage.redis]`: the shared store of several nodes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<String>,
    /// Best set through `PORTCULLIS_STORAGE__REDIS__PASSWORD`.
    pub password: Option<String>,
    pub key_prefix: Option<String>,
    pub connect_timeout: Option<HumanDuration>,
    pub command_timeout: Option<HumanDuration>,
    pub health_interval: Option<HumanDuration>,
    pub session_fallback: Option<HumanDuration>,
    pub tls_ca_file: Option<String>,
}

/// `[log]`: the system and access log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
    pub output: Option<String>,
    pub redact_query: Option<Vec<String>>,
    pub buffer: Option<usize>,
    pub buffer_bytes: Option<ByteSize>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub id: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub strip_prefix: Option<bool>,
    pub timeout: Option<HumanDuration>,
    pub preserve_host: Option<bool>,
    pub auth: Option<String>,
    pub roles: Option<Vec<String>>,
    pub permissions: Option<Vec<String>>,
    pub csrf: Option<bool>,
    pub login_redirect: Option<bool>,
    pub rate_limit: Option<OneOrMany>,
    pub request_headers: Option<RawHeaderRules>,
    pub response_headers: Option<RawHeaderRules>,
    pub websocket: Option<bool>,
    pub tunnel_idle_timeout: Option<HumanDuration>,
}

/// A route's `request_headers` or `response_headers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    pub remove: Option<Vec<String>>,
    pub set: Option<std::collections::BTreeMap<String, String>>,
    pub add: Option<std::collections::BTreeMap<String, String>>,
}
