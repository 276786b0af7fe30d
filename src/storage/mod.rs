//! The embedded sled database that holds Portcullis' state.
//!
//! sled writes to its log in memory and persists it every
//! `storage.flush_interval`; callers that need a write to be durable before
//! answering (logouts, revocations) call [`Storage::flush`].
//!
//! When a write cannot reach the disk (a full or failing disk), sled keeps
//! the error and refuses every later write until the database is opened
//! again, even once space returns; reads keep working. So the first failure
//! is latched here: `/readyz` reports it, and says that the gateway needs a
//! restart once the disk has room.

mod records;

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use records::{
    Records, RouteRecord, SessionRecord, Update, UserRecord, CONSOLE_SESSIONS_TREE, ROUTES_TREE,
    SCHEMA_VERSION, SESSIONS_TREE, USERS_TREE,
};

use crate::config::{StorageBackend, StorageConfig};
use crate::shared::{Change, Shared};

/// The current time in Unix milliseconds, the unit of every stored timestamp.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage.path {path}: the database is locked by another process (is another portcullis running?)")]
    Locked { path: String },
    #[error("storage.path {path}: cannot create or open the database: {source}")]
    Open { path: String, source: io::Error },
    #[error("storage.path {path}: {source}")]
    Database { path: String, source: sled::Error },
    #[error("{0}")]
    Redis(String),
    #[error("storage.path {path}: the database was written by a newer Portcullis (schema version {found}; this version reads version {supported} and older). Run that newer version, or restore the backup taken before upgrading")]
    Newer {
        path: String,
        found: u32,
        supported: u32,
    },
}

/// The key, in the default tree, of the database's schema version: the
/// newest [`SCHEMA_VERSION`] that has written to it.
const SCHEMA_KEY: &[u8] = b"\0schema_version";

/// The open database.
#[derive(Clone)]
pub struct Storage {
    db: sled::Db,
    /// With `storage.backend = "redis"`: where users, gateway sessions and
    /// API routes live instead of sled.
    shared: Option<Shared>,
    /// The first write failure, kept: sled does not recover from it while open.
    failure: Arc<Mutex<Option<String>>>,
}

impl Storage {
    /// Opens (creating if needed) the database at `config.path`, with an
    /// explicit cache size so memory use stays small.
    pub fn open(config: &StorageConfig) -> Result<Storage, StorageError> {
        let path = config.path.display().to_string();
        std::fs::create_dir_all(&config.path).map_err(|source| StorageError::Open {
            path: path.clone(),
            source,
        })?;
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(Some(config.flush_interval.as_millis().max(1) as u64))
            .open()
            .map_err(|err| classify(&config.path, err))?;
        stamp_schema(&db).map_err(|err| match err {
            SchemaError::Newer(found) => StorageError::Newer {
                path,
                found,
                supported: SCHEMA_VERSION,
            },
            SchemaError::Database(err) => classify(&config.path, err),
        })?;
        Ok(Storage {
            db,
            shared: None,
            failure: Arc::new(Mutex::new(None)),
        })
    }

