//! Portcullis: a single-node API gateway.
//!
//! The request path, in order: [`pipeline`] (admission, [`routing`],
//! [`auth`], [`ratelimit`]) → [`proxy`] (to a URL or a service's target
//! chosen by [`upstream`]). Around it: [`config`], [`telemetry`]
//! (logs and metrics), [`storage`] (sled), [`state`] (what every worker
//! shares), [`admin`] and [`app`] (listeners, signals, reload).
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod listener;
pub mod pipeline;
pub mod proxy;
pub mod ratelimit;
pub mod route_store;
pub mod routing;
pub mod shared;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod upstream;
