//! Logs and metrics.

mod logging;
mod metrics;

pub use logging::{level_name, LogBridge, Logging};
pub use metrics::{method_label, status_class, InFlight, Metrics};
