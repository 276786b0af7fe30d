//! The validated configuration the rest of Portcullis uses: typed addresses,
//! durations and compiled routes. Built from the raw layer by [`Config::from_raw`],
//! which collects *every* problem with its key path instead of stopping at the first.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use actix_web::http::{uri::Authority, Method, Uri};
use ipnet::IpNet;

use super::raw::{RawAdmin, RawLog, RawRoute, RawServer, RawStorage, RawUpstream};
use super::{ConfigError, Profile};
use crate::routing::PathPattern;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub profile: Profile,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub admin: AdminConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub routes: Vec<Route>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keep_alive: Duration,
    pub shutdown_grace: Duration,
    pub workers: usize,
}

/// PEM files for the proxy listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub cache_capacity: u64,
    pub flush_interval: Duration,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: slog::Level,
    pub format: LogFormat,
    pub output: LogOutput,
    pub redact_query: Vec<String>,
    pub buffer: usize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// One validated `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    /// The path pattern as written, for logs and the admin API.
    pub path: String,
    pub pattern: PathPattern,
    /// `None` allows every method.
    pub methods: Option<Vec<Method>>,
    pub upstream: Upstream,
    /// The literal prefix removed before forwarding, when `strip_prefix` is on.
    pub strip_prefix: Option<String>,
    /// The route's own timeout, or `server.request_timeout`.
    pub timeout: Duration,
    pub preserve_host: bool,
}

impl Route {
    /// Whether this route serves `method`.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    #[cfg(test)]
    pub fn for_tests(id: &str, path: &str, methods: Option<&[&str]>) -> Route {
        Route {
            id: id.to_owned(),
            path: path.to_owned(),
            pattern: PathPattern::parse(path).unwrap(),
            methods: methods.map(|m| m.iter().map(|m| m.parse().unwrap()).collect()),
            upstream: Upstream::parse("http://127.0.0.1:1").unwrap(),
            strip_prefix: None,
            timeout: Duration::from_secs(1),
            preserve_host: false,
        }
    }
}

/// An upstream base URL, split once so forwarding never re-parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As configured, for logs and metrics.
    pub url: String,
    pub https: bool,
    pub authority: Authority,
    /// Path prefix prepended to every forwarded path; empty or without a trailing `/`.
    pub base_path: String,
}

impl Upstream {
    /// Parses an upstream base URL, explaining what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let not_url = || format!("{text:?} is not an http(s) URL");
        let uri: Uri = text.parse().map_err(|_| not_url())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(not_url()),
        };
        let authority = uri.authority().cloned().ok_or_else(not_url)?;
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(format!("{text:?} must name a host (and no user info)"));
        }
        if uri.query().is_some() {
            return Err(format!("{text:?} must not have a query string"));
        }
        Ok(Upstream {
            url: text.to_owned(),
            https,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// Collects validation errors under key paths.
struct Errors<'a>(&'a mut Vec<ConfigError>);

impl Errors<'_> {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// Runs a parser, recording its error under `path`.
    fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(path, message)).ok()
    }
}

fn positive(
    errors: &mut Errors,
    path: &str,
    value: Option<Duration>,
    default: Duration,
) -> Duration {
    match value {
        Some(d) if d.is_zero() => {
            errors.push(path, "must be greater than zero");
            default
        }
        Some(d) => d,
        None => default,
    }
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a socket address (ip:port, e.g. \"127.0.0.1:8080\")"))
}

/// Raw sections gathered by the loader, ready for validation.
pub(super) struct RawSections {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub admin: RawAdmin,
    pub storage: RawStorage,
    pub log: RawLog,
    pub routes: Vec<RawRoute>,
}

/// The largest header section accepted at all: actix-http's own parser limit.
pub const HEADER_BYTES_CEILING: u64 = 128 * 1024;

impl Config {
    pub(super) fn from_raw(
        profile: Profile,
        raw: RawSections,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Config> {
        let before = errors.len();
        let mut e = Errors(errors);
        let server = server_config(&mut e, raw.server);
        let upstream = upstream_config(&mut e, raw.upstream);
        let admin = AdminConfig {
            listen: raw
                .admin
                .listen
                .and_then(|l| e.check("admin.listen", socket_addr(&l)))
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9901))),
        };
        let storage = storage_config(&mut e, raw.storage);
        let log = log_config(&mut e, raw.log, profile);
        let routes = routes_config(&mut e, raw.routes, server.request_timeout);
        (errors.len() == before).then_some(Config {
            profile,
            server,
            upstream,
            admin,
            storage,
            log,
            routes,
        })
    }
}