    /// Proves the database takes durable writes, for `/readyz`: writes and
    /// flushes a probe key. Blocks on the disk: call it off the request path.
    pub fn probe(&self) -> Result<(), String> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        self.db
            .insert(b"\0probe", &now_ms().to_be_bytes())
            .map(|_| ())
            .and_then(|()| self.flush())
            .map_err(|err| self.note(&err))
    }

    /// Why durable writes fail, once one has: they keep failing until restart.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Latches a write failure; returns its description.
    fn note(&self, err: &sled::Error) -> String {
        let reason = match err {
            sled::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_or_insert(reason)
            .clone()
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ()).inspect_err(|err| {
            self.note(err);
        })
    }

    /// Makes every write so far durable without blocking the async worker.
    pub async fn flush_async(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ()).inspect_err(|err| {
            self.note(err);
        })
    }

    /// Opens the database and, with `storage.backend = "redis"`, connects
    /// to the shared Redis, where users, sessions and routes then live.
    pub fn open_with_backend(
        config: &StorageConfig,
        metrics: &crate::telemetry::Metrics,
        logger: &slog::Logger,
    ) -> Result<Storage, StorageError> {
        let storage = Storage::open(config)?;
        Ok(match &config.backend {
            StorageBackend::Sled => storage,
            StorageBackend::Redis(redis) => {
                storage.share(Shared::connect(redis, metrics, logger).map_err(StorageError::Redis)?)
            }
        })
    }

    /// Keeps users, gateway sessions and API routes in `shared` from now on.
    pub fn share(mut self, shared: Shared) -> Storage {
        self.shared = Some(shared);
        self
    }

    /// The shared Redis, with `storage.backend = "redis"`.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// User accounts, keyed by username.
    pub fn users(&self) -> sled::Result<Records<UserRecord>> {
        self.records(USERS_TREE)
    }

    /// Sessions in `tree` (the gateway's or the console's), keyed by session
    /// id. The console's stay in this node's sled, like its admin listener.
    pub fn sessions(&self, tree: &str) -> sled::Result<Records<SessionRecord>> {
        self.records(tree)
    }

    /// Routes made through the admin API, keyed by route id.
    pub fn routes(&self) -> sled::Result<Records<RouteRecord>> {
        self.records(ROUTES_TREE)
    }

    /// The records kept in `tree`: in the shared Redis for users, gateway
    /// sessions and API routes when there is one, else in this node's sled.
    pub fn records<T>(&self, tree: &str) -> sled::Result<Records<T>>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let change: Option<fn(String) -> Change> = match tree {
            USERS_TREE => Some(Change::User),
            SESSIONS_TREE => Some(Change::Session),
            ROUTES_TREE => Some(Change::Route),
            _ => None,
        };
        Ok(match (&self.shared, change) {
            (Some(shared), Some(change)) => Records::shared(shared, tree, change),
            _ => Records::new(self.db.open_tree(tree)?),
        })
    }

    /// The underlying database, for the storage modules that own its trees.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// What an operator should know about a latched storage failure.
pub fn advice(failure: &str) -> String {
    format!(
        "the database refused a write ({failure}); it cannot recover while open: \
         free space or fix the disk, then restart the gateway"
    )
}

enum SchemaError {
    Newer(u32),
    Database(sled::Error),
}

/// Refuses a database a newer release wrote (its records may mean something
/// this release would misread, or overwrite), and records this release's
/// version on a new or older one, durably, before anything else is written.
fn stamp_schema(db: &sled::Db) -> Result<(), SchemaError> {
    let stored = db.get(SCHEMA_KEY).map_err(SchemaError::Database)?;
    let found = stored.map(|bytes| {
        // Unreadable: written by something that is not this format at all.
        <[u8; 4]>::try_from(bytes.as_ref()).map_or(u32::MAX, u32::from_be_bytes)
    });
    match found {
        Some(found) if found > SCHEMA_VERSION => Err(SchemaError::Newer(found)),
        Some(found) if found == SCHEMA_VERSION => Ok(()),
        _ => db
            .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
            .and_then(|_| db.flush())
            .map(|_| ())
            .map_err(SchemaError::Database),
    }
}

fn classify(path: &Path, err: sled::Error) -> StorageError {
    let path = path.display().to_string();
    match err {
        sled::Error::Io(io) if io.kind() == io::ErrorKind::StorageFull => StorageError::Open {
            path,
            source: io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on the device: opening the database needs about 1 MiB free",
            ),
        },
        sled::Error::Io(io)
            if io.kind() == io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
        {
            StorageError::Locked { path }
        }
        sled::Error::Io(source) => StorageError::Open { path, source },
        source => StorageError::Database { path, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_version(config: &StorageConfig) -> Vec<u8> {
        let db = sled::open(&config.path).unwrap();
        db.get(SCHEMA_KEY).unwrap().unwrap().to_vec()
    }

    #[test]
    fn a_new_database_records_its_schema_version_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::for_tests(dir.path());
        drop(Storage::open(&config).unwrap());
        assert_eq!(stored_version(&config), SCHEMA_VERSION.to_be_bytes());
        drop(Storage::open(&config).unwrap());
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::for_tests(dir.path());
        drop(Storage::open(&config).unwrap());
        let newer = (SCHEMA_VERSION + 1).to_be_bytes();
        {
            let db = sled::open(&config.path).unwrap();
            db.insert(SCHEMA_KEY, &newer).unwrap();
            db.flush().unwrap();
        }
        let err = Storage::open(&config).err().expect("refused");
        assert!(
            matches!(err, StorageError::Newer { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err}"
        );
        assert!(err.to_string().contains("newer Portcullis"), "{err}");
        assert_eq!(stored_version(&config), newer);
    }

    #[test]
    fn a_database_from_before_schema_versions_is_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::for_tests(dir.path());
        drop(sled::open(&config.path).unwrap());
        drop(Storage::open(&config).unwrap());
        assert_eq!(stored_version(&config), SCHEMA_VERSION.to_be_bytes());
    }
}
