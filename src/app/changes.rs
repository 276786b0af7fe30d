//! With `storage.backend = "redis"`: takes in what other nodes change in
//! the shared store, from the change feed, so this node's memory (users,
//! sessions, the served routes) follows within a round trip.

use actix_web::web;
use slog::error;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::shared::Change;
use crate::state::AppState;

/// Applies changes as they come, a burst at a time, for as long as the
/// feed runs. A change that cannot be applied (Redis went away meanwhile)
/// turns into a full resynchronisation, tried again until it succeeds.
pub(super) async fn follow(state: web::Data<AppState>, mut changes: UnboundedReceiver<Change>) {
    let mut pending: Vec<Change> = Vec::new();
    loop {
        if pending.is_empty() {
            match changes.recv().await {
                Some(change) => pending.push(change),
                None => return,
            }
        }
        while let Ok(change) = changes.try_recv() {
            pending.push(change);
        }
        slog::debug!(state.logging.logger, "changes from other nodes"; "changes" => format!("{pending:?}"));
        if pending.contains(&Change::Resync) {
            pending = vec![Change::Resync];
        } else {
            // Forgetting sessions cannot fail: do it before anything that can.
            pending.sort_by_key(|change| !matches!(change, Change::Session(_)));
        }
        match apply(&state, &pending).await {
            Ok(()) => {
                if pending == [Change::Resync] {
                    slog::debug!(state.logging.logger, "read users and routes afresh from the shared store; sessions are read again when next presented");
                }
                pending.clear();
            }
            Err(err) => {
                error!(state.logging.logger, "cannot take in changes from the shared store; retrying";
                    "error" => err);
                pending = vec![Change::Resync];
                let retry = match &state.runtime.load().config.storage.backend {
                    crate::config::StorageBackend::Redis(redis) => redis.health_interval,
                    crate::config::StorageBackend::Sled => std::time::Duration::from_secs(1),
                };
                tokio::time::sleep(retry).await;
            }
        }
    }
}

async fn apply(state: &web::Data<AppState>, changes: &[Change]) -> Result<(), String> {
    let routes = changes
        .iter()
        .any(|c| matches!(c, Change::Route(_) | Change::Resync));
    let worker = state.clone();
    let batch = changes.to_vec();
    // Reading users touches Redis: off the async thread.
    web::block(move || {
        batch
            .iter()
            .try_for_each(|change| worker.auth.apply(change))
    })
    .await
    .map_err(|err| err.to_string())?
    .map_err(|err| err.to_string())?;
    if routes {
        let _changing = state.routes.changes.lock().await;
        let worker = state.clone();
        web::block(move || {
            let config = worker.runtime.load().config.clone();
            worker.serve(config).map(|_| ())
        })
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| err.to_string())?;
    }
    Ok(())
}
