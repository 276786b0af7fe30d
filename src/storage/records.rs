//! Users and sessions as stored in sled: one tree each, JSON values carrying
//! a schema version so later releases can migrate them.

use std::sync::{Arc, LazyLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::shared::{Change, Shared};

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

/// A typed view of one kind of record: a sled tree, or, with
/// `storage.backend = "redis"`, a Redis hash shared by every node (whose
/// every write also goes on the change feed, in the same atomic step).
#[derive(Clone)]
pub struct Records<T> {
    place: Place,
    _type: std::marker::PhantomData<fn() -> T>,
}

#[derive(Clone)]
enum Place {
    Sled(sled::Tree),
    Redis(SharedHash),
}

/// A Redis hash of records, and how its changes are announced.
#[derive(Clone)]
struct SharedHash {
    shared: Shared,
    hash: Arc<str>,
    change: fn(String) -> Change,
}

/// What [`Records::update`] does with the record it read.
pub enum Update<T> {
    Keep,
    Put(T),
    Delete,
}

/// Changes a record only if it still holds what was read (the empty
/// string standing for none), and announces the change on the feed.
static COMPARE_AND_SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local held = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if held ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'c', ARGV[4], 'n', ARGV[6])
return 1
",
    )
});

/// Records read per `HSCAN` step: each step is one bounded call.
const SCAN_STEP: usize = 512;

impl<T: Serialize + DeserializeOwned> Records<T> {
    pub(super) fn new(tree: sled::Tree) -> Self {
        Records {
            place: Place::Sled(tree),
            _type: std::marker::PhantomData,
        }
    }

    pub(super) fn shared(shared: &Shared, kind: &str, change: fn(String) -> Change) -> Self {
        Records {
            place: Place::Redis(SharedHash {
                shared: shared.clone(),
                hash: shared.keys().records(kind).into(),
                change,
            }),
            _type: std::marker::PhantomData,
        }
    }

    pub fn get(&self, key: &str) -> sled::Result<Option<T>> {
        Ok(self.get_raw(key)?.and_then(|bytes| decode(&bytes)))
    }

    fn get_raw(&self, key: &str) -> sled::Result<Option<Vec<u8>>> {
        match &self.place {
            Place::Sled(tree) => Ok(tree.get(key.as_bytes())?.map(|bytes| bytes.to_vec())),
            Place::Redis(hash) => {
                let (name, key) = (hash.hash.clone(), key.to_owned());
                Ok(hash
                    .shared
                    .call_blocking("record", move |mut conn| async move {
                        redis::cmd("HGET")
                            .arg(&*name)
                            .arg(key)
                            .query_async::<Option<Vec<u8>>>(&mut conn)
                            .await
                    })?)
            }
        }
    }

    pub fn put(&self, key: &str, record: &T) -> sled::Result<()> {
        let bytes = encode(record)?;
        match &self.place {
            Place::Sled(tree) => {
                tree.insert(key.as_bytes(), bytes)?;
            }
            Place::Redis(hash) => {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("HSET")
                    .arg(&*hash.hash)
                    .arg(key)
                    .arg(bytes)
                    .ignore();
                hash.announce(&mut pipe, key);
                hash.run(pipe)?;
            }
        }
        Ok(())
    }

    /// Removes a record; true when it existed.
    pub fn delete(&self, key: &str) -> sled::Result<bool> {
        match &self.place {
            Place::Sled(tree) => Ok(tree.remove(key.as_bytes())?.is_some()),
            Place::Redis(_) => {
                let mut existed = false;
                self.update(key, |_| {
                    existed = true;
                    Update::Delete
                })?;
                Ok(existed)
            }
        }
    }

    /// Reads a record and writes what `change` makes of it, only if nobody
    /// changed it in between (else reads it again), so concurrent changes,
    /// on this node or another, never undo each other. Returns the record
    /// written, if any; a missing record is never created.
    pub fn update(
        &self,
        key: &str,
        mut change: impl FnMut(T) -> Update<T>,
    ) -> sled::Result<Option<T>> {
        loop {
            let Some(held) = self.get_raw(key)? else {
                return Ok(None);
            };
            let Some(record) = decode::<T>(&held) else {
                return Ok(None);
            };
            let (new, written) = match change(record) {
                Update::Keep => return Ok(None),
                Update::Put(record) => (Some(encode(&record)?), Some(record)),
                Update::Delete => (None, None),
            };
            if self.swap(key, Some(held), new)? {
                return Ok(written);
            }
        }
    }

