//! The validated configuration the rest of Portcullis uses: typed addresses,
//! durations and compiled routes. Built from the raw layer by [`Config::from_raw`],
//! which collects *every* problem with its key path instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use actix_web::http::{uri::Authority, Method, Uri};
use ipnet::IpNet;

use super::header_rules::{self, HeaderRules};
use super::rate_limits::{self, RateLimitPolicy};
use super::raw::{
    RawAdmin, RawLog, RawLogin, RawRateLimit, RawRedis, RawRoute, RawServer, RawService,
    RawSession, RawStorage, RawUpstream,
};
use super::services::{self, ServiceConfig};
use super::units::HumanDuration;
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
    pub session: SessionConfig,
    pub login: LoginConfig,
    /// Every rate-limit policy, by name.
    pub rate_limits: Vec<Arc<RateLimitPolicy>>,
    /// `server.rate_limit`: the policies of routes that name none.
    pub default_rate_limits: Vec<Arc<RateLimitPolicy>>,
    /// `[upstreams.<name>]`: services routes can name, by name.
    pub upstreams: BTreeMap<String, Arc<ServiceConfig>>,
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
    /// Client connections open at once, across all workers; more are closed at once.
    pub max_connections: usize,
    /// How much of a client address per-address limits and login throttling count by.
    pub address_prefixes: AddressPrefixes,
    /// Forward request headers whose names contain `_` (dropped by default).
    pub allow_underscore_headers: bool,
}

/// Prefix lengths that turn a client address into the network counted by
/// per-address limits: one host usually owns a whole IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPrefixes {
    pub v4: u8,
    pub v6: u8,
}

impl Default for AddressPrefixes {
    fn default() -> Self {
        AddressPrefixes { v4: 32, v6: 64 }
    }
}

/// PEM files for the proxy listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[upstream]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// How often the host names of service targets are resolved again.
    pub resolve_interval: Duration,
    /// DNS servers to ask instead of the system's resolver.
    pub resolvers: Vec<SocketAddr>,
}

/// `[admin]`.
#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Bearer token for automation on `/admin/api/*`; none by default.
    pub token: Option<String>,
    /// Host names (lower case, without port) the console and API answer
    /// to; any other `Host` is refused, so a DNS-rebinding page cannot
    /// reach them.
    pub hosts: Vec<String>,
    /// The role that may do everything in the console and API.
    pub role: String,
    /// The role that may look at everything and change nothing.
    pub viewer_role: String,
    pub session_idle_timeout: Duration,
    pub session_lifetime: Duration,
    /// Memory for the most recent access-log records the console shows.
    pub recent_log_bytes: usize,
    /// Admin audit records kept; the oldest go first.
    pub audit_records: usize,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("hosts", &self.hosts)
            .field("role", &self.role)
            .field("viewer_role", &self.viewer_role)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("session_lifetime", &self.session_lifetime)
            .field("recent_log_bytes", &self.recent_log_bytes)
            .field("audit_records", &self.audit_records)
            .finish()
    }
}

/// `[session]`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub rotate_after: Duration,
    pub rotation_grace: Duration,
    pub touch_interval: Duration,
    /// How often open WebSocket tunnels are checked against their
    /// sessions: a revoked session's tunnels end within this long.
    pub tunnel_check_interval: Duration,
    pub login_path: String,
    pub logout_path: String,
    pub session_path: String,
    pub trusted_origins: Vec<String>,
    pub user_id_header: HeaderName,
    pub roles_header: HeaderName,
    pub session_id_header: HeaderName,
}

impl SessionConfig {
    /// The headers that carry who the user is upstream: the gateway's alone.
    pub fn identity_headers(&self) -> [&HeaderName; 3] {
        [
            &self.user_id_header,
            &self.roles_header,
            &self.session_id_header,
        ]
    }
}

/// The cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// `[login]`.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub min_password_length: usize,
    pub max_failures_per_user: u64,
    pub max_failures_per_ip: u64,
    pub failure_window: Duration,
    /// Password verifications (argon2) allowed at once; each takes ~19 MiB.
    pub max_concurrent_hashes: usize,
    /// How long a login waits for a verification slot before a 503.
    pub max_hash_wait: Duration,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub cache_capacity: u64,
    /// How many sessions are held in memory (the most recently active);
    /// the others are read from the database when next presented.
    pub session_cache: usize,
    /// Rate-limit keys held in memory; past it, the least-used are evicted.
    pub rate_limit_keys: usize,
    /// Login-throttle keys (usernames and addresses) held in memory; past it,
    /// the least-used are evicted.
    pub login_throttle_keys: usize,
    pub flush_interval: Duration,
    /// How often expired sessions and rate-limit counters are removed.
    pub sweep_interval: Duration,
    /// Where users, sessions, counters, routes and the audit trail live.
    pub backend: StorageBackend,
}

/// `storage.backend`.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageBackend {
    /// This node's embedded database alone (the default).
    Sled,
    /// A Redis (or Valkey) server shared by several nodes.
    Redis(RedisConfig),
}

