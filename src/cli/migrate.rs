//! `portcullis storage migrate --to redis|sled`: moves users, sessions and
//! API routes between this node's sled database and the shared Redis, so a
//! team can grow from one node to several (and back) without logging
//! anyone out or recreating an account.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{MigrateTarget, StorageCommand};
use crate::config::{redact_url_password, StorageBackend};
use crate::shared::Shared;
use crate::storage::{
    Records, RouteRecord, SessionRecord, Storage, StorageError, UserRecord, ROUTES_TREE,
    SESSIONS_TREE, USERS_TREE,
};
use crate::telemetry::Metrics;

/// Runs a storage command; prints what it moved and returns the exit code.
pub fn run(config_path: Option<PathBuf>, command: StorageCommand) -> ExitCode {
    let StorageCommand::Migrate { to } = command;
    let (config, source) = match super::load_config(config_path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let StorageBackend::Redis(redis) = &config.storage.backend else {
        eprintln!(
            "portcullis: {source} does not name a Redis: set storage.backend = \"redis\" and \
             [storage.redis] url; `migrate` moves records between storage.path and that Redis"
        );
        return ExitCode::from(2);
    };
    let storage = match Storage::open(&config.storage) {
        Ok(storage) => storage,
        Err(StorageError::Locked { path }) => {
            eprintln!(
                "portcullis: the database at {path} is in use by a running gateway: stop it first"
            );
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("portcullis: {err}");
            return ExitCode::FAILURE;
        }
    };
    let quiet = slog::Logger::root(slog::Discard, slog::o!());
    let shared = match Shared::connect(redis, &Metrics::new(), &quiet) {
        Ok(shared) => shared,
        Err(err) => {
            eprintln!("portcullis: {err}");
            return ExitCode::FAILURE;
        }
    };
    let remote = storage.clone().share(shared);
    let (from, into) = match to {
        MigrateTarget::Redis => (&storage, &remote),
        MigrateTarget::Sled => (&remote, &storage),
    };
    let moved = (|| -> sled::Result<[usize; 3]> {
        let counts = [
            copy::<UserRecord>(from, into, USERS_TREE, |r| &r.username)?,
            copy::<SessionRecord>(from, into, SESSIONS_TREE, |r| &r.id)?,
            copy::<RouteRecord>(from, into, ROUTES_TREE, |r| &r.id)?,
        ];
        storage.flush()?;
        Ok(counts)
    })();
    let (path, url) = (
        config.storage.path.display(),
        redact_url_password(&redis.url),
    );
    let (from_name, into_name) = match to {
        MigrateTarget::Redis => (format!("{path}"), url),
        MigrateTarget::Sled => (url, format!("{path}")),
    };
    match moved {
        Ok([users, sessions, routes]) => {
            println!(
                "copied {users} users, {sessions} sessions and {routes} API routes from {from_name} to {into_name} (records it already held were kept as they are)"
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("portcullis: copying from {from_name} to {into_name} failed (records copied so far stay): {err}");
            ExitCode::FAILURE
        }
    }
}

/// Copies every record of a kind the target does not hold yet; returns how many.
fn copy<T: Serialize + DeserializeOwned>(
    from: &Storage,
    into: &Storage,
    tree: &str,
    key: fn(&T) -> &str,
) -> sled::Result<usize> {
    let source: Records<T> = from.records(tree)?;
    let target: Records<T> = into.records(tree)?;
    let mut count = 0;
    for record in source.iter() {
        let record = record?;
        // Never over a record the target has: it may be newer (a revoked
        // session, a changed password) on a store other nodes already use.
        count += usize::from(target.create(key(&record), &record)?);
    }
    Ok(count)
}
