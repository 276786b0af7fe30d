//! Configuration: loading (figment), validation and the validated model.
//!
//! Precedence, lowest first: built-in defaults < the TOML file (or the embedded
//! dev default) < the file's `[profile.<name>]` table for the active profile <
//! `PORTCULLIS_<SECTION>__<KEY>` environment variables. The active profile is
//! `PORTCULLIS_PROFILE`, else `dev` on the embedded default and `prod` with a file.

mod effective;
mod header_rules;
mod model;
mod rate_limits;
mod raw;
mod services;
mod units;

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::de::DeserializeOwned;

pub use header_rules::{HeaderRules, Vars as HeaderVars};
pub use model::{
    parse_level, redact_url_password, AddressPrefixes, AdminConfig, AuthPolicy, Config, LogConfig,
    LogFormat, LogOutput, LoginConfig, RedisConfig, Route, RouteOrigin, RouteUpstream, SameSite,
    ServerConfig, SessionConfig, StorageBackend, StorageConfig, TlsFiles, Upstream, UpstreamConfig,
};
pub use rate_limits::{FailMode, KeyPart, RateLimitPolicy};
pub use services::{
    Balance, BreakerConfig, HashKey, HealthCheck, PassiveHealth, ServiceConfig, ServiceTarget,
    IDEMPOTENT_METHODS, MAX_TARGETS,
};
pub use units::{parse_duration, ByteSize, HumanDuration, MAX_DURATION};

use model::RawSections;
use raw::{RawRateLimit, RawRoute, RawService};

/// The configuration `serve` uses when no `--config` is given: loopback
/// listeners, data under `./portcullis-data`, no routes.
pub const EMBEDDED_DEFAULT: &str = include_str!("embedded.toml");

const SECTIONS: &[&str] = &[
    "server",
    "upstream",
    "admin",
    "storage",
    "log",
    "session",
    "login",
    "rate_limits",
    "upstreams",
    "routes",
    "profile",
];

/// A named set of overrides and defaults, chosen with `PORTCULLIS_PROFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Staging,
    Prod,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Staging => "staging",
            Profile::Prod => "prod",
        }
    }

    fn parse(name: &str) -> Option<Profile> {
        match name {
            "dev" => Some(Profile::Dev),
            "staging" => Some(Profile::Staging),
            "prod" => Some(Profile::Prod),
            _ => None,
        }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Embedded => f.write_str("the embedded default"),
        }
    }
}

/// One configuration problem: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Loads and validates the configuration for the active profile, returning
/// every problem found.
pub fn load(source: &ConfigSource) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let profile = active_profile(source, &mut errors);
    let base = base_figment(source)?;
    let config = load_profile(&base, profile, &mut errors);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    }
}

/// Validates a configuration file for `portcullis check`: the active
/// profile, and every other profile the file has a `[profile.<name>]` for,
/// so a mistake in a profile that is not active today cannot hide.
pub fn check(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let source = ConfigSource::File(path.to_owned());
    let mut errors = Vec::new();
    let active = active_profile(&source, &mut errors);
    let base = base_figment(&source)?;
    let config = load_profile(&base, active, &mut errors);
    for other in [Profile::Dev, Profile::Staging, Profile::Prod] {
        let present = base
            .find_value(&format!("profile.{}", other.name()))
            .is_ok();
        if other == active || !present {
            continue;
        }
        let mut other_errors = Vec::new();
        load_profile(&base, other, &mut other_errors);
        let extra: Vec<ConfigError> = other_errors
            .into_iter()
            .filter(|e| !errors.contains(e))
            .map(|mut e| {
                e.message = format!("{} (with profile {})", e.message, other.name());
                e
            })
            .collect();
        errors.extend(extra);
    }
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    }
}

/// `PORTCULLIS_PROFILE`, else `dev` on the embedded default and `prod` with a file.
fn active_profile(source: &ConfigSource, errors: &mut Vec<ConfigError>) -> Profile {
    match std::env::var("PORTCULLIS_PROFILE") {
        Ok(name) => Profile::parse(&name).unwrap_or_else(|| {
            errors.push(ConfigError::new(
                "PORTCULLIS_PROFILE",
                format!("{name:?} is not one of dev, staging, prod"),
            ));
            Profile::Prod
        }),
        Err(_) if *source == ConfigSource::Embedded => Profile::Dev,
        Err(_) => Profile::Prod,
    }
}

fn base_figment(source: &ConfigSource) -> Result<Figment, Vec<ConfigError>> {
    Ok(match source {
        ConfigSource::File(path) => {
            if let Err(err) = std::fs::read(path) {
                return Err(vec![ConfigError::new(
                    path.display().to_string(),
                    format!("cannot read the configuration file: {err}"),
                )]);
            }
            let figment = Figment::from(Toml::file(path));
            // A file that is not TOML is one problem, reported once (every
            // profile layer would otherwise report it again).
            if let Err(err) = figment.extract::<Dict>() {
                return Err(err.into_iter().take(1).map(|e| describe(&e, "")).collect());
            }
            figment
        }
        ConfigSource::Embedded => Figment::from(Toml::string(EMBEDDED_DEFAULT)),
    })
}

fn load_profile(base: &Figment, profile: Profile, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let figment = base
        .clone()
        .merge(base.focus(&format!("profile.{}", profile.name())))
        .merge(env_overrides());
    let before = errors.len();
    let raw = extract_sections(&figment, errors);
    let config = Config::from_raw(profile, raw, errors);
    // Say when a bad value came from a PORTCULLIS_ variable rather than the file.
    for error in &mut errors[before..] {
        let from_env = figment
            .find_metadata(&error.path)
            .is_some_and(|m| m.name.to_lowercase().contains("environment"));
        if from_env {
            error.message.push_str(" (set in the environment)");
        }
    }
    config
}