/// `[storage.redis]`.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS), with an optional `/db` number.
    pub url: String,
    pub password: Option<String>,
    /// Prepended to every key and channel, so several deployments can share a server.
    pub key_prefix: String,
    pub connect_timeout: Duration,
    /// The longest any one call may take; past it the call has failed.
    pub command_timeout: Duration,
    /// How often the server is pinged to tell whether it is up.
    pub health_interval: Duration,
    /// How long, once Redis is down, the sessions this node holds in memory
    /// keep being accepted before every request needing one fails closed.
    pub session_fallback: Duration,
    /// PEM certificates to trust for `rediss://` instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RedisConfig {
    /// Never prints the password (the URL's or the setting's).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url_password(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced by `***`, for logs and errors: in
/// the user information, or a `pass=` / `password=` query parameter (the
/// form of Unix-socket URLs).
pub fn redact_url_password(url: &str) -> String {
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name @ ("pass" | "password"), _)) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url.to_owned(),
    };
    let url = url.as_str();
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl StorageConfig {
    /// Defaults in `dir/data`, with small caches, for unit tests.
    #[cfg(test)]
    pub fn for_tests(dir: &std::path::Path) -> StorageConfig {
        StorageConfig {
            path: dir.join("data"),
            cache_capacity: 1 << 20,
            session_cache: 1000,
            rate_limit_keys: 1000,
            login_throttle_keys: 1000,
            flush_interval: Duration::from_millis(500),
            sweep_interval: Duration::from_secs(60),
            backend: StorageBackend::Sled,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: slog::Level,
    pub format: LogFormat,
    pub output: LogOutput,
    pub redact_query: Vec<String>,
    /// Lines waiting for the writer, at most.
    pub buffer: usize,
    /// Bytes waiting for the writer, at most.
    pub buffer_bytes: usize,
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
    /// Where the route was defined.
    pub origin: RouteOrigin,
    /// The path pattern as written, for logs and the admin API.
    pub path: String,
    pub pattern: PathPattern,
    /// `None` allows every method.
    pub methods: Option<Vec<Method>>,
    pub upstream: RouteUpstream,
    /// Remove the pattern's leading literal segments before forwarding.
    pub strip_prefix: bool,
    /// The route's own timeout, or `server.request_timeout`.
    pub timeout: Duration,
    pub preserve_host: bool,
    /// Who may use the route; authenticated (deny by default) unless `auth = "public"`.
    pub policy: AuthPolicy,
    /// Reject cross-site unsafe requests authenticated by cookie.
    pub csrf: bool,
    /// Send browser navigations without a session to the login page instead of a 401.
    pub login_redirect: bool,
    /// Every policy must admit the request.
    pub rate_limits: Vec<Arc<RateLimitPolicy>>,
    /// Headers changed on the request before it is forwarded...
    pub request_headers: HeaderRules,
    /// ...and on the response before it is answered.
    pub response_headers: HeaderRules,
    /// Whether `Upgrade: websocket` requests are tunnelled to the upstream.
    pub websocket: bool,
    /// How long a tunnel may carry nothing either way before it is closed.
    pub tunnel_idle_timeout: Duration,
}

/// Where a route sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteUpstream {
    /// One URL.
    Url(Upstream),
    /// A `[upstreams.<name>]` service, by name.
    Service(Arc<str>),
}

impl RouteUpstream {
    /// As configured: the URL or the service's name.
    pub fn label(&self) -> &str {
        match self {
            RouteUpstream::Url(upstream) => &upstream.url,
            RouteUpstream::Service(name) => name,
        }
    }
}

/// Where a route was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOrigin {
    /// `[[routes]]` in the configuration file.
    File,
    /// Made through the admin API, stored in the database.
    Api,
}

impl RouteOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteOrigin::File => "file",
            RouteOrigin::Api => "api",
        }
    }
}

/// A route's authorization policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    Public,
    /// A valid session, holding any one of `roles` (when listed) and every one of `permissions`.
    Authenticated {
        roles: Vec<String>,
        permissions: Vec<String>,
    },
}

impl Route {
    /// The route as the admin API shows it: what was configured, in the
    /// keys of a `[[routes]]` entry, plus where it came from.
    pub fn summary(&self) -> serde_json::Value {
        let (auth, roles, permissions) = match &self.policy {
            AuthPolicy::Public => ("public", &[][..], &[][..]),
            AuthPolicy::Authenticated { roles, permissions } => {
                ("authenticated", &roles[..], &permissions[..])
            }
        };
        serde_json::json!({
            "id": self.id,
            "origin": self.origin.as_str(),
            "path": self.path,
            "methods": self.methods.as_ref().map(|m| m.iter().map(Method::as_str).collect::<Vec<_>>()),
            "upstream": self.upstream.label(),
            "strip_prefix": self.strip_prefix,
            "timeout": humantime::format_duration(self.timeout).to_string(),
            "preserve_host": self.preserve_host,
            "auth": auth,
            "roles": roles,
            "permissions": permissions,
            "csrf": self.csrf,
            "login_redirect": self.login_redirect,
            "rate_limit": self.rate_limits.iter().map(|p| &*p.name).collect::<Vec<_>>(),
            "request_headers": self.request_headers.summary(),
            "response_headers": self.response_headers.summary(),
            "websocket": self.websocket,
            "tunnel_idle_timeout": humantime::format_duration(self.tunnel_idle_timeout).to_string(),
        })
    }

