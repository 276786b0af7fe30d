//! Active health checks, and the upstream metrics kept off the request
//! path. One task for the whole process, so every worker shares one view
//! of each target (nginx's checks are per worker); it reads the serving
//! services afresh on every tick, so reloads need nothing of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use rand::Rng as _;
use slog::Logger;

use super::{millis, now_ms, Change, Service, Services, Target};
use crate::config::HealthCheck;
use crate::telemetry::Metrics;

/// How often due checks are looked for, and metrics brought up to date.
const TICK: Duration = Duration::from_millis(50);
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// Checks every target of every service with a `health` section when it
/// is due, forever. `services` gives the serving services.
pub async fn run(
    services: impl Fn() -> Arc<Services>,
    client: awc::Client,
    metrics: &Metrics,
    logger: &Logger,
) {
    let mut exported = Exported::default();
    let mut last_export = 0;
    loop {
        tokio::time::sleep(TICK).await;
        let services = services();
        let now = now_ms();
        for service in services.iter() {
            let Some(check) = &service.config.health else {
                continue;
            };
            for target in &service.targets {
                if target.next_check.load(Ordering::Relaxed) > now {
                    continue;
                }
                let interval = millis(check.interval);
                // Up to a tenth of the interval of jitter, so targets
                // checked together do not stay in step.
                let jitter = rand::thread_rng().gen_range(0..=interval / 10);
                target
                    .next_check
                    .store(now + interval + jitter, Ordering::Relaxed);
                let (client, service, target, logger) = (
                    client.clone(),
                    service.clone(),
                    target.clone(),
                    logger.clone(),
                );
                actix_web::rt::spawn(async move {
                    let result = probe(&client, &target, service.config.health.as_ref()).await;
                    record(&service, &target, result, &logger);
                });
            }
        }
        if now.saturating_sub(last_export) >= millis(METRICS_EVERY) {
            last_export = now;
            exported.export(&services, metrics, logger, now);
        }
    }
}

/// One check: a GET of the check's path that answers an expected status
/// within the timeout.
async fn probe(
    client: &awc::Client,
    target: &Target,
    check: Option<&HealthCheck>,
) -> Result<u16, String> {
    let Some(check) = check else {
        return Err("no check configured".into());
    };
    let config = &target.config;
    let url = config.upstream.url_of(config.address, &check.path, None);
    let mut request = client.get(url);
    if let Some(address) = config.address {
        // Not pooled: HTTPS connections are pooled by host name, and a
        // kept-alive one could belong to another address of the name.
        request = request.address(address).force_close();
    }
    if config.address.is_some() && !config.upstream.https {
        // The URL names the address: the Host is still the configured name.
        request = request.insert_header((header::HOST, config.upstream.authority.as_str()));
    }
    let response = request
        .insert_header((header::USER_AGENT, "portcullis-health-check"))
        .timeout(check.timeout)
        .send()
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    if check.passes(status) {
        Ok(status)
    } else {
        Err(format!("status {status}"))
    }
}

fn record(service: &Service, target: &Target, result: Result<u16, String>, logger: &Logger) {
    let Some(check) = &service.config.health else {
        return;
    };
    let passed = result.is_ok();
    let (flip, change) = target.record_check(passed, check.fall, check.rise, now_ms());
    let name = &*service.config.name;
    match flip {
        Some(false) => slog::warn!(logger, "upstream target down: failed its health checks";
            "service" => name, "target" => target.name(), "fall" => check.fall,
            "error" => result.err().unwrap_or_default()),
        Some(true) => slog::info!(logger, "upstream target up: passed its health checks";
            "service" => name, "target" => target.name(), "rise" => check.rise),
        None => {}
    }
    if change == Change::Restored {
        slog::info!(logger, "upstream target restored: a health check answered after its ejection";
            "service" => name, "target" => target.name());
    }
}

/// Counter values already added to the metrics, per service and target,
/// and whether each service was last seen panicking.
#[derive(Default)]
struct Exported {
    counters: std::collections::HashMap<(Arc<str>, String), [u64; 3]>,
    panicking: std::collections::HashMap<Arc<str>, bool>,
    /// The keys of `counters` this export has seen: the others are gone.
    present: std::collections::HashSet<(Arc<str>, String)>,
}

