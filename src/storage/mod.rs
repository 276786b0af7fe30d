//! The embedded sled database that holds Portcullis' state.
//!
//! sled writes to its log in memory and persists it every
//! `storage.flush_interval`; callers that need a write to be durable before
//! answering (logouts, revocations) call [`Storage::flush`].

mod records;

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub use records::{Records, SessionRecord, UserRecord, SCHEMA_VERSION};

use crate::config::StorageConfig;

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
}

/// The open database.
#[derive(Clone)]
pub struct Storage {
    db: sled::Db,
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
        Ok(Storage { db })
    }

    /// A cheap read proving the database answers, for `/readyz`.
    pub fn is_healthy(&self) -> bool {
        self.db.get(b"\0health").is_ok()
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ())
    }

    /// Makes every write so far durable without blocking the async worker.
    pub async fn flush_async(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }

    /// User accounts, keyed by username.
    pub fn users(&self) -> sled::Result<Records<UserRecord>> {
        Ok(Records::new(self.db.open_tree(records::USERS_TREE)?))
    }

    /// Sessions, keyed by session id.
    pub fn sessions(&self) -> sled::Result<Records<SessionRecord>> {
        Ok(Records::new(self.db.open_tree(records::SESSIONS_TREE)?))
    }

    /// The underlying database, for the storage modules that own its trees.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

fn classify(path: &Path, err: sled::Error) -> StorageError {
    let path = path.display().to_string();
    match err {
        sled::Error::Io(io)
            if io.kind() == io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
        {
            StorageError::Locked { path }
        }
        sled::Error::Io(source) => StorageError::Open { path, source },
        source => StorageError::Database { path, source },
    }
}