    /// Whether this route serves `method`.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    #[cfg(test)]
    pub fn for_tests(id: &str, path: &str, methods: Option<&[&str]>) -> Route {
        Route {
            id: id.to_owned(),
            origin: RouteOrigin::File,
            path: path.to_owned(),
            pattern: PathPattern::parse(path).unwrap(),
            methods: methods.map(|m| m.iter().map(|m| m.parse().unwrap()).collect()),
            upstream: RouteUpstream::Url(Upstream::parse("http://127.0.0.1:1").unwrap()),
            strip_prefix: false,
            timeout: Duration::from_secs(1),
            preserve_host: false,
            policy: AuthPolicy::Public,
            csrf: true,
            login_redirect: false,
            rate_limits: Vec::new(),
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            websocket: true,
            tunnel_idle_timeout: DEFAULT_TUNNEL_IDLE_TIMEOUT,
        }
    }
}

/// A WebSocket tunnel's idle timeout unless its route sets one: long
/// enough for quiet dashboards and chats, short enough to reclaim dead ones.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

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
    /// The URL's host, without the brackets of an IPv6 literal.
    pub fn host(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The URL's port, or its scheme's.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.https { 443 } else { 80 })
    }

    /// The URL of `path` (and `query`) at this upstream: scheme, authority,
    /// base path, path. With `address`, a plain-HTTP URL names the address
    /// instead of the host, so that connections are pooled per address
    /// (HTTPS keeps the name, which TLS verifies; the address is given to
    /// the client apart).
    pub fn url_of(
        &self,
        address: Option<std::net::SocketAddr>,
        path: &str,
        query: Option<&str>,
    ) -> String {
        use std::fmt::Write as _;
        let path = if path.is_empty() { "/" } else { path };
        let mut url = String::with_capacity(
            8 + self.authority.as_str().len()
                + self.base_path.len()
                + path.len()
                + query.map_or(0, |q| q.len() + 1),
        );
        url.push_str(if self.https { "https://" } else { "http://" });
        match address {
            Some(address) if !self.https => {
                let _ = write!(url, "{address}");
            }
            _ => url.push_str(self.authority.as_str()),
        }
        url.push_str(&self.base_path);
        url.push_str(path);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        url
    }

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
pub(super) struct Errors<'a>(&'a mut Vec<ConfigError>);

impl<'a> Errors<'a> {
    pub(super) fn new(errors: &'a mut Vec<ConfigError>) -> Errors<'a> {
        Errors(errors)
    }

    /// Problems recorded so far, to tell whether a part added any.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// Runs a parser, recording its error under `path`.
    pub(super) fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(path, message)).ok()
    }
}

/// A duration that must not be zero, or `default` when unset.
pub(super) fn positive(
    errors: &mut Errors,
    path: &str,
    value: Option<HumanDuration>,
    default: Duration,
) -> Duration {
    match value.map(|d| d.0) {
        Some(d) if d.is_zero() => {
            errors.push(path, "must be greater than zero");
            default
        }
        Some(d) => d,
        None => default,
    }
}

/// A count that must be at least 1, or `default` when unset.
pub(super) fn at_least_one<T: Copy + PartialEq + From<u8>>(
    errors: &mut Errors,
    path: &str,
    value: Option<T>,
    default: T,
) -> T {
    if value == Some(T::from(0)) {
        errors.push(path, "must be at least 1");
        return default;
    }
    value.unwrap_or(default)
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
    pub session: RawSession,
    pub login: RawLogin,
    /// Every policy declared; `None` for one that could not be read.
    pub rate_limits: BTreeMap<String, Option<RawRateLimit>>,
    /// Every service declared; `None` for one that could not be read.
    pub upstreams: BTreeMap<String, Option<RawService>>,
    pub routes: Vec<RawRoute>,
}

/// The largest header section accepted at all: actix-http's own parser limit.
pub const HEADER_BYTES_CEILING: u64 = 128 * 1024;

