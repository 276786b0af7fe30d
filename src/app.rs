//! Process wiring: shared state, the proxy and admin listeners, signals
//! (SIGHUP reloads, SIGTERM/SIGINT drain and stop) and orderly shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{web, App};
use arc_swap::ArcSwap;
use slog::{error, info, warn};
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::audit::AuditLog;
use crate::auth::Auth;
use crate::config::{self, Config, ConfigError, ConfigSource, StorageBackend, TlsFiles};
use crate::listener::{self, Listener};
use crate::pipeline::{self, Runtime};
use crate::proxy::{self, UpstreamClient};
use crate::ratelimit::{Limiter, COUNTER_TREE};
use crate::route_store::{ApiRouteStatus, RouteStore};
use crate::state::AppState;
use crate::storage::Storage;
use crate::telemetry::{LogBridge, Logging, Metrics, RecentLog, Stats};

mod bootstrap;
mod changes;

/// Open connections allowed on the admin listener (one worker, loopback by default).
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Log(io::Error),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Tls(String),
    #[error("cannot create the first admin user: {0}")]
    Bootstrap(String),
    #[error("cannot load state from storage: {0}")]
    State(sled::Error),
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(config: Config, source: ConfigSource) -> Result<(), StartupError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Metrics::new();
    let logging =
        Logging::new(&config.log, metrics.log_dropped.clone()).map_err(StartupError::Log)?;
    let logger = logging.logger.clone();
    if log::set_boxed_logger(Box::new(LogBridge(logger.clone()))).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    install_panic_hook(logger.clone());
    let storage = Storage::open_with_backend(&config.storage, &metrics, &logger)?;
    if let StorageBackend::Redis(redis) = &config.storage.backend {
        info!(logger, "sharing users, sessions, counters, routes and the audit trail through Redis";
            "url" => config::redact_url_password(&redis.url), "key_prefix" => &redis.key_prefix);
    }
    let auth = Auth::open(&storage, &config, &metrics).map_err(StartupError::State)?;
    let counters = Limiter::open(
        &storage,
        COUNTER_TREE,
        config.storage.rate_limit_keys,
        metrics.counter_evictions("rate_limit"),
    )
    .map_err(StartupError::State)?;
    let routes = RouteStore::open(&storage).map_err(StartupError::State)?;
    let audit = AuditLog::open(&storage, logger.clone()).map_err(StartupError::State)?;
    let load_tls = |files: &Option<TlsFiles>| {
        files
            .as_ref()
            .map(load_server_tls)
            .transpose()
            .map_err(|e| StartupError::Tls(e.to_string()))
    };
    let server_tls = load_tls(&config.server.tls)?;
    let admin_tls = load_tls(&config.admin.tls)?;
    let api_routes = routes.load().map_err(StartupError::State)?;
    let (client_tls, roots) = proxy::client_tls_config();
    if roots == 0 {
        warn!(
            logger,
            "no system root certificates found; https upstreams will fail verification"
        );
    }

    let server = config.server.clone();
    let upstream = config.upstream.clone();
    let checks_upstream = upstream.clone();
    let checks_tls = client_tls.clone();
    let admin_listen = config.admin.listen;
    let recent_log_bytes = config.admin.recent_log_bytes;
    let recent_log_skipped = metrics.recent_log_skipped.clone();
    let listen = server.listen;
    let tunnels = Arc::new(proxy::Tunnels::new(&metrics));
    let state = web::Data::new(AppState {
        runtime: ArcSwap::from_pointee(Runtime::compose(config, api_routes, None)),
        metrics,
        logging,
        stats: Stats::new(),
        recent: RecentLog::new(recent_log_bytes).counting_skipped(recent_log_skipped),
        storage,
        auth,
        counters,
        routes,
        audit,
        probes: Default::default(),
        tunnels,
        proxy_address: std::sync::OnceLock::new(),
        admin_address: std::sync::OnceLock::new(),
        draining: AtomicBool::new(false),
    });
    bootstrap::first_admin(&state).await?;
    // Host names of service targets are resolved before the first request.
    let mut resolvers = None;
    let first = state.runtime.load_full();
    resolve_once(&state, &first, &mut resolvers).await;

    let proxy_state = state.clone();
    let (proxy_server, proxy_addr) = listener::start(
        Listener {
            name: "proxy",
            addr: server.listen,
            tls: server_tls,
            workers: server.workers,
            keep_alive: server.keep_alive,
            header_timeout: server.header_timeout,
            shutdown_grace: server.shutdown_grace,
            max_connections: server.max_connections,
        },
        &state.metrics,
        move || {
            // One upstream client per worker, built once: awc clients are not Send.
            let client = UpstreamClient::new(&upstream, server.request_timeout, client_tls.clone());
            App::new()
                .app_data(proxy_state.clone())
                .app_data(web::Data::new(client))
                .default_service(web::to(pipeline::handle))
        },
    )
    .map_err(|source| StartupError::Bind {
        what: "server.listen",
        addr: listen,
        source,
    })?;

    let _ = state.proxy_address.set(proxy_addr);

    let admin_state = state.clone();
    let (admin_server, admin_addr) = listener::start(
        Listener {
            name: "admin",
            addr: admin_listen,
            tls: admin_tls,
            workers: 1,
            keep_alive: server.keep_alive,
            header_timeout: server.header_timeout,
            shutdown_grace: server.shutdown_grace,
            max_connections: ADMIN_MAX_CONNECTIONS,
        },
        &state.metrics,
        move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(listener::track_requests))
                .app_data(admin_state.clone())
                .configure(crate::admin::configure)
        },
    )
    .map_err(|source| StartupError::Bind {
        what: "admin.listen",
        addr: admin_listen,
        source,
    })?;

    let _ = state.admin_address.set(admin_addr);

    let proxy_handle = proxy_server.handle();
    let admin_handle = admin_server.handle();
    // Handlers are in place before "started" is logged, so a signal sent as
    // soon as the gateway reports itself up is never fatal.
    let (mut hup, mut term, mut int) = (
        signal(SignalKind::hangup())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    {
        let runtime = state.runtime.load();
        info!(logger, "portcullis started";
            "version" => env!("CARGO_PKG_VERSION"),
            "commit" => env!("PORTCULLIS_COMMIT"),
            "config" => source.to_string(),
            "profile" => runtime.config.profile.name(),
            "proxy_addr" => proxy_addr.to_string(),
            "admin_addr" => admin_addr.to_string(),
            "tls" => runtime.config.server.tls.is_some(),
            "routes" => runtime.routes.routes().len());
    }

    let maintenance = tokio::spawn(maintain(state.clone()));
    let following = state
        .storage
        .shared()
        .and_then(|shared| shared.take_changes())
        .map(|feed| tokio::spawn(changes::follow(state.clone(), feed)));
    let checks_state = state.clone();
    // Local: awc's client is not Send. One checker for the whole process.
    let health_checks = actix_web::rt::spawn(async move {
        let client = UpstreamClient::new(&checks_upstream, server.request_timeout, checks_tls);
        let state = &checks_state;
        crate::upstream::checks::run(
            || state.runtime.load().services.clone(),
            client.http().clone(),
            &state.metrics,
            &state.logging.logger,
        )
        .await
    });
    let dns_state = state.clone();
    let resolving = tokio::spawn(async move { resolve_targets(&dns_state, resolvers).await });
    let tunnels_state = state.clone();
    let tunnel_checks = tokio::spawn(async move { check_tunnels(&tunnels_state).await });
    let stats_state = state.clone();
    let stats_ticker = tokio::spawn(async move {
        tokio::join!(
            stats_state.stats.run_ticker(),
            stats_state.recent.run_flusher()
        )
    });
    let signals_state = state.clone();
    let signals = tokio::spawn(async move {
        let reason = loop {
            tokio::select! {
                _ = hup.recv() => reload(&signals_state, &source).await,
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
            }
        };
        signals_state.draining.store(true, Ordering::Relaxed);
        info!(signals_state.logging.logger, "shutting down: finishing in-flight requests"; "signal" => reason,
            "in_flight" => signals_state.metrics.in_flight.get());
        // Tunnels get the grace period too, then end (and are logged) just
        // before the workers would be stopped under them.
        let tunnels = signals_state.tunnels.clone();
        let grace = signals_state.runtime.load().config.server.shutdown_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            tunnels.end_all();
        });
        // Stop the proxy first so the admin listener can report draining until the end.
        proxy_handle.stop(true).await;
        admin_handle.stop(true).await;
    });

    let (proxy_result, admin_result) = futures_util::future::join(proxy_server, admin_server).await;
    signals.abort();
    maintenance.abort();
    health_checks.abort();
    tunnel_checks.abort();
    resolving.abort();
    stats_ticker.abort();
    if let Some(following) = following {
        following.abort();
    }
    upkeep(
        &state,
        Upkeep {
            sweep: true,
            everything: true,
        },
    );
    if let Err(err) = state.storage.flush() {
        error!(logger, "storage flush at shutdown failed"; "error" => err.to_string());
    }
    info!(logger, "portcullis stopped");
    state.logging.flush();
    proxy_result?;
    admin_result?;
    Ok(())
}

