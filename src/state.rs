//! The state shared by every worker of both listeners. It lives here, below
//! the wiring in `app`, so the pipeline, the session endpoints and the admin
//! side can all use it without importing from the module that starts them.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use crate::admin::audit::AuditLog;
use crate::auth::Auth;
use crate::config::Config;
use crate::pipeline::Runtime;
use crate::ratelimit::Limiter;
use crate::route_store::RouteStore;
use crate::storage::Storage;
use crate::telemetry::{Logging, Metrics, RecentLog, Stats};

/// State shared by every worker of both listeners.
pub struct AppState {
    /// The serving configuration, replaced whole on reload.
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub logging: Logging,
    /// Requests per second, overall and per route, for the admin console.
    pub stats: Stats,
    /// The latest access-log records, for the admin console.
    pub recent: RecentLog,
    pub storage: Storage,
    /// Users, sessions and login throttling.
    pub auth: Auth,
    /// Rate-limit counters.
    pub counters: Limiter,
    /// Routes made through the admin API.
    pub routes: RouteStore,
    /// The admin audit trail.
    pub audit: AuditLog,
    /// The admin console's test requests through the proxy.
    pub probes: crate::proxy::probe::Probes,
    /// The open WebSocket tunnels.
    pub tunnels: Arc<crate::proxy::Tunnels>,
    /// Where the proxy listener is bound, once it is (for test requests).
    pub proxy_address: OnceLock<SocketAddr>,
    /// Where the admin listener is bound, once it is (for the `Host` check).
    pub admin_address: OnceLock<SocketAddr>,
    /// Set once shutdown begins, so `/readyz` turns away new traffic.
    pub draining: AtomicBool,
}

impl AppState {
    /// Serves `config` (as loaded from the file) with the stored API
    /// routes, swapping it in for new requests at once. Callers hold
    /// `routes.changes` so that no change is lost between load and swap.
    pub fn serve(&self, config: Config) -> sled::Result<Arc<Runtime>> {
        let previous = self.runtime.load();
        let runtime = Arc::new(Runtime::compose(
            config,
            self.routes.load()?,
            Some(&previous),
        ));
        self.runtime.store(runtime.clone());
        Ok(runtime)
    }
}