impl Config {
    pub(super) fn from_raw(
        profile: Profile,
        mut raw: RawSections,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Config> {
        let before = errors.len();
        let mut e = Errors(errors);
        let default_rate_limit = raw.server.rate_limit.take();
        let server = server_config(&mut e, raw.server);
        let upstream = upstream_config(&mut e, raw.upstream);
        let admin = admin_config(&mut e, raw.admin);
        let storage = storage_config(&mut e, raw.storage);
        let log = log_config(&mut e, raw.log, profile);
        let session = session_config(&mut e, raw.session, profile);
        let login = login_config(&mut e, raw.login);
        let policies = rate_limits::policies(&mut e, raw.rate_limits);
        let declared_services = raw.upstreams.keys().cloned().collect();
        let upstreams = services::services(&mut e, raw.upstreams);
        let default_limits = rate_limits::attach(
            &mut e,
            "server.rate_limit",
            default_rate_limit,
            &policies,
            &[],
        );
        let context = RouteContext {
            default_timeout: server.request_timeout,
            policies,
            default_limits,
            services: declared_services,
            owned_headers: session.identity_headers().map(Clone::clone).to_vec(),
        };
        let routes = routes_config(&mut e, raw.routes, &context);
        (errors.len() == before).then_some(Config {
            profile,
            server,
            upstream,
            admin,
            storage,
            log,
            session,
            login,
            rate_limits: context.policies.usable.into_values().collect(),
            default_rate_limits: context.default_limits,
            upstreams,
            routes,
        })
    }
}

fn admin_config(e: &mut Errors, raw: RawAdmin) -> AdminConfig {
    let RawAdmin {
        listen,
        tls_cert,
        tls_key,
        token,
        hosts,
        role,
        viewer_role,
        session_idle_timeout,
        session_lifetime,
        recent_log_bytes,
        audit_records,
    } = raw;
    let listen = listen
        .and_then(|l| e.check("admin.listen", socket_addr(&l)))
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9901)));
    let hosts = match hosts {
        None => default_admin_hosts(listen),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, h)| e.check(&format!("admin.hosts[{i}]"), admin_host(h)))
            .collect(),
    };
    let role = role_name(e, "admin.role", role, "admin");
    let viewer_role = role_name(e, "admin.viewer_role", viewer_role, "viewer");
    if role == viewer_role {
        e.push("admin.viewer_role", "must differ from admin.role");
    }
    let token = match token {
        Some(t) if t.len() < 16 => {
            e.push(
                "admin.token",
                "is too short to be a secret (use at least 16 characters)",
            );
            None
        }
        other => other,
    };
    let recent_log_bytes = recent_log_bytes
        .map_or(crate::telemetry::recent::DEFAULT_RECENT_LOG_BYTES, |s| {
            s.0 as usize
        });
    if recent_log_bytes < 64 * 1024 {
        e.push("admin.recent_log_bytes", "must be at least 64KiB");
    }
    AdminConfig {
        listen,
        tls: tls_files(e, "admin", tls_cert, tls_key),
        token,
        hosts,
        role,
        viewer_role,
        session_idle_timeout: positive(
            e,
            "admin.session_idle_timeout",
            session_idle_timeout,
            Duration::from_secs(30 * 60),
        ),
        session_lifetime: positive(
            e,
            "admin.session_lifetime",
            session_lifetime,
            Duration::from_secs(8 * 3600),
        ),
        recent_log_bytes,
        audit_records: at_least_one(e, "admin.audit_records", audit_records, 10_000),
    }
}

/// The names a listener on `listen` is reached by without configuration:
/// the loopback names for a loopback address, else the address itself.
fn default_admin_hosts(listen: SocketAddr) -> Vec<String> {
    match listen.ip() {
        ip if ip.is_loopback() || ip.is_unspecified() => ["localhost", "127.0.0.1", "[::1]"]
            .map(String::from)
            .to_vec(),
        IpAddr::V6(v6) => vec![format!("[{v6}]")],
        IpAddr::V4(v4) => vec![v4.to_string()],
    }
}

/// A host name or IP literal as browsers send it in `Host` (IPv6 in brackets), lower case.
fn admin_host(text: &str) -> Result<String, String> {
    let host = text.trim().to_ascii_lowercase();
    let host = match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host,
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && (host.starts_with('[')
            && host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if valid {
        Ok(host)
    } else {
        Err(format!(
            "{text:?} is not a host name or IP address (without a port or scheme)"
        ))
    }
}

/// A role name: non-empty, printable, no ','.
fn role_name(e: &mut Errors, path: &str, value: Option<String>, default: &str) -> String {
    match value {
        None => default.to_owned(),
        Some(name)
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b',') =>
        {
            name
        }
        Some(name) => {
            e.push(
                path,
                format!("{name:?} must be non-empty, printable and without ','"),
            );
            default.to_owned()
        }
    }
}

/// A certificate and key pair for `section`'s listener: both or neither.
fn tls_files(
    e: &mut Errors,
    section: &str,
    cert: Option<String>,
    key: Option<String>,
) -> Option<TlsFiles> {
    match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            e.push(
                format!("{section}.tls_key"),
                format!("must be set when {section}.tls_cert is set"),
            );
            None
        }
        (None, Some(_)) => {
            e.push(
                format!("{section}.tls_cert"),
                format!("must be set when {section}.tls_key is set"),
            );
            None
        }
    }
}

