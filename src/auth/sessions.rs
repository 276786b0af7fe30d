//! Sessions: every one stored in sled, the most recently active also held
//! in memory.
//!
//! sled holds the records (by id), a token index (the hash of a current or
//! still-in-grace token → session id) and a user index (`user \0 id`).
//! Memory holds at most `capacity` sessions, so a validation is usually a
//! hash and a map lookup, at worst two sled reads, and memory stays bounded
//! however many sessions are stored.
//!
//! Every change to a stored session (rotation, revocation, written-behind
//! activity, sweeping) is a read-modify-write of its record under one lock,
//! so none can undo another. A session loaded into memory races with those
//! changes only through `epoch`, which each of them bumps between writing
//! sled and updating memory: a load that saw the epoch move reads again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::rfc3339;
use super::token::{self, TokenHash};
use crate::storage::{now_ms, Records, SessionRecord, Storage, SCHEMA_VERSION};

/// A session. Token hashes never change in place: a rotation replaces the
/// whole `Session`, so readers always see a consistent pair.
#[derive(Debug)]
pub struct Session {
    pub id: Arc<str>,
    pub user: Arc<str>,
    token_hash: TokenHash,
    previous: Option<(TokenHash, u64)>,
    pub created_at: u64,
    token_issued_at: u64,
    pub expires_at: u64,
    last_seen: AtomicU64,
    persisted_last_seen: AtomicU64,
    /// 0 while live.
    revoked_at: AtomicU64,
}

impl Session {
    /// A fresh session for `user`, valid for `lifetime`.
    pub(super) fn new(user: Arc<str>, token_hash: TokenHash, lifetime: Duration) -> Session {
        let now = now_ms();
        Session {
            id: token::new_session_id().into(),
            user,
            token_hash,
            previous: None,
            created_at: now,
            token_issued_at: now,
            expires_at: now + lifetime.as_millis() as u64,
            last_seen: AtomicU64::new(now),
            persisted_last_seen: AtomicU64::new(now),
            revoked_at: AtomicU64::new(0),
        }
    }

    fn from_record(r: &SessionRecord) -> Option<Session> {
        Some(Session {
            id: r.id.as_str().into(),
            user: r.user.as_str().into(),
            token_hash: token::from_hex(&r.token_hash)?,
            previous: r
                .previous_token_hash
                .as_deref()
                .and_then(token::from_hex)
                .map(|h| (h, r.previous_valid_until)),
            created_at: r.created_at,
            token_issued_at: r.token_issued_at,
            expires_at: r.expires_at,
            last_seen: AtomicU64::new(r.last_seen),
            persisted_last_seen: AtomicU64::new(r.last_seen),
            revoked_at: AtomicU64::new(r.revoked_at.unwrap_or(0)),
        })
    }