fn server_config(e: &mut Errors, raw: RawServer) -> ServerConfig {
    let RawServer {
        listen,
        tls_cert,
        tls_key,
        trusted_proxies,
        max_header_bytes,
        max_body_bytes,
        request_timeout,
        header_timeout,
        body_timeout,
        keep_alive,
        shutdown_grace,
        workers,
    } = raw;
    let listen = listen
        .and_then(|l| e.check("server.listen", socket_addr(&l)))
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            e.push("server.tls_key", "must be set when server.tls_cert is set");
            None
        }
        (None, Some(_)) => {
            e.push("server.tls_cert", "must be set when server.tls_key is set");
            None
        }
    };
    let trusted_proxies = trusted_proxies
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, text)| e.check(&format!("server.trusted_proxies[{i}]"), parse_cidr(text)))
        .collect();
    let max_header_bytes = match max_header_bytes.map(|s| s.0) {
        None => 16 * 1024,
        Some(0) => {
            e.push("server.max_header_bytes", "must be greater than zero");
            0
        }
        Some(n) if n > HEADER_BYTES_CEILING => {
            e.push(
                "server.max_header_bytes",
                format!("{n} is above the largest supported header section ({HEADER_BYTES_CEILING} bytes)"),
            );
            0
        }
        Some(n) => n as usize,
    };
    let max_body_bytes = match max_body_bytes.map(|s| s.0) {
        None => 10 * 1024 * 1024,
        Some(0) => {
            e.push("server.max_body_bytes", "must be greater than zero");
            0
        }
        Some(n) => n,
    };
    let workers = match workers {
        Some(0) => {
            e.push("server.workers", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    ServerConfig {
        listen,
        tls,
        trusted_proxies,
        max_header_bytes,
        max_body_bytes,
        request_timeout: positive(
            e,
            "server.request_timeout",
            request_timeout.map(|d| d.0),
            Duration::from_secs(30),
        ),
        header_timeout: positive(
            e,
            "server.header_timeout",
            header_timeout.map(|d| d.0),
            Duration::from_secs(10),
        ),
        body_timeout: positive(
            e,
            "server.body_timeout",
            body_timeout.map(|d| d.0),
            Duration::from_secs(30),
        ),
        keep_alive: positive(
            e,
            "server.keep_alive",
            keep_alive.map(|d| d.0),
            Duration::from_secs(60),
        ),
        shutdown_grace: positive(
            e,
            "server.shutdown_grace",
            shutdown_grace.map(|d| d.0),
            Duration::from_secs(30),
        ),
        workers,
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR (e.g. \"10.0.0.0/8\")"))
}

fn upstream_config(e: &mut Errors, raw: RawUpstream) -> UpstreamConfig {
    let RawUpstream {
        max_connections,
        connect_timeout,
        idle_timeout,
    } = raw;
    UpstreamConfig {
        max_connections: match max_connections {
            Some(0) => {
                e.push("upstream.max_connections", "must be at least 1");
                1
            }
            Some(n) => n,
            None => 256,
        },
        connect_timeout: positive(
            e,
            "upstream.connect_timeout",
            connect_timeout.map(|d| d.0),
            Duration::from_secs(5),
        ),
        idle_timeout: positive(
            e,
            "upstream.idle_timeout",
            idle_timeout.map(|d| d.0),
            Duration::from_secs(60),
        ),
    }
}

fn storage_config(e: &mut Errors, raw: RawStorage) -> StorageConfig {
    let RawStorage {
        path,
        cache_capacity,
        flush_interval,
    } = raw;
    StorageConfig {
        path: match path {
            Some(p) if p.trim().is_empty() => {
                e.push("storage.path", "must not be empty");
                PathBuf::new()
            }
            Some(p) => p.into(),
            None => "./portcullis-data".into(),
        },
        cache_capacity: cache_capacity.map_or(16 * 1024 * 1024, |s| s.0),
        flush_interval: positive(
            e,
            "storage.flush_interval",
            flush_interval.map(|d| d.0),
            Duration::from_millis(500),
        ),
    }
}

fn log_config(e: &mut Errors, raw: RawLog, profile: Profile) -> LogConfig {
    let RawLog {
        level,
        format,
        output,
        redact_query,
        buffer,
    } = raw;
    let level = match level.as_deref().unwrap_or("info") {
        "error" => slog::Level::Error,
        "warn" => slog::Level::Warning,
        "info" => slog::Level::Info,
        "debug" => slog::Level::Debug,
        "trace" => slog::Level::Trace,
        other => {
            e.push(
                "log.level",
                format!("{other:?} is not one of error, warn, info, debug, trace"),
            );
            slog::Level::Info
        }
    };
    let format = match format.as_deref() {
        Some("json") => LogFormat::Json,
        Some("pretty") => LogFormat::Pretty,
        None if profile == Profile::Dev => LogFormat::Pretty,
        None => LogFormat::Json,
        Some(other) => {
            e.push(
                "log.format",
                format!("{other:?} is not one of json, pretty"),
            );
            LogFormat::Json
        }
    };
    let output = match output.as_deref() {
        None | Some("stdout") => LogOutput::Stdout,
        Some("stderr") => LogOutput::Stderr,
        Some("") => {
            e.push("log.output", "must be stdout, stderr or a file path");
            LogOutput::Stdout
        }
        Some(path) => LogOutput::File(path.into()),
    };
    let buffer = match buffer {
        Some(0) => {
            e.push("log.buffer", "must be at least 1");
            1
        }
        Some(n) => n,
        None => 65_536,
    };
    LogConfig {
        level,
        format,
        output,
        redact_query: redact_query.unwrap_or_default(),
        buffer,
    }
}

fn routes_config(e: &mut Errors, raw: Vec<RawRoute>, default_timeout: Duration) -> Vec<Route> {
    let mut routes = Vec::with_capacity(raw.len());
    let mut seen_ids: Vec<String> = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let RawRoute {
            id,
            path,
            methods,
            upstream,
            strip_prefix,
            timeout,
            preserve_host,
        } = raw;
        let key = |field: &str| format!("routes[{i}].{field}");
        let id = match id {
            None => {
                e.push(key("id"), "is required");
                None
            }
            Some(id)
                if id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                e.push(
                    key("id"),
                    format!(
                        "{id:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
                    ),
                );
                None
            }
            Some(id) if seen_ids.contains(&id) => {
                e.push(
                    key("id"),
                    format!("{id:?} is already used by another route"),
                );
                None
            }
            Some(id) => {
                seen_ids.push(id.clone());
                Some(id)
            }
        };
        let pattern = match &path {
            None => {
                e.push(key("path"), "is required");
                None
            }
            Some(p) => e.check(&key("path"), PathPattern::parse(p)),
        };
        let methods = methods.map(|list| {
            if list.is_empty() {
                e.push(
                    key("methods"),
                    "must list at least one method (leave it out to allow all)",
                );
            }
            list.iter()
                .enumerate()
                .filter_map(|(j, m)| e.check(&format!("routes[{i}].methods[{j}]"), parse_method(m)))
                .collect()
        });
        let upstream = match upstream {
            None => {
                e.push(key("upstream"), "is required");
                None
            }
            Some(u) => e.check(&key("upstream"), Upstream::parse(&u)),
        };
        let timeout = positive(e, &key("timeout"), timeout.map(|d| d.0), default_timeout);
        if let (Some(id), Some(pattern), Some(upstream), Some(path)) = (id, pattern, upstream, path)
        {
            let strip_prefix = strip_prefix
                .unwrap_or(false)
                .then(|| pattern.literal_prefix());
            routes.push(Route {
                id,
                path,
                pattern,
                methods,
                upstream,
                strip_prefix,
                timeout,
                preserve_host: preserve_host.unwrap_or(false),
            });
        }
    }
    routes
}

fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "TRACE" => {
            Ok(upper.parse().expect("standard methods parse"))
        }
        _ => Err(format!(
            "{text:?} is not an HTTP method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_split_once() {
        let u = Upstream::parse("https://api.internal:8443/base/").unwrap();
        assert!(u.https);
        assert_eq!(u.authority.as_str(), "api.internal:8443");
        assert_eq!(u.base_path, "/base");
        assert_eq!(Upstream::parse("http://x").unwrap().base_path, "");
        assert_eq!(
            Upstream::parse("htp://x").unwrap_err(),
            "\"htp://x\" is not an http(s) URL"
        );
        assert!(Upstream::parse("http://x/?a=1").is_err());
        assert!(Upstream::parse("/just/a/path").is_err());
    }
}