/// Resolves the host names of service targets every
/// `upstream.resolve_interval`, and at once when a reload names new ones;
/// serves the services again, health kept, when an answer changed.
async fn resolve_targets(state: &AppState, mut resolvers: Option<Resolving>) {
    let mut last_round = tokio::time::Instant::now();
    let mut last_names = crate::upstream::dns::names(&state.runtime.load().services);
    loop {
        let interval = state.runtime.load().config.upstream.resolve_interval;
        tokio::time::sleep(interval.min(std::time::Duration::from_secs(1))).await;
        let runtime = state.runtime.load_full();
        let names = crate::upstream::dns::names(&runtime.services);
        if names != last_names || last_round.elapsed() >= runtime.config.upstream.resolve_interval {
            last_round = tokio::time::Instant::now();
            last_names = names;
            resolve_once(state, &runtime, &mut resolvers).await;
        }
    }
}

/// The resolver of the configured servers, kept until a reload changes them.
type Resolving = (Vec<SocketAddr>, crate::upstream::dns::Resolver);

/// One round of resolution for `runtime`'s services; serves them again
/// when an answer changed.
async fn resolve_once(state: &AppState, runtime: &Runtime, resolvers: &mut Option<Resolving>) {
    let servers = &runtime.config.upstream.resolvers;
    let resolver = match resolvers {
        Some((made_for, resolver)) if made_for == servers => resolver,
        _ => {
            let made = crate::upstream::dns::Resolver::new(servers);
            &resolvers.insert((servers.clone(), made)).1
        }
    };
    if crate::upstream::dns::refresh(&runtime.services, resolver, &state.logging.logger).await {
        let _changing = state.routes.changes.lock().await;
        let config = state.runtime.load().config.clone();
        if let Err(err) = state.serve(config) {
            error!(state.logging.logger, "serving the newly resolved targets failed"; "error" => err.to_string());
        }
    }
}

