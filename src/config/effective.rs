//! The effective configuration as the admin API shows it: every setting
//! after defaults, profile and environment, in the file's keys, with every
//! secret masked.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Config, KeyPart, LogFormat, LogOutput, SameSite, StorageBackend, TlsFiles};

/// What a secret shows as.
pub const MASK: &str = "********";

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn tls(files: &Option<TlsFiles>) -> Value {
    files.as_ref().map_or(
        Value::Null,
        |f| json!({"cert": f.cert.display().to_string(), "key": f.key.display().to_string()}),
    )
}

impl Config {
    /// The configuration in the file's keys, secrets masked.
    pub fn effective(&self) -> Value {
        let Config {
            profile,
            server: s,
            upstream: u,
            admin: a,
            storage: st,
            log: l,
            session: se,
            login: lo,
            rate_limits,
            default_rate_limits,
            upstreams,
            routes,
        } = self;
        json!({
            "profile": profile.name(),
            "server": {
                "listen": s.listen.to_string(),
                "tls": tls(&s.tls),
                "trusted_proxies": s.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "max_header_bytes": s.max_header_bytes,
                "max_body_bytes": s.max_body_bytes,
                "request_timeout": duration(s.request_timeout),
                "header_timeout": duration(s.header_timeout),
                "body_timeout": duration(s.body_timeout),
                "keep_alive": duration(s.keep_alive),
                "shutdown_grace": duration(s.shutdown_grace),
                "workers": s.workers,
                "max_connections": s.max_connections,
                "client_ipv4_prefix": s.address_prefixes.v4,
                "client_ipv6_prefix": s.address_prefixes.v6,
                "allow_underscore_headers": s.allow_underscore_headers,
                "rate_limit": default_rate_limits.iter().map(|p| &*p.name).collect::<Vec<_>>(),
            },
            "upstream": {
                "max_connections": u.max_connections,
                "connect_timeout": duration(u.connect_timeout),
                "idle_timeout": duration(u.idle_timeout),
                "resolve_interval": duration(u.resolve_interval),
                "resolvers": u.resolvers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            },
            "admin": {
                "listen": a.listen.to_string(),
                "tls": tls(&a.tls),
                "token": a.token.as_ref().map(|_| MASK),
                "hosts": a.hosts,
                "role": a.role,
                "viewer_role": a.viewer_role,
                "session_idle_timeout": duration(a.session_idle_timeout),
                "session_lifetime": duration(a.session_lifetime),
                "recent_log_bytes": a.recent_log_bytes,
                "audit_records": a.audit_records,
            },
            "storage": {
                "path": st.path.display().to_string(),
                "cache_capacity": st.cache_capacity,
                "session_cache": st.session_cache,
                "rate_limit_keys": st.rate_limit_keys,
                "login_throttle_keys": st.login_throttle_keys,
                "flush_interval": duration(st.flush_interval),
                "sweep_interval": duration(st.sweep_interval),
                "backend": match &st.backend {
                    StorageBackend::Sled => "sled",
                    StorageBackend::Redis(_) => "redis",
                },
                "redis": match &st.backend {
                    StorageBackend::Sled => Value::Null,
                    StorageBackend::Redis(r) => json!({
                        "url": super::redact_url_password(&r.url),
                        "password": r.password.as_ref().map(|_| MASK),
                        "key_prefix": r.key_prefix,
                        "connect_timeout": duration(r.connect_timeout),
                        "command_timeout": duration(r.command_timeout),
                        "health_interval": duration(r.health_interval),
                        "session_fallback": duration(r.session_fallback),
                        "tls_ca_file": r.tls_ca_file.as_ref().map(|p| p.display().to_string()),
                    }),
                },
            },
            "log": {
                "level": crate::telemetry::level_name(l.level),
                "format": match l.format { LogFormat::Json => "json", LogFormat::Pretty => "pretty" },
                "output": match &l.output {
                    LogOutput::Stdout => "stdout".to_owned(),
                    LogOutput::Stderr => "stderr".to_owned(),
                    LogOutput::File(path) => path.display().to_string(),
                },
                "redact_query": l.redact_query,
                "buffer": l.buffer,
                "buffer_bytes": l.buffer_bytes,
            },
            "session": {
                "cookie_name": se.cookie_name,
                "secure": se.secure,
                "same_site": match se.same_site { SameSite::Strict => "strict", SameSite::Lax => "lax", SameSite::None => "none" },
                "idle_timeout": duration(se.idle_timeout),
                "max_lifetime": duration(se.max_lifetime),
                "rotate_after": duration(se.rotate_after),
                "rotation_grace": duration(se.rotation_grace),
                "touch_interval": duration(se.touch_interval),
                "tunnel_check_interval": duration(se.tunnel_check_interval),
                "login_path": se.login_path,
                "logout_path": se.logout_path,
                "session_path": se.session_path,
                "trusted_origins": se.trusted_origins,
                "user_id_header": se.user_id_header.as_str(),
                "roles_header": se.roles_header.as_str(),
                "session_id_header": se.session_id_header.as_str(),
            },
            "login": {
                "min_password_length": lo.min_password_length,
                "max_failures_per_user": lo.max_failures_per_user,
                "max_failures_per_ip": lo.max_failures_per_ip,
                "failure_window": duration(lo.failure_window),
                "max_concurrent_hashes": lo.max_concurrent_hashes,
                "max_hash_wait": duration(lo.max_hash_wait),
            },
            "rate_limits": rate_limits.iter().map(|p| (p.name.to_string(), json!({
                "key": p.key.iter().map(|k| match k {
                    KeyPart::Header(name) => format!("header:{name}"),
                    other => format!("{other:?}").to_lowercase(),
                }).collect::<Vec<_>>(),
                "limit": p.limit,
                "window": duration(p.window),
                "fail": format!("{:?}", p.fail).to_lowercase(),
                "roles": p.roles.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            }))).collect::<serde_json::Map<_, _>>(),
            "upstreams": upstreams.iter().map(|(name, service)| (name.clone(), service.summary())).collect::<serde_json::Map<_, _>>(),
            "routes": routes.iter().map(|r| r.summary()).collect::<Vec<_>>(),
        })
    }
}
