//! Users and sessions as stored in sled: one tree each, JSON values carrying
//! a schema version so later releases can migrate them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The schema version written with every record.
pub const SCHEMA_VERSION: u32 = 1;

pub const USERS_TREE: &str = "users";
pub const SESSIONS_TREE: &str = "sessions";
/// Sessions of the admin console, apart from the gateway's own.
pub const CONSOLE_SESSIONS_TREE: &str = "console_sessions";
/// Routes made through the admin API.
pub const ROUTES_TREE: &str = "routes";

/// A route made through the admin API: the spec as the admin sent it (it is
/// validated again against every configuration it is served under).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteRecord {
    pub v: u32,
    pub id: String,
    pub spec: serde_json::Value,
    pub created_at: u64,
    pub updated_at: u64,
    /// Who made the last change.
    pub updated_by: String,
}

/// A user account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub v: u32,
    pub username: String,
    /// An argon2id PHC string; never the password.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub disabled: bool,
    pub created_at: u64,
    pub updated_at: u64,
    /// Bumped by every change to the account; sessions issued before it end.
    #[serde(default)]
    pub generation: u64,
    /// Set on the first admin created at first start, whose password was
    /// written to a file: the console asks for a new one before anything else.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_change_password: bool,
}

/// A session. Only hashes of its tokens are stored, so a copy of the
/// database yields no usable cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    pub v: u32,
    pub id: String,
    pub user: String,
    /// The user's `generation` when the session was issued.
    #[serde(default)]
    pub user_generation: u64,
    /// Hex SHA-256 of the current token.
    pub token_hash: String,
    /// Hex SHA-256 of the token replaced by the last rotation, accepted until
    /// `previous_valid_until`.
    pub previous_token_hash: Option<String>,
    pub previous_valid_until: u64,
    /// Hex SHA-256 of tokens rotated out before the previous one, newest
    /// first: presenting one of them revokes the session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_token_hashes: Vec<String>,
    pub created_at: u64,
    pub token_issued_at: u64,
    pub last_seen: u64,
    /// The absolute end of the session, whatever its activity.
    pub expires_at: u64,
    pub revoked_at: Option<u64>,
    /// Where the session was issued from: the client address and user
    /// agent of the login (or of the admin who issued it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// A typed view of one sled tree holding JSON records keyed by name or id.
#[derive(Clone)]
pub struct Records<T> {
    tree: sled::Tree,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Records<T> {
    pub(super) fn new(tree: sled::Tree) -> Self {
        Records {
            tree,
            _type: std::marker::PhantomData,
        }
    }

    pub fn get(&self, key: &str) -> sled::Result<Option<T>> {
        Ok(self
            .tree
            .get(key.as_bytes())?
            .and_then(|bytes| decode(&bytes)))
    }

    pub fn put(&self, key: &str, record: &T) -> sled::Result<()> {
        let bytes =
            serde_json::to_vec(record).map_err(|e| sled::Error::Unsupported(e.to_string()))?;
        self.tree.insert(key.as_bytes(), bytes)?;
        Ok(())
    }

    /// Removes a record; true when it existed.
    pub fn delete(&self, key: &str) -> sled::Result<bool> {
        Ok(self.tree.remove(key.as_bytes())?.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Every readable record. Unreadable ones (from a newer schema) are skipped.
    pub fn all(&self) -> sled::Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (_, bytes) = item?;
            out.extend(decode(&bytes));
        }
        Ok(out)
    }

    /// Every readable record, one at a time.
    pub fn iter(&self) -> impl Iterator<Item = sled::Result<T>> + '_ {
        self.tree
            .iter()
            .filter_map(|item| item.map(|(_, bytes)| decode(&bytes)).transpose())
    }

    /// Applies several removals at once.
    pub fn delete_many<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.as_bytes());
        }
        self.tree.apply_batch(batch)
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}
