//! Helpers shared by the integration tests: the gateway process, upstreams,
//! clients and configuration builders.

pub mod config;
pub mod dns;
pub mod gateway;
pub mod http;
pub mod recorder;
pub mod redis;
pub mod tls;
pub mod upstream;
pub mod websocket;

use std::time::Duration;

pub use config::{route, Setup};
pub use gateway::{Gateway, Launch};
pub use http::{client, client_builder, eventually, get_json, json, raw_request, RawConn};
pub use upstream::{closed_port_url, Echo, Fixed, Hanging};

/// A generous bound for anything the gateway should do promptly.
pub const SOON: Duration = Duration::from_secs(10);

/// A gateway with one prefix route, `/p/*` → the echo server.
pub fn echo_gateway(echo: &Echo) -> Gateway {
    Gateway::start(Setup::new().route(route("echo", "/p/*", &echo.url())))
}
