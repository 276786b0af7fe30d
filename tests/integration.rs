//! The integration test suite: the real `portcullis` binary, real sockets.
//!
//! One test binary; each area of behaviour lives in `tests/integration/`,
//! the shared harness in `tests/common/`:
//! - `Gateway::start(Setup)` runs `portcullis serve` on a configuration built
//!   with `Setup` (extra `key = value` lines per section) and routes built with
//!   `route(id, path, upstream)`. Always build routes with `route`: it is the
//!   one place where every route's table is written.
//! - `Launch::cli` / `Gateway::cli` run `portcullis user|session ...` on the
//!   same configuration (and so storage) as the gateway; `Gateway::stop`
//!   (SIGTERM) or `kill` (SIGKILL), then `relaunch().start()`, restart it on
//!   the same storage.
//! - `Echo`, `Hanging`, `Fixed` and `closed_port_url` are the upstreams.
//! - `Recorder` is a strict raw upstream that records every request it
//!   parses, so a test can compare what reached the upstream with the log.
//! - `client()` (reqwest) for well-formed traffic, `RawConn` for the rest.
//! - `admin_api::Api` calls the admin API as the token, a console session or
//!   nobody, and checks every answer against the OpenAPI document.
//!
//! Tests never sleep to wait: they poll with a deadline (`eventually`,
//! `Gateway::wait_for_log`).

mod common;

#[path = "integration/admin.rs"]
mod admin;
#[path = "integration/admin_api.rs"]
mod admin_api;
#[path = "integration/auth.rs"]
mod auth;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/crash_loop.rs"]
mod crash_loop;
#[path = "integration/hardening.rs"]
mod hardening;
#[path = "integration/lifecycle.rs"]
mod lifecycle;
#[path = "integration/limits.rs"]
mod limits;
#[path = "integration/logging.rs"]
mod logging;
#[path = "integration/proxying.rs"]
mod proxying;
#[path = "integration/rate_limits.rs"]
mod rate_limits;
#[path = "integration/routing.rs"]
mod routing;
#[path = "integration/services.rs"]
mod services;
#[path = "integration/shared_state.rs"]
mod shared_state;
#[path = "integration/smuggling.rs"]
mod smuggling;
#[path = "integration/tls.rs"]
mod tls;
#[path = "integration/websockets.rs"]
mod websockets;