impl Exported {
    /// Brings the upstream metrics up to date with the targets' counters.
    /// Ejections and panics are logged here too, within a second, rather
    /// than on the request path.
    fn export(&mut self, services: &Services, metrics: &Metrics, logger: &Logger, now: u64) {
        self.present.clear();
        for service in services.iter() {
            let name = &*service.config.name;
            let panicking = service.panicking();
            let was = self
                .panicking
                .insert(service.config.name.clone(), panicking);
            if was.unwrap_or(false) != panicking {
                if panicking {
                    slog::warn!(logger, "upstream service in panic mode: too few healthy targets, spreading requests over all of them";
                        "service" => name, "panic_threshold" => service.config.panic_threshold);
                } else {
                    slog::info!(logger, "upstream service out of panic mode"; "service" => name);
                }
            }
            metrics
                .upstream_panic
                .with_label_values(&[name])
                .set(i64::from(service.panicking()));
            metrics
                .upstream_retries
                .with_label_values(&[name])
                .inc_by(self.delta(service, "", 0, service.retries.load(Ordering::Relaxed)));
            let refused = [
                ("overloaded", &service.refused_overloaded),
                ("circuit_open", &service.refused_open),
            ];
            for (slot, (reason, value)) in refused.into_iter().enumerate() {
                let delta = self.delta(service, "", slot + 1, value.load(Ordering::Relaxed));
                metrics
                    .upstream_refused
                    .with_label_values(&[name, reason])
                    .inc_by(delta);
            }
            let opened = self.delta(service, "\0breaker", 0, service.breaker_opened());
            if opened > 0 {
                slog::warn!(logger, "upstream circuit breaker opened: too many requests failed";
                    "service" => name, "times" => opened);
            }
            metrics
                .upstream_breaker_open
                .with_label_values(&[name])
                .set(i64::from(service.breaker_state() != "closed"));
            for target in &service.targets {
                let url = target.name();
                let up = target.availability(now) == super::Availability::Up;
                metrics
                    .upstream_target_healthy
                    .with_label_values(&[name, url])
                    .set(i64::from(up));
                let (requests, failures, ejections) = target.counts();
                let counters = [
                    (&metrics.upstream_target_requests, requests),
                    (&metrics.upstream_target_failures, failures),
                    (&metrics.upstream_ejections, ejections),
                ];
                for (slot, (counter, value)) in counters.into_iter().enumerate() {
                    let delta = self.delta(service, url, slot, value);
                    counter.with_label_values(&[name, url]).inc_by(delta);
                    if slot == 2 && delta > 0 {
                        slog::warn!(logger, "upstream target ejected after failed requests";
                            "service" => name, "target" => url, "ejections" => delta,
                            "ejected_for_ms" => target.ejected_until().map_or(0, |t| t.saturating_sub(now)));
                    }
                }
            }
        }
        self.prune(metrics);
    }

    /// Drops the series of services and targets no longer served (a
    /// reload removed them, or their address left the DNS answer), so none
    /// reports a stale state for ever.
    fn prune(&mut self, metrics: &Metrics) {
        let present = &self.present;
        self.counters.retain(|key, _| {
            if present.contains(key) {
                return true;
            }
            let (service, target) = (&*key.0, key.1.as_str());
            match target {
                "" => {
                    let _ = metrics.upstream_panic.remove_label_values(&[service]);
                    let _ = metrics.upstream_retries.remove_label_values(&[service]);
                    let _ = metrics
                        .upstream_breaker_open
                        .remove_label_values(&[service]);
                    for reason in ["overloaded", "circuit_open"] {
                        let _ = metrics
                            .upstream_refused
                            .remove_label_values(&[service, reason]);
                    }
                }
                "\0breaker" => {}
                _ => {
                    let _ = metrics
                        .upstream_target_healthy
                        .remove_label_values(&[service, target]);
                    for counter in [
                        &metrics.upstream_target_requests,
                        &metrics.upstream_target_failures,
                        &metrics.upstream_ejections,
                    ] {
                        let _ = counter.remove_label_values(&[service, target]);
                    }
                }
            }
            false
        });
        self.panicking
            .retain(|service, _| present.contains(&(service.clone(), String::new())));
    }

    fn delta(&mut self, service: &Service, target: &str, slot: usize, now: u64) -> u64 {
        let key = (service.config.name.clone(), target.to_owned());
        if !self.present.contains(&key) {
            self.present.insert(key.clone());
        }
        let seen = self.counters.entry(key).or_default();
        // A target dropped by a reload and added again starts from zero.
        let delta = now.saturating_sub(seen[slot]);
        seen[slot] = now;
        delta
    }
}