/// Ends the WebSocket tunnels whose sessions stopped being valid (revoked,
/// past their lifetime, or their user changed), and keeps the others'
/// sessions from idling out, every `session.tunnel_check_interval`.
async fn check_tunnels(state: &AppState) {
    loop {
        let runtime = state.runtime.load_full();
        let config = &runtime.config.session;
        tokio::time::sleep(config.tunnel_check_interval).await;
        let ended = state
            .tunnels
            .sweep(|session| state.auth.still_valid(session, config));
        if ended > 0 {
            info!(state.logging.logger, "closed WebSocket tunnels of sessions no longer valid"; "tunnels" => ended);
        }
    }
}

/// Background upkeep, off the request path: write behind session activity
/// and rate-limit counts, sweep expired sessions and counters.
async fn maintain(state: web::Data<AppState>) {
    // The first round sweeps, which also counts the live sessions.
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        let (interval, sweep_every) = {
            let config = &state.runtime.load().config;
            (
                config
                    .storage
                    .flush_interval
                    .min(config.session.touch_interval),
                config.storage.sweep_interval,
            )
        };
        tokio::time::sleep(interval).await;
        let sweep = last_sweep.is_none_or(|at| at.elapsed() >= sweep_every);
        if sweep {
            last_sweep = Some(std::time::Instant::now());
        }
        let worker = state.clone();
        let _ = web::block(move || {
            upkeep(
                &worker,
                Upkeep {
                    sweep,
                    everything: false,
                },
            )
        })
        .await;
    }
}

