//! Logs and metrics.

mod logging;
mod metrics;

pub use logging::{level_name, LogBridge, Logging};
pub use metrics::{method_label, status_class, InFlight, Metrics};

/// The text of a panic payload (`panic!("...")`), for logging.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