    fn to_record(&self) -> SessionRecord {
        SessionRecord {
            v: SCHEMA_VERSION,
            id: self.id.to_string(),
            user: self.user.to_string(),
            token_hash: token::to_hex(&self.token_hash),
            previous_token_hash: self.previous.map(|(h, _)| token::to_hex(&h)),
            previous_valid_until: self.previous.map_or(0, |(_, until)| until),
            created_at: self.created_at,
            token_issued_at: self.token_issued_at,
            last_seen: self.last_seen(),
            expires_at: self.expires_at,
            revoked_at: self.revoked_at(),
        }
    }

    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    pub fn revoked_at(&self) -> Option<u64> {
        Some(self.revoked_at.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// When the session ends if it sees no more activity.
    pub fn idle_expires_at(&self, idle: Duration) -> u64 {
        self.last_seen() + idle.as_millis() as u64
    }

    pub(super) fn is_expired(&self, now: u64, idle: Duration) -> bool {
        now >= self.expires_at || now >= self.idle_expires_at(idle)
    }

    /// Whether `hash` is this session's current token.
    pub(super) fn is_current(&self, hash: &TokenHash) -> bool {
        token::same_hash(&self.token_hash, hash)
    }

    /// Until when `hash` is accepted as the token replaced by the last
    /// rotation, if it is that token.
    pub(super) fn previous_valid_until(&self, hash: &TokenHash) -> Option<u64> {
        self.previous
            .filter(|(previous, _)| token::same_hash(previous, hash))
            .map(|(_, until)| until)
    }

    /// Whether the current token is older than `rotate_after`.
    pub(super) fn rotation_due(&self, now: u64, rotate_after: Duration) -> bool {
        now.saturating_sub(self.token_issued_at) >= rotate_after.as_millis() as u64
    }

    /// The public view: never a token or its hash.
    pub fn summary(&self, idle: Duration) -> serde_json::Value {
        serde_json::json!({
            "id": &*self.id,
            "user": &*self.user,
            "created_at": rfc3339(self.created_at),
            "last_seen": rfc3339(self.last_seen()),
            "idle_expires_at": rfc3339(self.idle_expires_at(idle).min(self.expires_at)),
            "expires_at": rfc3339(self.expires_at),
            "revoked": self.revoked_at().is_some(),
        })
    }
}

/// The sessions held in memory, by id and by token hash.
struct Cache {
    by_id: HashMap<Arc<str>, Arc<Session>>,
    /// Current and still-in-grace previous token hashes.
    by_token: HashMap<TokenHash, Arc<Session>>,
    capacity: usize,
}

impl Cache {
    fn insert(&mut self, session: Arc<Session>) {
        if self.by_id.len() >= self.capacity && !self.by_id.contains_key(&session.id) {
            self.evict();
        }
        if let Some(old) = self.by_id.insert(session.id.clone(), session.clone()) {
            self.forget_tokens(&old);
        }
        self.by_token.insert(session.token_hash, session.clone());
        if let Some((previous, _)) = session.previous {
            self.by_token.insert(previous, session);
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(session) = self.by_id.remove(id) {
            self.forget_tokens(&session);
        }
    }

    fn forget_tokens(&mut self, session: &Session) {
        self.by_token.remove(&session.token_hash);
        if let Some((previous, _)) = session.previous {
            self.by_token.remove(&previous);
        }
    }

    /// Drops the least recently seen eighth at once, so the scan is paid
    /// once per `capacity / 8` insertions. Activity not yet written stays
    /// queued for write-behind, which holds its own reference.
    fn evict(&mut self) {
        let mut by_age: Vec<(u64, Arc<str>)> = self
            .by_id
            .values()
            .map(|s| (s.last_seen(), s.id.clone()))
            .collect();
        let count = (self.capacity / 8).clamp(1, by_age.len());
        by_age.select_nth_unstable_by_key(count - 1, |(seen, _)| *seen);
        for (_, id) in &by_age[..count] {
            self.remove(id);
        }
    }
}

/// Every session in sled, the most recently active in memory.
pub(super) struct SessionStore {
    storage: Storage,
    records: Records<SessionRecord>,
    tokens: sled::Tree,
    by_user: sled::Tree,
    cache: RwLock<Cache>,
    /// Bumped by every change to stored sessions, after sled, before memory.
    epoch: AtomicU64,
    /// Serialises read-modify-writes of stored records.
    writes: Mutex<()>,
    /// Sessions whose `last_seen` moved past `touch_interval` since last written.
    dirty: Mutex<Vec<Arc<Session>>>,
    /// Live sessions as of the last sweep, plus issued, minus revoked since.
    live: AtomicI64,
}

impl SessionStore {
    /// Opens the session trees, building the indexes if an older release
    /// left records without them.
    pub fn open(storage: &Storage, capacity: usize) -> sled::Result<SessionStore> {
        let db = storage.db();
        let store = SessionStore {
            storage: storage.clone(),
            records: storage.sessions()?,
            tokens: db.open_tree("session_tokens")?,
            by_user: db.open_tree("session_users")?,
            cache: RwLock::new(Cache {
                by_id: HashMap::new(),
                by_token: HashMap::new(),
                capacity: capacity.max(1),
            }),
            epoch: AtomicU64::new(0),
            writes: Mutex::new(()),
            dirty: Mutex::new(Vec::new()),
            live: AtomicI64::new(0),
        };
        if store.tokens.is_empty() && !store.records.is_empty() {
            for record in store.records.iter() {
                let record = record?;
                if let Some(session) = Session::from_record(&record) {
                    store.index(&session)?;
                }
            }
        }
        Ok(store)
    }

    /// The session a token hash belongs to: from memory, or from sled (and
    /// then kept in memory).
    pub fn find(&self, hash: &TokenHash) -> sled::Result<Option<Arc<Session>>> {
        if let Some(session) = self.read_cache().by_token.get(hash) {
            return Ok(Some(session.clone()));
        }
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            let Some(id) = self.tokens.get(hash)? else {
                return Ok(None);
            };
            let Some(record) = self.records.get(&String::from_utf8_lossy(&id))? else {
                return Ok(None);
            };
            let Some(session) = Session::from_record(&record) else {
                return Ok(None);
            };
            let mut cache = self.write_cache();
            if self.epoch.load(Ordering::Acquire) != epoch {
                continue; // changed while we read: read again
            }
            if let Some(cached) = cache.by_id.get(&session.id) {
                // Loaded meanwhile by another request: share that one.
                return Ok(Some(cached.clone()));
            }
            let session = Arc::new(session);
            cache.insert(session.clone());
            return Ok(Some(session));
        }
    }

    /// A session by id, from memory or sled.
    pub fn get(&self, id: &str) -> sled::Result<Option<Arc<Session>>> {
        if let Some(session) = self.read_cache().by_id.get(id) {
            return Ok(Some(session.clone()));
        }
        Ok(self
            .records
            .get(id)?
            .and_then(|r| Session::from_record(&r))
            .map(Arc::new))
    }

    /// Stores a new session, durably, and holds it in memory.
    pub async fn create(&self, session: Session) -> sled::Result<Arc<Session>> {
        let session = Arc::new(session);
        {
            // Under the lock, so a concurrent revocation of the user's
            // sessions either finds this one or comes after it.
            let _writing = self.lock_writes();
            self.records.put(&session.id, &session.to_record())?;
            self.index(&session)?;
            self.write_cache().insert(session.clone());
        }
        // Durable before the client gets the token.
        self.storage.flush_async().await?;
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(session)
    }

    /// Replaces the session's token; the old one stays valid until
    /// `now + grace`. `None` when the stored session has moved on (another
    /// request rotated it first, or it was revoked or swept).
    pub async fn rotate(
        &self,
        session: &Session,
        now: u64,
        grace: Duration,
    ) -> sled::Result<Option<(Arc<Session>, String)>> {
        let token = token::new_token();
        let Some(hash) = token::hash_token(&token) else {
            return Ok(None);
        };
        let rotated = Arc::new(Session {
            id: session.id.clone(),
            user: session.user.clone(),
            token_hash: hash,
            previous: Some((session.token_hash, now + grace.as_millis() as u64)),
            created_at: session.created_at,
            token_issued_at: now,
            expires_at: session.expires_at,
            last_seen: AtomicU64::new(session.last_seen()),
            persisted_last_seen: AtomicU64::new(session.last_seen()),
            revoked_at: AtomicU64::new(0),
        });
        {
            let _writing = self.lock_writes();
            let Some(stored) = self.records.get(&session.id)? else {
                return Ok(None);
            };
            if stored.revoked_at.is_some()
                || stored.token_hash != token::to_hex(&session.token_hash)
            {
                return Ok(None);
            }
            if let Some(older) = stored
                .previous_token_hash
                .as_deref()
                .and_then(token::from_hex)
            {
                self.tokens.remove(older)?;
            }
            self.tokens.insert(hash, rotated.id.as_bytes())?;
            self.records.put(&rotated.id, &rotated.to_record())?;
            self.epoch.fetch_add(1, Ordering::Release);
            self.write_cache().insert(rotated.clone());
        }
        // Durable before the client sees it: a crash must not leave the
        // client holding a token nobody knows.
        self.storage.flush_async().await?;
        Ok(Some((rotated, token)))
    }

    /// The ids of a user's stored sessions.
    pub fn ids_of(&self, user: &str) -> sled::Result<Vec<String>> {
        self.by_user
            .scan_prefix(user_prefix(user))
            .keys()
            .map(|key| key.map(|k| String::from_utf8_lossy(&k[user.len() + 1..]).into_owned()))
            .collect()
    }

    /// Marks sessions revoked, durably; returns how many were live.
    pub async fn revoke(&self, ids: &[String]) -> sled::Result<usize> {
        let now = now_ms();
        let mut revoked = Vec::new();
        {
            let _writing = self.lock_writes();
            for id in ids {
                if let Some(mut record) = self.records.get(id)? {
                    if record.revoked_at.is_none() {
                        record.revoked_at = Some(now);
                        self.records.put(id, &record)?;
                        revoked.push(id);
                    }
                }
            }
            self.epoch.fetch_add(1, Ordering::Release);
            let cache = self.read_cache();
            for id in &revoked {
                if let Some(session) = cache.by_id.get(id.as_str()) {
                    session.revoked_at.store(now, Ordering::Relaxed);
                }
            }
        }
        self.storage.flush_async().await?;
        self.live.fetch_sub(revoked.len() as i64, Ordering::Relaxed);
        Ok(revoked.len())
    }

    /// Every stored session, optionally only one user's, oldest first.
    pub fn list(&self, user: Option<&str>) -> sled::Result<Vec<Arc<Session>>> {
        let mut list = Vec::new();
        match user {
            Some(user) => {
                for id in self.ids_of(user)? {
                    list.extend(self.get(&id)?);
                }
            }
            None => {
                let cache = self.read_cache();
                for record in self.records.iter() {
                    let record = record?;
                    // Memory has the freshest activity.
                    match cache.by_id.get(record.id.as_str()) {
                        Some(cached) => list.push(cached.clone()),
                        None => list.extend(Session::from_record(&record).map(Arc::new)),
                    }
                }
            }
        }
        list.sort_by_key(|s| s.created_at);
        Ok(list)
    }

    /// Notes activity; queues the session for write-behind once its stored
    /// `last_seen` is `interval` old.
    pub fn touch(&self, session: &Arc<Session>, now: u64, interval: Duration) {
        session.last_seen.fetch_max(now, Ordering::Relaxed);
        let persisted = session.persisted_last_seen.load(Ordering::Relaxed);
        if now.saturating_sub(persisted) >= interval.as_millis() as u64
            && session
                .persisted_last_seen
                .compare_exchange(persisted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if let Ok(mut dirty) = self.dirty.lock() {
                dirty.push(session.clone());
            }
        }
    }

    /// Writes behind the `last_seen` of sessions active since their last
    /// write: those queued by `touch`, or with `everything` (at shutdown)
    /// every session in memory with unwritten activity.
    pub fn persist_activity(&self, everything: bool) -> sled::Result<()> {
        let mut pending = self
            .dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        if everything {
            pending.extend(
                self.read_cache()
                    .by_id
                    .values()
                    .filter(|s| s.last_seen() > s.persisted_last_seen.load(Ordering::Relaxed))
                    .cloned(),
            );
        }
        for chunk in pending.chunks(256) {
            let _writing = self.lock_writes();
            for session in chunk {
                session
                    .persisted_last_seen
                    .fetch_max(session.last_seen(), Ordering::Relaxed);
                // A rotated, revoked-and-swept or deleted session has moved on.
                let Some(mut record) = self.records.get(&session.id)? else {
                    continue;
                };
                if record.token_hash == token::to_hex(&session.token_hash)
                    && record.last_seen < session.last_seen()
                {
                    record.last_seen = session.last_seen();
                    self.records.put(&session.id, &record)?;
                }
            }
        }
        Ok(())
    }

    /// Removes expired sessions from storage and memory, and recounts the
    /// live ones. Reads every record, so it runs off the request path.
    pub fn sweep(&self, idle: Duration) -> sled::Result<()> {
        let now = now_ms();
        let expired = self.count_live(now, idle)?;
        for chunk in expired.chunks(1024) {
            let _writing = self.lock_writes();
            let mut gone = Vec::new();
            for id in chunk {
                // Checked again under the lock with the freshest activity.
                let Some(stored) = self.records.get(id)?.and_then(|r| Session::from_record(&r))
                else {
                    continue;
                };
                let cached = self.read_cache().by_id.get(id.as_str()).cloned();
                if cached.is_some_and(|c| !c.is_expired(now, idle)) {
                    continue;
                }
                if stored.is_expired(now, idle) {
                    self.unindex(&stored)?;
                    self.records.delete(id)?;
                    gone.push(id);
                }
            }
            self.epoch.fetch_add(1, Ordering::Release);
            let mut cache = self.write_cache();
            for id in gone {
                cache.remove(id);
            }
        }
        Ok(())
    }

    /// Live sessions: as of the last sweep, plus logins and minus
    /// revocations since.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed).max(0) as usize
    }

    /// Counts live sessions into `live`; returns the ids of expired ones.
    fn count_live(&self, now: u64, idle: Duration) -> sled::Result<Vec<String>> {
        let mut live = 0;
        let mut expired = Vec::new();
        for record in self.records.iter() {
            let record = record?;
            let last_seen = self
                .read_cache()
                .by_id
                .get(record.id.as_str())
                .map_or(record.last_seen, |s| s.last_seen());
            let idle_end = last_seen.saturating_add(idle.as_millis().min(u64::MAX as u128) as u64);
            if now >= record.expires_at || now >= idle_end {
                expired.push(record.id);
            } else if record.revoked_at.is_none() {
                live += 1;
            }
        }
        self.live.store(live, Ordering::Relaxed);
        Ok(expired)
    }

    fn index(&self, session: &Session) -> sled::Result<()> {
        self.tokens
            .insert(session.token_hash, session.id.as_bytes())?;
        if let Some((previous, _)) = session.previous {
            self.tokens.insert(previous, session.id.as_bytes())?;
        }
        let mut key = user_prefix(&session.user);
        key.extend_from_slice(session.id.as_bytes());
        self.by_user.insert(key, &[])?;
        Ok(())
    }

    fn unindex(&self, session: &Session) -> sled::Result<()> {
        self.tokens.remove(session.token_hash)?;
        if let Some((previous, _)) = session.previous {
            self.tokens.remove(previous)?;
        }
        let mut key = user_prefix(&session.user);
        key.extend_from_slice(session.id.as_bytes());
        self.by_user.remove(key)?;
        Ok(())
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `user \0`: usernames cannot contain NUL, so one user's keys never run
/// into another's.
fn user_prefix(user: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user.len() + 33);
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;

    fn open(dir: &std::path::Path, capacity: usize) -> (Storage, SessionStore) {
        let storage = Storage::open(&StorageConfig {
            path: dir.join("data"),
            cache_capacity: 1 << 20,
            session_cache: capacity,
            flush_interval: Duration::from_millis(500),
            sweep_interval: Duration::from_secs(60),
        })
        .unwrap();
        let store = SessionStore::open(&storage, capacity).unwrap();
        (storage, store)
    }

    async fn issue(
        store: &SessionStore,
        user: &str,
        lifetime: Duration,
    ) -> (Arc<Session>, TokenHash) {
        let hash = token::hash_token(&token::new_token()).unwrap();
        let session = store
            .create(Session::new(user.into(), hash, lifetime))
            .await
            .unwrap();
        (session, hash)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[actix_web::test]
    async fn memory_is_bounded_and_misses_read_storage() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, store) = open(dir.path(), 16);
        let mut issued = Vec::new();
        for _ in 0..100 {
            issued.push(issue(&store, "alice", HOUR).await);
        }
        assert!(store.read_cache().by_id.len() <= 16);
        for (session, hash) in &issued {
            let found = store.find(hash).unwrap().expect("found in storage");
            assert_eq!(found.id, session.id);
            assert!(store.read_cache().by_id.len() <= 16);
        }
        let unknown = token::hash_token(&token::new_token()).unwrap();
        assert!(store.find(&unknown).unwrap().is_none());
        assert_eq!(store.ids_of("alice").unwrap().len(), 100);
        assert_eq!(store.list(None).unwrap().len(), 100);
    }

    #[actix_web::test]
    async fn changes_to_sessions_out_of_memory_stick() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, store) = open(dir.path(), 1);
        let (revoked, revoked_hash) = issue(&store, "alice", HOUR).await;
        let (rotated, old_hash) = issue(&store, "bob", HOUR).await;
        // `rotated` is the one in memory; revoke the other from storage.
        assert_eq!(store.revoke(&[revoked.id.to_string()]).await.unwrap(), 1);
        assert_eq!(store.revoke(&[revoked.id.to_string()]).await.unwrap(), 0);
        assert!(store
            .find(&revoked_hash)
            .unwrap()
            .unwrap()
            .revoked_at()
            .is_some());