/// What one round of upkeep does.
struct Upkeep {
    /// Also remove expired sessions and counters.
    sweep: bool,
    /// Write all unwritten activity, not just what is due (shutdown).
    everything: bool,
}

/// One round of write-behind (and, when due, sweeping).
fn upkeep(state: &AppState, round: Upkeep) {
    let logger = &state.logging.logger;
    if let Some(failure) = state.storage.failure() {
        // Every write would fail again until a restart: say so once a sweep
        // interval instead of failing every round.
        if round.sweep {
            error!(logger, "storage is failing: changes are not saved";
                "error" => crate::storage::advice(&failure));
        }
        return;
    }
    if let Err(err) = state.auth.persist_activity(round.everything) {
        error!(logger, "writing session activity failed"; "error" => err.to_string());
    }
    if round.sweep {
        if let Err(err) = state.auth.sweep(&state.runtime.load().config) {
            error!(logger, "sweeping sessions failed"; "error" => err.to_string());
        }
    }
    state
        .metrics
        .sessions_active
        .set(state.auth.live_sessions() as i64);
    if let Err(err) = state.counters.local().persist(round.sweep) {
        error!(logger, "writing rate-limit counters failed"; "error" => err.to_string());
    }
    if let Err(err) = state.auth.throttle.persist(round.sweep) {
        error!(logger, "writing login-throttle counters failed"; "error" => err.to_string());
    }
    let keys = &state.metrics.counter_keys;
    keys.with_label_values(&["rate_limit"])
        .set(state.counters.local().len() as i64);
    keys.with_label_values(&["login_throttle"])
        .set(state.auth.throttle.len() as i64);
}

