//! Logs, metrics, and the in-memory traffic statistics and recent access
//! records the admin console reads.

mod logging;
mod metrics;
pub mod recent;
pub mod stats;

pub use logging::{level_name, LogBridge, Logging, Tap};
pub use metrics::{method_label, status_class, InFlight, Metrics};
pub use recent::{RecentLog, DEFAULT_RECENT_LOG_BYTES};
pub use stats::Stats;

/// A number for the calling thread, the same at every call: structures
/// written on the request path give each worker its own part (this number
/// modulo their number of parts), so workers never contend for one.
pub(crate) fn thread_index() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|index| *index)
}

/// The text of a panic payload (`panic!("...")`), for logging.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
