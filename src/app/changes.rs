//! With `storage.backend = "redis"`: takes in what other nodes change in
//! the shared store, from the change feed, so this node's memory (users,
//! sessions, the served routes) follows within a round trip.

use actix_web::web;
use slog::error;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::StorageBackend;
use crate::shared::Change;
use crate::state::AppState;

/// Applies changes as they come, a burst at a time, for as long as the
/// feed runs. After missed changes ([`Change::Resync`]) the sessions held
/// are dropped at once, and users and routes read again; a read that fails
/// (Redis went away meanwhile) is tried again until it succeeds, without
/// dropping the sessions again (they may be all that serves while Redis is
/// out of reach).
pub(super) async fn follow(state: web::Data<AppState>, mut changes: UnboundedReceiver<Change>) {
    let mut pending: Vec<Change> = Vec::new();
    // Users and routes must be read again in full (and the feed told so).
    let mut reload = false;
    loop {
        if pending.is_empty() && !reload {
            match changes.recv().await {
                Some(change) => pending.push(change),
                None => return,
            }
        }
        while let Ok(change) = changes.try_recv() {
            pending.push(change);
        }
        let missed = pending.contains(&Change::Resync);
        if missed {
            state.auth.forget_sessions();
            reload = true;
        }
        // Forgetting sessions cannot fail: do it before anything that can.
        pending.retain(|change| match change {
            Change::Session(_) => {
                state.auth.apply(change).ok();
                false
            }
            Change::Resync => false,
            _ => !reload,
        });
        match apply(&state, &pending, reload).await {
            Ok(()) => {
                pending.clear();
                if reload {
                    reload = false;
                    if let Some(shared) = state.storage.shared() {
                        shared.resynced(&state.logging.logger);
                    }
                }
            }
            Err(err) => {
                error!(state.logging.logger, "cannot take in changes from the shared store; retrying";
                    "error" => err);
                pending.clear();
                reload = true;
                let retry = match &state.runtime.load().config.storage.backend {
                    StorageBackend::Redis(redis) => redis.health_interval,
                    StorageBackend::Sled => std::time::Duration::from_secs(1),
                };
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// Takes in user and route changes, or with `reload` reads every user and
/// route again.
async fn apply(
    state: &web::Data<AppState>,
    changes: &[Change],
    reload: bool,
) -> Result<(), String> {
    let routes = reload || changes.iter().any(|c| matches!(c, Change::Route(_)));
    let worker = state.clone();
    let batch = changes.to_vec();
    // Reading users touches Redis: off the async thread.
    web::block(move || {
        if reload {
            return worker.auth.reload_users();
        }
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