/// `PORTCULLIS_SERVER__LISTEN` → `server.listen`.
fn env_overrides() -> Env {
    Env::prefixed("PORTCULLIS_")
        .split("__")
        .filter(|key| key.as_str().contains('.'))
}

fn extract_sections(figment: &Figment, errors: &mut Vec<ConfigError>) -> RawSections {
    match figment.extract::<Dict>() {
        Ok(top) => {
            for key in top.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
                errors.push(ConfigError::new(
                    if key.is_empty() {
                        "\"\"".into()
                    } else {
                        key.clone()
                    },
                    format!("unknown section (expected one of: {})", SECTIONS.join(", ")),
                ));
            }
            if let Some(Value::Dict(_, profiles)) = top.get("profile") {
                for name in profiles.keys().filter(|n| Profile::parse(n).is_none()) {
                    errors.push(ConfigError::new(
                        format!("profile.{name}"),
                        "unknown profile (expected one of: dev, staging, prod)",
                    ));
                }
            }
        }
        Err(err) => errors.extend(err.into_iter().map(|e| describe(&e, ""))),
    }
    // Policies, services and routes are deserialised one by one so that
    // every bad entry is reported, once.
    let rate_limits = named_entries::<RawRateLimit>(figment, "rate_limits", errors);
    let upstreams = named_entries::<RawService>(figment, "upstreams", errors);
    let routes: Vec<Value> = section(figment, "routes", errors);
    let routes = routes
        .into_iter()
        .enumerate()
        .map(|(i, value)| deserialize_all::<RawRoute>(value, &format!("routes[{i}]"), errors))
        .collect();
    RawSections {
        server: section(figment, "server", errors),
        upstream: section(figment, "upstream", errors),
        admin: section(figment, "admin", errors),
        storage: section(figment, "storage", errors),
        log: section(figment, "log", errors),
        session: section(figment, "session", errors),
        login: section(figment, "login", errors),
        rate_limits,
        upstreams,
        routes,
    }
}

/// The entries of a `[<section>.<name>]` table, each read on its own so
/// that every bad one is reported, once; one that could not be read is kept
/// as `None`, so that what names it is not told it does not exist.
fn named_entries<T: DeserializeOwned + Default>(
    figment: &Figment,
    section_name: &str,
    errors: &mut Vec<ConfigError>,
) -> std::collections::BTreeMap<String, Option<T>> {
    let entries: Dict = section(figment, section_name, errors);
    entries
        .into_iter()
        .map(|(name, value)| {
            let before = errors.len();
            let raw = deserialize_all::<T>(value, &format!("{section_name}.{name}"), errors);
            (name, (errors.len() == before).then_some(raw))
        })
        .collect()
}

/// Validates a route made through the admin API against the running
/// configuration (its policies, its default timeout and limits): the same
/// checks and messages as a `[[routes]]` entry, with keys relative to the
/// route (`upstream`, not `routes[0].upstream`). Every problem is returned.
pub fn api_route(config: &Config, spec: serde_json::Value) -> Result<Route, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let value = match serde_json::from_value::<Value>(spec) {
        Ok(value @ Value::Dict(..)) => value,
        _ => {
            return Err(vec![ConfigError::new(
                "(top level)",
                "a route must be a JSON object",
            )])
        }
    };
    let raw = deserialize_all::<RawRoute>(value, "", &mut errors);
    let context = model::RouteContext::of(config);
    let route = model::route_config(
        &mut model::Errors::new(&mut errors),
        "",
        raw,
        &context,
        RouteOrigin::Api,
    );
    match route {
        Some(route) if errors.is_empty() => Ok(route),
        _ => Err(errors),
    }
}

/// Extracts one section, or its default when absent, recording errors.
fn section<T: DeserializeOwned + Default>(
    figment: &Figment,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> T {
    match figment.find_value(name) {
        Err(_) => T::default(),
        Ok(value) => deserialize_all(value, name, errors),
    }
}

/// Deserialises a value, reporting *every* bad key rather than the first:
/// after each failure the offending key is set aside and the rest retried.
fn deserialize_all<T: DeserializeOwned + Default>(
    mut value: Value,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) -> T {
    // Bounded: each round removes at least one key.
    for _ in 0..256 {
        let err = match value.deserialize::<T>() {
            Ok(parsed) => return parsed,
            Err(err) => err,
        };
        let mut removed = false;
        for e in err {
            if let (Value::Dict(_, dict), Some(key)) = (&mut value, e.path.first()) {
                removed |= dict.remove(key).is_some();
            }
            errors.push(describe(&e, prefix));
        }
        if !removed {
            break;
        }
    }
    T::default()
}

/// Turns one figment error into a key-path error (`routes[1].timeout`), with
/// `prefix` naming the value that was deserialised.
fn describe(e: &figment::Error, prefix: &str) -> ConfigError {
    use figment::error::Kind;
    let mut path = prefix.to_owned();
    for part in &e.path {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
        }
    }
    let message = match &e.kind {
        Kind::UnknownField(_, expected) => {
            format!("unknown key (expected one of: {})", expected.join(", "))
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    };
    ConfigError::new(
        if path.is_empty() {
            "(top level)".to_owned()
        } else {
            path
        },
        message,
    )
}