fn session_config(e: &mut Errors, raw: RawSession, profile: Profile) -> SessionConfig {
    let RawSession {
        cookie_name,
        secure,
        same_site,
        idle_timeout,
        max_lifetime,
        rotate_after,
        rotation_grace,
        touch_interval,
        tunnel_check_interval,
        login_path,
        logout_path,
        session_path,
        trusted_origins,
        user_id_header,
        roles_header,
        session_id_header,
    } = raw;
    let secure = secure.unwrap_or(profile != Profile::Dev);
    let cookie_name = match cookie_name {
        Some(name) if name.is_empty() || !name.bytes().all(is_token_byte) => {
            e.push(
                "session.cookie_name",
                format!("{name:?} is not a valid cookie name"),
            );
            name
        }
        Some(name) if !secure && (name.starts_with("__Host-") || name.starts_with("__Secure-")) => {
            e.push(
                "session.cookie_name",
                format!("{name:?}: browsers accept __Host- and __Secure- cookies only with session.secure = true"),
            );
            name
        }
        Some(name) => name,
        // The __Host- prefix makes browsers insist on Secure, Path=/ and no Domain.
        None if secure => "__Host-portcullis_session".to_owned(),
        None => "portcullis_session".to_owned(),
    };
    let same_site = match same_site.as_deref().unwrap_or("lax") {
        "strict" => SameSite::Strict,
        "lax" => SameSite::Lax,
        "none" if !secure => {
            e.push(
                "session.same_site",
                "\"none\" requires session.secure = true",
            );
            SameSite::None
        }
        "none" => SameSite::None,
        other => {
            e.push(
                "session.same_site",
                format!("{other:?} is not one of strict, lax, none"),
            );
            SameSite::Lax
        }
    };
    let mut duration = |key: &str, value: Option<HumanDuration>, default: u64| {
        positive(e, key, value, Duration::from_secs(default))
    };
    let idle_timeout = duration("session.idle_timeout", idle_timeout, 30 * 60);
    let max_lifetime = duration("session.max_lifetime", max_lifetime, 12 * 3600);
    let rotate_after = duration("session.rotate_after", rotate_after, 15 * 60);
    let rotation_grace = duration("session.rotation_grace", rotation_grace, 30);
    let touch_interval = duration("session.touch_interval", touch_interval, 5);
    let tunnel_check_interval = duration("session.tunnel_check_interval", tunnel_check_interval, 1);
    let mut path = |key: &str, value: Option<String>, default: &str| match value {
        Some(p)
            if !p.starts_with('/')
                || PathPattern::parse(&p).is_err()
                || p.contains('{')
                || p.ends_with('*') =>
        {
            e.push(
                key,
                format!("{p:?} must be a plain absolute path such as {default:?}"),
            );
            default.to_owned()
        }
        Some(p) => p,
        None => default.to_owned(),
    };
    let login_path = path("session.login_path", login_path, "/auth/login");
    let logout_path = path("session.logout_path", logout_path, "/auth/logout");
    let session_path = path("session.session_path", session_path, "/auth/session");
    if login_path == logout_path || login_path == session_path || logout_path == session_path {
        e.push(
            "session",
            "login_path, logout_path and session_path must differ",
        );
    }
    let trusted_origins = trusted_origins
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, origin)| {
            e.check(
                &format!("session.trusted_origins[{i}]"),
                parse_origin(&origin),
            )
        })
        .collect();
    let mut header = |key: &str, value: Option<String>, default: &'static str| match value {
        Some(name) => e
            .check(
                key,
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a valid header name")),
            )
            .unwrap_or(HeaderName::from_static(default)),
        None => HeaderName::from_static(default),
    };
    SessionConfig {
        cookie_name,
        secure,
        same_site,
        idle_timeout,
        max_lifetime,
        rotate_after,
        rotation_grace,
        touch_interval,
        tunnel_check_interval,
        login_path,
        logout_path,
        session_path,
        trusted_origins,
        user_id_header: header("session.user_id_header", user_id_header, "x-user-id"),
        roles_header: header("session.roles_header", roles_header, "x-user-roles"),
        session_id_header: header(
            "session.session_id_header",
            session_id_header,
            "x-session-id",
        ),
    }
}

/// RFC 6265 cookie-name characters (an HTTP token).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `https://app.example.com[:port]`, normalised to lower case without a trailing slash.
fn parse_origin(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not an origin such as \"https://app.example.com\"");
    let uri: Uri = text.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.authority(), uri.path()) {
        (Some("http" | "https"), Some(authority), "" | "/") if uri.query().is_none() => {
            Ok(format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("https"),
                authority.as_str().to_ascii_lowercase()
            ))
        }
        _ => Err(bad()),
    }
}

