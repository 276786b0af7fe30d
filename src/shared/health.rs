//! Whether Redis answers: a `PING` every `health_interval`, which drives
//! `/readyz`, the `portcullis_redis_up` metric and the log line an operator
//! sees when it goes down or comes back.
//!
//! The connection manager reconnects when its connection breaks, but not
//! when a server stops answering on a connection that stays open (a paused
//! process, a partition): after a few unanswered pings the connections
//! (this thread's and the workers') are replaced with fresh ones.

use std::sync::Arc;

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;

use super::{new_manager, Shared};
use crate::config::RedisConfig;

/// Unanswered pings in a row before Redis counts as down (one slow ping,
/// say during a fork for a snapshot, is not an outage).
const DOWN_AFTER: u32 = 2;
/// Unanswered pings in a row before the connection is replaced.
const REPLACE_AFTER: u32 = 3;

pub(super) async fn watch(
    shared: Shared,
    manager: Arc<ArcSwap<ConnectionManager>>,
    config: RedisConfig,
    client: redis::Client,
    logger: slog::Logger,
) {
    let mut failures = 0u32;
    let mut interval = tokio::time::interval(config.health_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let patience = config.command_timeout.max(config.connect_timeout);
    loop {
        interval.tick().await;
        let mut conn = (**manager.load()).clone();
        let answered = tokio::time::timeout(
            patience,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        let error = match answered {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(super::describe(&err)),
            Err(_) => Some(format!("no answer to a ping within {patience:?}")),
        };
        match error {
            None => {
                failures = 0;
                shared.mark(|h| h.answering = true, "", &logger);
            }
            Some(error) => {
                failures += 1;
                if failures >= DOWN_AFTER {
                    shared.mark(|h| h.answering = false, &error, &logger);
                }
                if failures.is_multiple_of(REPLACE_AFTER) {
                    manager.store(Arc::new(new_manager(&client, &config)));
                    shared.renew_connections();
                }
            }
        }
    }
}
