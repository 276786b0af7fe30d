//! The adversarial suite: hostile and slow clients, ambiguous paths and
//! headers, and faults, each against the real binary.

#[path = "hardening/faults.rs"]
mod faults;
#[path = "hardening/headers.rs"]
mod headers;
#[path = "hardening/login.rs"]
mod login;
#[path = "hardening/newcomer.rs"]
mod newcomer;
#[path = "hardening/paths.rs"]
mod paths;
#[path = "hardening/slow.rs"]
mod slow;

use crate::common::http::{metrics, sample};
use crate::common::Gateway;

/// The value of a metric sample on the gateway's admin listener (0 when absent).
pub async fn metric(gateway: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = metrics(&gateway.admin_url("/metrics")).await;
    sample(&text, name, labels).unwrap_or(0.0)
}

/// Raises this process's open-file limit (inherited by the gateways it
/// starts) to `wanted`, or as far as the hard limit allows; returns the limit.
pub fn raise_open_files(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}