fn login_config(e: &mut Errors, raw: RawLogin) -> LoginConfig {
    let RawLogin {
        min_password_length,
        max_failures_per_user,
        max_failures_per_ip,
        failure_window,
        max_concurrent_hashes,
        max_hash_wait,
    } = raw;
    LoginConfig {
        min_password_length: at_least_one(e, "login.min_password_length", min_password_length, 12),
        max_failures_per_user: at_least_one(
            e,
            "login.max_failures_per_user",
            max_failures_per_user,
            5,
        ),
        max_failures_per_ip: at_least_one(e, "login.max_failures_per_ip", max_failures_per_ip, 20),
        failure_window: positive(
            e,
            "login.failure_window",
            failure_window,
            Duration::from_secs(15 * 60),
        ),
        max_concurrent_hashes: at_least_one(
            e,
            "login.max_concurrent_hashes",
            max_concurrent_hashes,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ),
        max_hash_wait: positive(
            e,
            "login.max_hash_wait",
            max_hash_wait,
            Duration::from_secs(2),
        ),
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
        max_connections,
        allow_underscore_headers,
        client_ipv4_prefix,
        client_ipv6_prefix,
        rate_limit: _, // resolved together with the routes
    } = raw;
    let listen = listen
        .and_then(|l| e.check("server.listen", socket_addr(&l)))
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let tls = tls_files(e, "server", tls_cert, tls_key);
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
    let workers = at_least_one(
        e,
        "server.workers",
        workers,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    ServerConfig {
        listen,
        tls,
        trusted_proxies,
        max_header_bytes,
        max_body_bytes,
        request_timeout: positive(
            e,
            "server.request_timeout",
            request_timeout,
            Duration::from_secs(30),
        ),
        header_timeout: positive(
            e,
            "server.header_timeout",
            header_timeout,
            Duration::from_secs(10),
        ),
        body_timeout: positive(
            e,
            "server.body_timeout",
            body_timeout,
            Duration::from_secs(30),
        ),
        keep_alive: positive(e, "server.keep_alive", keep_alive, Duration::from_secs(60)),
        shutdown_grace: positive(
            e,
            "server.shutdown_grace",
            shutdown_grace,
            Duration::from_secs(30),
        ),
        workers,
        max_connections: at_least_one(e, "server.max_connections", max_connections, 10_000),
        allow_underscore_headers: allow_underscore_headers.unwrap_or(false),
        address_prefixes: AddressPrefixes {
            v4: prefix_length(e, "server.client_ipv4_prefix", client_ipv4_prefix, 32, 32),
            v6: prefix_length(e, "server.client_ipv6_prefix", client_ipv6_prefix, 64, 128),
        },
    }
}

/// A network prefix length between 1 and `max` bits, `default` when unset.
fn prefix_length(e: &mut Errors, path: &str, value: Option<u8>, default: u8, max: u8) -> u8 {
    match value {
        None => default,
        Some(bits) if (1..=max).contains(&bits) => bits,
        Some(bits) => {
            e.push(
                path,
                format!("{bits} is not a prefix length from 1 to {max}"),
            );
            default
        }
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
        resolve_interval,
        resolvers,
    } = raw;
    let resolvers = resolvers
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let parsed = text
                .parse::<SocketAddr>()
                .or_else(|_| {
                    text.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| format!("{text:?} is not an IP address (with an optional port)"));
            e.check(&format!("upstream.resolvers[{i}]"), parsed)
        })
        .collect();
    UpstreamConfig {
        resolve_interval: positive(
            e,
            "upstream.resolve_interval",
            resolve_interval,
            Duration::from_secs(30),
        ),
        resolvers,
        max_connections: at_least_one(e, "upstream.max_connections", max_connections, 256),
        connect_timeout: positive(
            e,
            "upstream.connect_timeout",
            connect_timeout,
            Duration::from_secs(5),
        ),
        idle_timeout: positive(
            e,
            "upstream.idle_timeout",
            idle_timeout,
            Duration::from_secs(60),
        ),
    }
}

fn storage_config(e: &mut Errors, raw: RawStorage) -> StorageConfig {
    let RawStorage {
        path,
        cache_capacity,
        session_cache,
        rate_limit_keys,
        login_throttle_keys,
        flush_interval,
        sweep_interval,
        backend,
        redis,
    } = raw;
    let backend = match backend.as_deref() {
        None | Some("sled") => {
            if redis.is_some() {
                e.push(
                    "storage.redis",
                    "is only read with storage.backend = \"redis\"",
                );
            }
            StorageBackend::Sled
        }
        Some("redis") => StorageBackend::Redis(redis_config(e, redis.unwrap_or_default())),
        Some(other) => {
            e.push(
                "storage.backend",
                format!("{other:?} is not a backend (\"sled\" or \"redis\")"),
            );
            StorageBackend::Sled
        }
    };
    StorageConfig {
        backend,
        path: match path {
            Some(p) if p.trim().is_empty() => {
                e.push("storage.path", "must not be empty");
                PathBuf::new()
            }
            Some(p) => p.into(),
            None => "./portcullis-data".into(),
        },
        cache_capacity: cache_capacity.map_or(16 * 1024 * 1024, |s| s.0),
        session_cache: at_least_one(e, "storage.session_cache", session_cache, 50_000),
        rate_limit_keys: at_least_one(e, "storage.rate_limit_keys", rate_limit_keys, 100_000),
        login_throttle_keys: at_least_one(
            e,
            "storage.login_throttle_keys",
            login_throttle_keys,
            100_000,
        ),
        flush_interval: positive(
            e,
            "storage.flush_interval",
            flush_interval,
            Duration::from_millis(500),
        ),
        sweep_interval: positive(
            e,
            "storage.sweep_interval",
            sweep_interval,
            Duration::from_secs(60),
        ),
    }
}

