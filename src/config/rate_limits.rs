//! `[rate_limits.<name>]` policies and their attachment to routes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderName;

use super::model::Errors;
use super::raw::{OneOrMany, RawRateLimit};

/// A validated rate-limit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitPolicy {
    pub name: Arc<str>,
    /// The parts of the request that make up the counter key, in order.
    pub key: Vec<KeyPart>,
    pub limit: u64,
    pub window: Duration,
    pub fail: FailMode,
    /// Per-role limits; a user holding several listed roles gets the highest.
    pub roles: Vec<(String, u64)>,
}

impl RateLimitPolicy {
    /// The limit for a user holding `roles` (the policy's own `limit` when
    /// none of them has an entry).
    pub fn limit_for<'a>(&self, roles: impl IntoIterator<Item = &'a String>) -> u64 {
        roles
            .into_iter()
            .filter_map(|role| {
                self.roles
                    .iter()
                    .find(|(r, _)| r == role)
                    .map(|(_, limit)| *limit)
            })
            .max()
            .unwrap_or(self.limit)
    }
}

/// One component of a counter key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address (through trusted proxies).
    Ip,
    /// The user; the client address for anonymous requests.
    User,
    /// The session id; the client address for anonymous requests.
    Session,
    Route,
    Method,
    /// A request header's value (empty when absent).
    Header(HeaderName),
}

/// What happens when the counter store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Let the request through (and count the failure).
    Open,
    /// Answer 503 `service_unavailable`.
    Closed,
}

/// The policies of a configuration.
pub(super) struct Policies {
    /// The policies routes can use.
    pub usable: BTreeMap<String, Arc<RateLimitPolicy>>,
    /// Every name declared, usable or not: a route naming a broken policy
    /// is not told again that it does not exist.
    declared: BTreeSet<String>,
}

impl Policies {
    /// The policies of a loaded configuration, all usable.
    pub(super) fn from_usable(list: &[Arc<RateLimitPolicy>]) -> Policies {
        Policies {
            usable: list
                .iter()
                .map(|p| (p.name.to_string(), p.clone()))
                .collect(),
            declared: list.iter().map(|p| p.name.to_string()).collect(),
        }
    }
}

/// Validates every policy (`None`: its section could not be read, which is
/// already reported).
pub(super) fn policies(e: &mut Errors, raw: BTreeMap<String, Option<RawRateLimit>>) -> Policies {
    let mut out = BTreeMap::new();
    let declared = raw.keys().cloned().collect();
    for (name, raw) in raw {
        let path = |field: &str| format!("rate_limits.{name}.{field}");
        if name == "none"
            || name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            e.push(
                format!("rate_limits.{name}"),
                "a policy name uses letters, digits, '-', '_' and '.', and is not \"none\"",
            );
            continue;
        }
        let Some(raw) = raw else {
            continue;
        };
        let RawRateLimit {
            key,
            limit,
            window,
            fail,
            roles,
        } = raw;
        let key = match key {
            None => {
                e.push(
                    path("key"),
                    "is required (any of: ip, user, session, route, method, \"header:<name>\")",
                );
                Vec::new()
            }
            Some(parts) if parts.is_empty() => {
                e.push(path("key"), "must name at least one part");
                Vec::new()
            }
            Some(parts) => parts
                .iter()
                .enumerate()
                .filter_map(|(i, part)| {
                    e.check(&format!("rate_limits.{name}.key[{i}]"), key_part(part))
                })
                .collect(),
        };
        let limit = match limit {
            None => {
                e.push(path("limit"), "is required");
                1
            }
            Some(0) => {
                e.push(path("limit"), "must be greater than zero");
                1
            }
            Some(n) => n,
        };
        let window = match window.map(|w| w.0) {
            None => {
                e.push(path("window"), "is required (e.g. \"1m\")");
                Duration::from_secs(60)
            }
            Some(w) if w.as_millis() == 0 => {
                e.push(path("window"), "must be at least 1ms");
                Duration::from_secs(60)
            }
            Some(w) => w,
        };
        let fail = match fail.as_deref().unwrap_or("open") {
            "open" => FailMode::Open,
            "closed" => FailMode::Closed,
            other => {
                e.push(
                    path("fail"),
                    format!("{other:?} is not one of open, closed"),
                );
                FailMode::Open
            }
        };
        let roles = roles
            .unwrap_or_default()
            .into_iter()
            .filter(|(role, limit)| {
                let ok = *limit > 0;
                if !ok {
                    e.push(
                        format!("rate_limits.{name}.roles.{role}"),
                        "must be greater than zero",
                    );
                }
                ok
            })
            .collect();
        out.insert(
            name.clone(),
            Arc::new(RateLimitPolicy {
                name: name.into(),
                key,
                limit,
                window,
                fail,
                roles,
            }),
        );
    }
    Policies {
        usable: out,
        declared,
    }
}

fn key_part(text: &str) -> Result<KeyPart, String> {
    Ok(match text {
        "ip" => KeyPart::Ip,
        "user" => KeyPart::User,
        "session" => KeyPart::Session,
        "route" => KeyPart::Route,
        "method" => KeyPart::Method,
        _ => match text.strip_prefix("header:") {
            Some(name) => KeyPart::Header(
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("{name:?} is not a valid header name"))?,
            ),
            None => {
                return Err(format!(
                    "{text:?} is not a key part (any of: ip, user, session, route, method, \"header:<name>\")"
                ))
            }
        },
    })
}

/// Resolves a `rate_limit` setting to policies: a name, a list of names, or
/// `"none"`. Unset means `inherited`.
pub(super) fn attach(
    e: &mut Errors,
    path: &str,
    setting: Option<OneOrMany>,
    policies: &Policies,
    inherited: &[Arc<RateLimitPolicy>],
) -> Vec<Arc<RateLimitPolicy>> {
    let names = match setting {
        None => return inherited.to_vec(),
        Some(OneOrMany::One(name)) if name == "none" => return Vec::new(),
        Some(OneOrMany::One(name)) => vec![name],
        Some(OneOrMany::Many(names)) => names,
    };
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            if names[..i].contains(name) {
                e.push(
                    path,
                    format!("{name:?} is listed twice (it would count every request twice)"),
                );
                return None;
            }
            let found = policies.usable.get(name).cloned();
            if found.is_none() && !policies.declared.contains(name) {
                let known: Vec<&str> = policies.usable.keys().map(String::as_str).collect();
                e.push(
                    path,
                    format!(
                        "{name:?} is not a defined policy (defined: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            found
        })
        .collect()
}
