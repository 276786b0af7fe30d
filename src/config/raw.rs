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
}

/// `[upstream]`: the pooled client that talks to upstream services.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub max_connections: Option<usize>,
    pub connect_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
}

/// `[admin]`: the operations listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

/// `[storage]`: the embedded database.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub path: Option<String>,
    pub cache_capacity: Option<ByteSize>,
    pub flush_interval: Option<HumanDuration>,
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
}