fn redis_config(e: &mut Errors, raw: RawRedis) -> RedisConfig {
    let RawRedis {
        url,
        password,
        key_prefix,
        connect_timeout,
        command_timeout,
        health_interval,
        session_fallback,
        tls_ca_file,
    } = raw;
    let url = url.unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    if let Err(err) = redis::Client::open(url.as_str()) {
        e.push(
            "storage.redis.url",
            format!(
                "{}: {} (expected redis://host:port/db, rediss:// for TLS)",
                redact_url_password(&url),
                err.detail().unwrap_or("not a Redis URL")
            ),
        );
    }
    let key_prefix = key_prefix.unwrap_or_else(|| "portcullis:".into());
    if key_prefix.contains(['{', '}']) {
        // A brace would make a Redis Cluster hash tag of the prefix.
        e.push("storage.redis.key_prefix", "must not contain { or }");
    }
    RedisConfig {
        url,
        password: password.filter(|p| !p.is_empty()),
        key_prefix,
        connect_timeout: positive(
            e,
            "storage.redis.connect_timeout",
            connect_timeout,
            Duration::from_millis(50),
        ),
        command_timeout: positive(
            e,
            "storage.redis.command_timeout",
            command_timeout,
            Duration::from_millis(50),
        ),
        health_interval: positive(
            e,
            "storage.redis.health_interval",
            health_interval,
            Duration::from_millis(500),
        ),
        session_fallback: session_fallback.map_or(Duration::from_secs(30), |d| d.0),
        tls_ca_file: tls_ca_file.map(PathBuf::from),
    }
}

fn log_config(e: &mut Errors, raw: RawLog, profile: Profile) -> LogConfig {
    let RawLog {
        level,
        format,
        output,
        redact_query,
        buffer,
        buffer_bytes,
    } = raw;
    let level = e
        .check("log.level", parse_level(level.as_deref().unwrap_or("info")))
        .unwrap_or(slog::Level::Info);
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
    let buffer = at_least_one(e, "log.buffer", buffer, 65_536);
    let buffer_bytes = match buffer_bytes.map(|b| b.0) {
        None => 16 * 1024 * 1024,
        Some(n) if n < 64 * 1024 => {
            e.push("log.buffer_bytes", "must be at least 64KiB");
            64 * 1024
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    LogConfig {
        level,
        format,
        output,
        redact_query: redact_query.unwrap_or_default(),
        buffer,
        buffer_bytes,
    }
}

fn routes_config(e: &mut Errors, raw: Vec<RawRoute>, context: &RouteContext) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    // Every id seen, valid route or not: a duplicate is reported either way.
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let prefix = format!("routes[{i}].");
        let duplicate = raw.id.as_ref().is_some_and(|id| !seen.insert(id.clone()));
        if duplicate {
            e.push(
                format!("{prefix}id"),
                format!(
                    "{:?} is already used by another route",
                    raw.id.as_deref().unwrap_or_default()
                ),
            );
        }
        if let Some(route) = route_config(e, &prefix, raw, context, RouteOrigin::File) {
            if !duplicate {
                routes.push(route);
            }
        }
    }
    routes
}

/// What validating a route needs from the rest of the configuration.
pub(super) struct RouteContext {
    pub default_timeout: Duration,
    pub policies: rate_limits::Policies,
    pub default_limits: Vec<Arc<RateLimitPolicy>>,
    /// Every service name declared, usable or not.
    pub services: std::collections::BTreeSet<String>,
    /// The identity headers, which header rules may not touch.
    pub owned_headers: Vec<HeaderName>,
}

impl RouteContext {
    /// The context of a loaded configuration, for routes added later.
    pub(super) fn of(config: &Config) -> RouteContext {
        RouteContext {
            default_timeout: config.server.request_timeout,
            policies: rate_limits::Policies::from_usable(&config.rate_limits),
            default_limits: config.default_rate_limits.clone(),
            services: config.upstreams.keys().cloned().collect(),
            owned_headers: config.session.identity_headers().map(Clone::clone).to_vec(),
        }
    }
}