        // Rotating a stale copy after eviction is refused; the fresh one rotates.
        let now = now_ms();
        let (fresh, token) = store
            .rotate(&rotated, now, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("rotated");
        assert!(store.rotate(&rotated, now, HOUR).await.unwrap().is_none());
        store.find(&revoked_hash).unwrap(); // evicts the rotated session
        let new_hash = token::hash_token(&token).unwrap();
        let loaded = store.find(&new_hash).unwrap().expect("new token indexed");
        assert_eq!(loaded.id, fresh.id);
        assert!(loaded.is_current(&new_hash));
        assert!(loaded.previous_valid_until(&old_hash).is_some());

        // Activity written behind for an evicted session lands on its record.
        store.touch(&loaded, now + 60_000, Duration::ZERO);
        store.find(&revoked_hash).unwrap();
        store.persist_activity(false).unwrap();
        assert_eq!(
            store.get(&fresh.id).unwrap().unwrap().last_seen(),
            now + 60_000
        );
        // ...but never onto a record that has moved on.
        store.touch(&rotated, now + 120_000, Duration::ZERO);
        store.persist_activity(false).unwrap();
        assert_eq!(
            store.get(&fresh.id).unwrap().unwrap().last_seen(),
            now + 60_000
        );
    }

    #[actix_web::test]
    async fn sweeping_removes_expired_sessions_and_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, store) = open(dir.path(), 1);
        let (expired, expired_hash) = issue(&store, "alice", Duration::ZERO).await;
        let (_, live_hash) = issue(&store, "alice", HOUR).await;
        store.sweep(HOUR).unwrap();
        assert_eq!(store.live(), 1);
        assert!(store.find(&expired_hash).unwrap().is_none());
        assert!(store.get(&expired.id).unwrap().is_none());
        assert_eq!(store.ids_of("alice").unwrap().len(), 1);
        assert!(store.find(&live_hash).unwrap().is_some());
    }

    #[actix_web::test]
    async fn indexes_are_built_for_records_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let hash = {
            let (storage, store) = open(dir.path(), 4);
            let (_, hash) = issue(&store, "alice", HOUR).await;
            // As an older release left it: records only.
            storage.db().drop_tree("session_tokens").unwrap();
            storage.db().drop_tree("session_users").unwrap();
            storage.flush().unwrap();
            hash
        };
        let (_storage, store) = open(dir.path(), 4);
        assert!(store.find(&hash).unwrap().is_some());
        assert_eq!(store.ids_of("alice").unwrap().len(), 1);
    }
}