    /// Stores a record only if there is none under `key` yet (on any
    /// node); false when there was one.
    pub fn create(&self, key: &str, record: &T) -> sled::Result<bool> {
        self.swap(key, None, Some(encode(record)?))
    }

    /// Replaces `held` (`None`: no record) with `new` (`None`: removes it)
    /// if it is still there.
    fn swap(&self, key: &str, held: Option<Vec<u8>>, new: Option<Vec<u8>>) -> sled::Result<bool> {
        match &self.place {
            Place::Sled(tree) => Ok(tree.compare_and_swap(key.as_bytes(), held, new)?.is_ok()),
            Place::Redis(hash) => {
                let name = hash.hash.clone();
                let feed = hash.shared.keys().changes().to_owned();
                let (key, change) = (key.to_owned(), hash.change_of(key));
                let (held, new) = (held.unwrap_or_default(), new.unwrap_or_default());
                let node = hash.shared.node().to_owned();
                Ok(hash
                    .shared
                    .call_blocking("record", move |mut conn| async move {
                        COMPARE_AND_SET
                            .key(&*name)
                            .key(feed)
                            .arg(key)
                            .arg(held)
                            .arg(new)
                            .arg(change)
                            .arg(crate::shared::feed::KEPT)
                            .arg(node)
                            .invoke_async::<bool>(&mut conn)
                            .await
                    })?)
            }
        }
    }

    /// Every readable record. Unreadable ones (from a newer schema) are skipped.
    pub fn all(&self) -> sled::Result<Vec<T>> {
        self.iter().collect()
    }

    /// Every readable record, one at a time.
    pub fn iter(&self) -> Box<dyn Iterator<Item = sled::Result<T>> + '_> {
        match &self.place {
            Place::Sled(tree) => Box::new(
                tree.iter()
                    .filter_map(|item| item.map(|(_, bytes)| decode(&bytes)).transpose()),
            ),
            Place::Redis(hash) => match hash.scan() {
                Ok(values) => Box::new(
                    values
                        .into_iter()
                        .filter_map(|bytes| decode(&bytes).map(Ok)),
                ),
                Err(err) => Box::new(std::iter::once(Err(err))),
            },
        }
    }

    /// Applies several removals at once.
    pub fn delete_many<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> sled::Result<()> {
        match &self.place {
            Place::Sled(tree) => {
                let mut batch = sled::Batch::default();
                for key in keys {
                    batch.remove(key.as_bytes());
                }
                tree.apply_batch(batch)
            }
            Place::Redis(hash) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for key in keys {
                    pipe.cmd("HDEL").arg(&*hash.hash).arg(key).ignore();
                    hash.announce(&mut pipe, key);
                }
                hash.run(pipe)
            }
        }
    }
}

impl SharedHash {
    fn change_of(&self, key: &str) -> String {
        (self.change)(key.to_owned()).encode()
    }

    fn announce(&self, pipe: &mut redis::Pipeline, key: &str) {
        self.shared.announce(pipe, &(self.change)(key.to_owned()));
    }

    fn run(&self, pipe: redis::Pipeline) -> sled::Result<()> {
        Ok(self
            .shared
            .call_blocking("record", move |mut conn| async move {
                pipe.query_async::<()>(&mut conn).await
            })?)
    }

    /// Every value of the hash, a bounded step at a time.
    fn scan(&self) -> sled::Result<Vec<Vec<u8>>> {
        let mut values = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0u64;
        loop {
            let name = self.hash.clone();
            let (next, page): (u64, Vec<Vec<u8>>) =
                self.shared
                    .call_blocking("scan", move |mut conn| async move {
                        redis::cmd("HSCAN")
                            .arg(&*name)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(SCAN_STEP)
                            .query_async(&mut conn)
                            .await
                    })?;
            // Field, value, field, value… A scan may return a field twice
            // (when the hash grows under it).
            let mut pairs = page.into_iter();
            while let (Some(field), Some(value)) = (pairs.next(), pairs.next()) {
                if seen.insert(field) {
                    values.push(value);
                }
            }
            if next == 0 {
                return Ok(values);
            }
            cursor = next;
        }
    }
}

fn encode<T: Serialize>(record: &T) -> sled::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| sled::Error::Unsupported(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}
