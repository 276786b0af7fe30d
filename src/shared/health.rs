//! Whether Redis answers: a `PING` every `health_interval`, which drives
//! `/readyz`, the `portcullis_redis_up` metric and the log line an operator
//! sees when it goes down or comes back.
//!
//! The connection manager reconnects when its connection breaks, but not
//! when a server stops answering on a connection that stays open (a paused
//! process, a partition): after a few unanswered pings the manager is
//! replaced with a fresh one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;

use super::{new_manager, Shared};
use crate::config::RedisConfig;

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
    loop {
        interval.tick().await;
        let mut conn = (**manager.load()).clone();
        let answered = tokio::time::timeout(
            config.command_timeout.max(config.connect_timeout),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        let error = match answered {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(super::describe(&err)),
            Err(_) => Some(format!(
                "no answer within {:?}",
                config.command_timeout.max(config.connect_timeout)
            )),
        };
        match error {
            None => {
                failures = 0;
                if shared.mark(true) {
                    slog::info!(logger, "Redis answers again; resynchronising");
                }
            }
            Some(error) => {
                failures += 1;
                if shared.mark(false) {
                    slog::error!(logger, "Redis is down: sessions are served from memory for storage.redis.session_fallback, logins and admin changes answer 503, and /readyz reports not ready";
                        "error" => &error);
                }
                if failures.is_multiple_of(REPLACE_AFTER) {
                    manager.store(Arc::new(new_manager(&client, &config)));
                }
            }
        }
    }
}
