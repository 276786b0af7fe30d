//! Host names of service targets, resolved again every
//! `upstream.resolve_interval`: each address a name resolves to is a target
//! of its own (see [`Services::build`]), and a name that fails to resolve
//! keeps its last good answer, so a DNS outage never empties a service.
//!
//! Names are resolved by the system (`getaddrinfo`: `/etc/hosts`, then
//! DNS), or by the DNS servers `upstream.resolvers` lists (a service
//! registry's DNS interface, say).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use slog::{info, warn, Logger};

use super::Services;

/// How long one name may take to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses of one name that become targets at most (the lowest, so the
/// choice is stable), leaving room under a service's target limit.
pub const MAX_ADDRESSES: usize = 64;

/// The last good answer for each host name, shared by every build of the
/// services.
#[derive(Default)]
pub struct Answers {
    by_name: Mutex<HashMap<String, Arc<[IpAddr]>>>,
    /// Names whose last lookup failed (so a failure is logged once).
    failing: Mutex<HashSet<String>>,
}

impl Answers {
    /// The addresses `name` last resolved to.
    pub fn get(&self, name: &str) -> Option<Arc<[IpAddr]>> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<[IpAddr]>>> {
        self.by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an answer; whether it differs from the last one.
    pub(super) fn record(&self, name: &str, mut addresses: Vec<IpAddr>) -> bool {
        addresses.sort();
        addresses.dedup();
        let mut by_name = self.lock();
        if by_name.get(name).is_some_and(|old| **old == *addresses) {
            return false;
        }
        by_name.insert(name.to_owned(), addresses.into());
        true
    }

    /// Notes whether `name` failed; whether that changed.
    fn note_failing(&self, name: &str, failing: bool) -> bool {
        let mut names = self
            .failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if failing {
            names.insert(name.to_owned())
        } else {
            names.remove(name)
        }
    }
}

/// Where names are resolved.
pub enum Resolver {
    System,
    Servers(Box<TokioResolver>),
}

impl Resolver {
    /// The system's resolver, or one asking `servers` (over UDP, then TCP).
    pub fn new(servers: &[SocketAddr]) -> Resolver {
        if servers.is_empty() {
            return Resolver::System;
        }
        let mut group = NameServerConfigGroup::new();
        for server in servers {
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[server.ip()],
                server.port(),
                true,
            ));
        }
        let mut options = ResolverOpts::default();
        // Every round asks again: the answers kept are the gateway's own.
        options.cache_size = 0;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        Resolver::Servers(Box::new(resolver))
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        match self {
            // IPv4 when the name has any, as the resolver below asks.
            Resolver::System => tokio::net::lookup_host((name, 0))
                .await
                .map(|found| {
                    let all: Vec<IpAddr> = found.map(|a| a.ip()).collect();
                    if all.iter().any(IpAddr::is_ipv4) {
                        all.into_iter().filter(IpAddr::is_ipv4).collect()
                    } else {
                        all
                    }
                })
                .map_err(|err| err.to_string()),
            Resolver::Servers(resolver) => resolver
                .lookup_ip(name)
                .await
                .map(|found| found.iter().collect())
                .map_err(|err| err.to_string()),
        }
    }
}

/// The host names the services' targets name (IP literals need no lookup).
pub fn names(services: &Services) -> BTreeSet<String> {
    services
        .iter()
        .flat_map(|service| service.config.targets.iter())
        .filter_map(|target| target.host_name().map(str::to_owned))
        .collect()
}

/// Resolves every name once, keeping the last good answer of a name that
/// fails or resolves to nothing. Returns whether any answer changed.
pub async fn refresh(services: &Services, resolver: &Resolver, logger: &Logger) -> bool {
    let answers = &services.answers;
    let names = names(services);
    // All at once: one slow name does not hold the others up.
    let lookups = names.iter().map(|name| async move {
        tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup(name))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {LOOKUP_TIMEOUT:?}")))
            .and_then(|found| {
                if found.is_empty() {
                    Err("no addresses".to_owned())
                } else {
                    Ok(found)
                }
            })
    });
    let results = futures_util::future::join_all(lookups).await;
    let mut changed = false;
    for (name, found) in names.into_iter().zip(results) {
        match found {
            Ok(mut addresses) => {
                if addresses.len() > MAX_ADDRESSES {
                    warn!(logger, "upstream host name resolved to more addresses than are used";
                        "host" => &name, "addresses" => addresses.len(), "used" => MAX_ADDRESSES);
                    addresses.sort();
                    addresses.truncate(MAX_ADDRESSES);
                }
                if answers.note_failing(&name, false) {
                    info!(logger, "upstream host name resolves again"; "host" => &name);
                }
                let listed = addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                if answers.record(&name, addresses) {
                    changed = true;
                    info!(logger, "upstream host name resolved"; "host" => &name, "addresses" => listed);
                }
            }
            Err(error) => {
                if answers.note_failing(&name, true) {
                    let kept = answers.get(&name).map_or(0, |a| a.len());
                    warn!(logger, "upstream host name did not resolve: its last addresses stay in use";
                        "host" => &name, "error" => error, "kept_addresses" => kept);
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_a_change_only_when_its_set_of_addresses_differs() {
        let answers = Answers::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(answers.record("api", vec![a, b]));
        assert!(!answers.record("api", vec![b, a, a]));
        assert!(answers.record("api", vec![b]));
        assert_eq!(&*answers.get("api").unwrap(), &[b]);
        assert!(answers.get("other").is_none());
    }

    #[test]
    fn a_failure_is_noted_once_until_the_name_resolves_again() {
        let answers = Answers::default();
        assert!(answers.note_failing("api", true));
        assert!(!answers.note_failing("api", true));
        assert!(answers.note_failing("api", false));
        assert!(!answers.note_failing("api", false));
    }
}
