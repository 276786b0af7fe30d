//! The integration test suite: the real `portcullis` binary, real sockets.
//!
//! One test binary; each area of behaviour lives in `tests/integration/`.

mod common;

#[path = "integration/admin.rs"]
mod admin;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/lifecycle.rs"]
mod lifecycle;
#[path = "integration/limits.rs"]
mod limits;
#[path = "integration/logging.rs"]
mod logging;
#[path = "integration/proxying.rs"]
mod proxying;
#[path = "integration/routing.rs"]
mod routing;
#[path = "integration/tls.rs"]
mod tls;
