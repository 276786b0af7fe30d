//! The adversarial suite: hostile and slow clients, ambiguous paths and
//! headers, and faults, each against the real binary.

#[path = "hardening/headers.rs"]
mod headers;
#[path = "hardening/paths.rs"]
mod paths;
