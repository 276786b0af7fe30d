//! Live traffic for the console: per-second stats over the last 15
//! minutes, and the most recent access-log records, queried or streamed as
//! Server-Sent Events. Both are in memory, bounded, and carry what the
//! access log carries (the same redaction).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::state::AppState;
use crate::telemetry::recent::{self, LogFilter};
use crate::telemetry::stats::WINDOW_SECONDS;

#[derive(Deserialize)]
pub struct StatsQuery {
    seconds: Option<usize>,
}

/// `?seconds=` (default and at most the whole window) of per-second stats.
pub async fn stats(state: web::Data<AppState>, query: web::Query<StatsQuery>) -> HttpResponse {
    let seconds = query
        .seconds
        .unwrap_or(WINDOW_SECONDS)
        .clamp(1, WINDOW_SECONDS);
    HttpResponse::Ok().json(state.stats.snapshot(seconds))
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

/// Records answered at most.
const MAX_RECORDS: usize = 1000;

/// The most recent records matching the filter, newest first.
pub async fn logs(
    state: web::Data<AppState>,
    filter: web::Query<LogFilter>,
    limit: web::Query<Limit>,
) -> HttpResponse {
    let limit = limit.limit.unwrap_or(200).clamp(1, MAX_RECORDS);
    let entries = state.recent.query(&filter, limit);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(recent::json_array(&entries))
}

/// How often a stream checks for shutdown, and sends a comment to keep
/// idle connections (and proxies between) open.
const POLL: Duration = Duration::from_secs(1);
const KEEP_ALIVE_POLLS: u32 = 15;

/// New records matching the filter as they are logged (`data: <record>`);
/// `event: lagged` says how many a slow reader missed. The stream ends
/// when the gateway shuts down.
pub async fn stream(state: web::Data<AppState>, filter: web::Query<LogFilter>) -> HttpResponse {
    let receiver = state.recent.subscribe();
    let filter = filter.into_inner();
    let events = futures_util::stream::unfold(
        (receiver, state, 0u32),
        move |(mut receiver, state, mut idle)| {
            let filter = filter.clone();
            async move {
                loop {
                    if state.draining.load(Ordering::Relaxed) {
                        return None;
                    }
                    let event = match tokio::time::timeout(POLL, receiver.recv()).await {
                        Ok(Ok(entry)) if filter.matches(&entry) => {
                            format!("data: {}\n\n", entry.json())
                        }
                        Ok(Ok(_)) => continue,
                        Ok(Err(RecvError::Lagged(missed))) => {
                            format!("event: lagged\ndata: {missed}\n\n")
                        }
                        Ok(Err(RecvError::Closed)) => return None,
                        Err(_) => {
                            idle += 1;
                            if idle < KEEP_ALIVE_POLLS {
                                continue;
                            }
                            ": keep-alive\n\n".to_owned()
                        }
                    };
                    idle = 0;
                    return Some((
                        Ok::<_, Infallible>(Bytes::from(event)),
                        (receiver, state, idle),
                    ));
                }
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events)
}
