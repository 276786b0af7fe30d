//! Logs, metrics, and the in-memory traffic statistics and recent access
//! records the admin console reads.

mod logging;
mod metrics;
pub mod recent;
pub mod stats;

pub use logging::{level_name, LogBridge, Logging};
pub use metrics::{method_label, status_class, InFlight, Metrics};
pub use recent::{RecentLog, DEFAULT_RECENT_LOG_BYTES};
pub use stats::Stats;

/// The text of a panic payload (`panic!("...")`), for logging.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