/// Loads the configuration again and swaps it in, or keeps the running one
/// when the new one is invalid. Always reopens the log file (logrotate).
async fn reload(state: &AppState, source: &ConfigSource) {
    let logger = &state.logging.logger;
    if let Err(err) = state.logging.reopen() {
        error!(logger, "cannot reopen the log file"; "error" => err.to_string());
    }
    match config::load(source) {
        Ok(new) => {
            let old = state.runtime.load();
            for key in restart_only_changes(&old.config, &new) {
                warn!(logger, "configuration change needs a restart to take effect"; "key" => key);
            }
            state.logging.set_level(new.log.level);
            // API changes wait: none is lost between loading routes and the swap.
            let _changing = state.routes.changes.lock().await;
            let runtime = match state.serve(new) {
                Ok(runtime) => runtime,
                Err(err) => {
                    error!(logger, "configuration reload rejected: cannot read API routes; keeping the running configuration";
                        "error" => err.to_string());
                    return;
                }
            };
            let routes = runtime.routes.routes().len();
            for api in &runtime.api_routes {
                match &api.status {
                    ApiRouteStatus::Serving => {}
                    ApiRouteStatus::Shadowed => {
                        warn!(logger, "API route not served: the file defines a route with its id";
                        "route" => &api.record.id)
                    }
                    ApiRouteStatus::Invalid(problems) => {
                        warn!(logger, "API route not served: it is not valid under the new configuration";
                        "route" => &api.record.id,
                        "problems" => problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
                    }
                }
            }
            state
                .metrics
                .config_reloads
                .with_label_values(&["success"])
                .inc();
            info!(logger, "configuration reloaded"; "config" => source.to_string(), "routes" => routes);
        }
        Err(errors) => {
            state
                .metrics
                .config_reloads
                .with_label_values(&["failure"])
                .inc();
            for e in &errors {
                error!(logger, "invalid configuration"; "key" => &e.path, "problem" => &e.message);
            }
            error!(logger, "configuration reload rejected; keeping the running configuration";
                "config" => source.to_string(), "errors" => errors.len());
        }
    }
}

/// Settings read only at startup: listeners, TLS, storage, workers, pools and log sink.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("server.listen", old.server.listen != new.server.listen);
    check("server.tls_cert/tls_key", old.server.tls != new.server.tls);
    check("server.workers", old.server.workers != new.server.workers);
    check(
        "server.max_connections",
        old.server.max_connections != new.server.max_connections,
    );
    check(
        "server.header_timeout",
        old.server.header_timeout != new.server.header_timeout,
    );
    check(
        "server.keep_alive",
        old.server.keep_alive != new.server.keep_alive,
    );
    check(
        "server.shutdown_grace",
        old.server.shutdown_grace != new.server.shutdown_grace,
    );
    check("admin.listen", old.admin.listen != new.admin.listen);
    check("admin.tls_cert/tls_key", old.admin.tls != new.admin.tls);
    check(
        "admin.recent_log_bytes",
        old.admin.recent_log_bytes != new.admin.recent_log_bytes,
    );
    check(
        "storage.flush_interval",
        old.storage.flush_interval != new.storage.flush_interval,
    );
    check(
        "log.buffer/buffer_bytes",
        old.log.buffer != new.log.buffer || old.log.buffer_bytes != new.log.buffer_bytes,
    );
    check(
        "storage",
        old.storage.path != new.storage.path
            || old.storage.cache_capacity != new.storage.cache_capacity
            || old.storage.session_cache != new.storage.session_cache
            || old.storage.rate_limit_keys != new.storage.rate_limit_keys
            || old.storage.login_throttle_keys != new.storage.login_throttle_keys,
    );
    check("upstream", old.upstream != new.upstream);
    check(
        "login.max_concurrent_hashes",
        old.login.max_concurrent_hashes != new.login.max_concurrent_hashes,
    );
    check(
        "log.output/format",
        old.log.output != new.log.output || old.log.format != new.log.format,
    );
    changed
}

/// Reads the proxy listener's certificate chain and key.
pub fn load_server_tls(files: &TlsFiles) -> Result<rustls::ServerConfig, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert_path, key_path) = (files.cert.display(), files.key.display());
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            ConfigError::new(
                "server.tls_cert",
                format!("{cert_path}: cannot read a PEM certificate chain: {err}"),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "server.tls_cert",
            format!("{cert_path}: contains no certificate"),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| {
        ConfigError::new(
            "server.tls_key",
            format!("{key_path}: cannot read a PEM private key: {err}"),
        )
    })?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| {
            ConfigError::new(
                "server.tls_key",
                format!("{key_path} does not match the certificate in {cert_path}, or is unusable: {err}"),
            )
        })
}

/// Routes panic reports into the log as one error record (message and
/// location, never a backtrace) instead of raw text on stderr.
fn install_panic_hook(logger: slog::Logger) {
    std::panic::set_hook(Box::new(move |info| {
        let message = crate::telemetry::panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        error!(logger, "panic"; "panic" => message, "location" => location);
    }));
}