/// Validates one route; every problem is recorded under `prefix` + its key.
pub(super) fn route_config(
    e: &mut Errors,
    prefix: &str,
    raw: RawRoute,
    context: &RouteContext,
    origin: RouteOrigin,
) -> Option<Route> {
    let RawRoute {
        id,
        path,
        methods,
        upstream,
        strip_prefix,
        timeout,
        preserve_host,
        auth,
        roles,
        permissions,
        csrf,
        login_redirect,
        rate_limit,
        request_headers,
        response_headers,
        websocket,
        tunnel_idle_timeout,
    } = raw;
    let key = |field: &str| format!("{prefix}{field}");
    let policy = route_policy(e, &key, auth, roles, permissions);
    let route_limits = rate_limits::attach(
        e,
        &key("rate_limit"),
        rate_limit,
        &context.policies,
        &context.default_limits,
    );
    let id = match id {
        None => {
            e.push(key("id"), "is required");
            None
        }
        Some(id) if !valid_route_id(&id) => {
            e.push(
                key("id"),
                format!("{id:?} must be 1-64 letters, digits, '-', '_' and '.'"),
            );
            None
        }
        Some(id) => Some(id),
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
            .filter_map(|(j, m)| e.check(&key(&format!("methods[{j}]")), parse_method(m)))
            .collect()
    });
    let upstream = match upstream {
        None => {
            e.push(key("upstream"), "is required");
            None
        }
        Some(u) => e.check(&key("upstream"), route_upstream(&u, &context.services)),
    };
    let timeout = positive(e, &key("timeout"), timeout, context.default_timeout);
    let tunnel_idle_timeout = positive(
        e,
        &key("tunnel_idle_timeout"),
        tunnel_idle_timeout,
        DEFAULT_TUNNEL_IDLE_TIMEOUT,
    );
    let owned = &context.owned_headers;
    let request_headers =
        header_rules::header_rules(e, &key("request_headers"), request_headers, owned);
    let response_headers =
        header_rules::header_rules(e, &key("response_headers"), response_headers, owned);
    let (id, pattern, upstream, path) = (id?, pattern?, upstream?, path?);
    Some(Route {
        id,
        origin,
        path,
        pattern,
        methods,
        upstream,
        strip_prefix: strip_prefix.unwrap_or(false),
        timeout,
        preserve_host: preserve_host.unwrap_or(false),
        policy,
        csrf: csrf.unwrap_or(true),
        login_redirect: login_redirect.unwrap_or(false),
        rate_limits: route_limits,
        request_headers,
        response_headers,
        websocket: websocket.unwrap_or(true),
        tunnel_idle_timeout,
    })
}

/// A route's `upstream`: a URL, or the name of a declared service.
fn route_upstream(
    text: &str,
    services: &std::collections::BTreeSet<String>,
) -> Result<RouteUpstream, String> {
    if text.contains("://") || !services::valid_name(text) {
        return Upstream::parse(text).map(RouteUpstream::Url);
    }
    if services.contains(text) {
        return Ok(RouteUpstream::Service(text.into()));
    }
    let known: Vec<&str> = services.iter().map(String::as_str).collect();
    Err(format!(
        "{text:?} is neither an http(s) URL nor a service in [upstreams] (defined: {})",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    ))
}

/// A `log.level` name.
pub fn parse_level(name: &str) -> Result<slog::Level, String> {
    Ok(match name {
        "error" => slog::Level::Error,
        "warn" => slog::Level::Warning,
        "info" => slog::Level::Info,
        "debug" => slog::Level::Debug,
        "trace" => slog::Level::Trace,
        other => {
            return Err(format!(
                "{other:?} is not one of error, warn, info, debug, trace"
            ))
        }
    })
}

/// Whether `id` may name a route: 1-64 letters, digits, '-', '_', '.'.
pub fn valid_route_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn route_policy(
    e: &mut Errors,
    key: &dyn Fn(&str) -> String,
    auth: Option<String>,
    roles: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
) -> AuthPolicy {
    let roles = roles.unwrap_or_default();
    let permissions = permissions.unwrap_or_default();
    for (field, names) in [("roles", &roles), ("permissions", &permissions)] {
        if names.iter().any(|n| n.trim().is_empty() || n.contains(',')) {
            e.push(key(field), "names must be non-empty and contain no ','");
        }
    }
    match auth.as_deref().unwrap_or("authenticated") {
        "public" => {
            if !roles.is_empty() || !permissions.is_empty() {
                e.push(
                    key("auth"),
                    "a public route cannot require roles or permissions",
                );
            }
            AuthPolicy::Public
        }
        "authenticated" => AuthPolicy::Authenticated { roles, permissions },
        other => {
            e.push(
                key("auth"),
                format!("{other:?} is not one of public, authenticated"),
            );
            AuthPolicy::Authenticated { roles, permissions }
        }
    }
}

pub(super) fn parse_method(text: &str) -> Result<Method, String> {
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
    fn redis_passwords_never_show() {
        assert_eq!(
            redact_url_password("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(
            redact_url_password("redis+unix:///run/redis.sock?db=1&pass=secret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(redact_url_password("redis://host"), "redis://host");
        assert_eq!(
            redact_url_password("rediss://user@host"),
            "rediss://user@host"
        );
    }

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
