//! The state shared by every worker of both listeners. It lives here, below
//! the wiring in `app`, so the pipeline, the session endpoints and the admin
//! side can all use it without importing from the module that starts them.

use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;

use crate::auth::Auth;
use crate::pipeline::Runtime;
use crate::ratelimit::CounterStore;
use crate::storage::Storage;
use crate::telemetry::{Logging, Metrics};

/// State shared by every worker of both listeners.
pub struct AppState {
    /// The serving configuration, replaced whole on reload.
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub logging: Logging,
    pub storage: Storage,
    /// Users, sessions and login throttling.
    pub auth: Auth,
    /// Rate-limit counters.
    pub counters: CounterStore,
    /// Set once shutdown begins, so `/readyz` turns away new traffic.
    pub draining: AtomicBool,
}
