//! Sessions: every one stored in sled, the most recently active also held
//! in memory.
//!
//! A token carries its session's id, so a validation is a hash and a map
//! lookup, or one sled read for a session not in memory. Memory holds at
//! most `capacity` sessions, so it stays bounded however many are stored;
//! sled holds one record per session and no index (a user's sessions are
//! found by scanning, which only account changes do).
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
use crate::storage::{now_ms, Records, SessionRecord, Storage, Update, SCHEMA_VERSION};

/// How many tokens older than the previous one a session remembers, to
/// recognise them if they are ever presented again (a stolen token).
const RETIRED_KEPT: usize = 3;

/// Where a session was issued from, for admins to recognise it: the client
/// address and user agent of the login (or of the admin who issued it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The longest user agent kept with a session.
const USER_AGENT_KEPT: usize = 256;

impl Origin {
    /// An origin, with an overlong user agent cut at a character boundary.
    pub fn new(client_ip: Option<String>, user_agent: Option<&str>) -> Origin {
        let user_agent = user_agent.map(|ua| {
            let mut end = ua.len().min(USER_AGENT_KEPT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_owned()
        });
        Origin {
            client_ip,
            user_agent,
        }
    }
}

/// A session. Token hashes never change in place: a rotation replaces the
/// whole `Session`, so readers always see a consistent pair.
#[derive(Debug)]
pub struct Session {
    pub id: Arc<str>,
    pub user: Arc<str>,
    /// The user's generation when the session was issued: any later change
    /// to the account (password, roles, disabling) ends the session.
    pub user_generation: u64,
    token_hash: TokenHash,
    previous: Option<(TokenHash, u64)>,
    /// Tokens rotated out before `previous`, newest first; never valid again.
    retired: Box<[TokenHash]>,
    pub created_at: u64,
    token_issued_at: u64,
    pub expires_at: u64,
    pub origin: Arc<Origin>,
    last_seen: AtomicU64,
    persisted_last_seen: AtomicU64,
    /// 0 while live.
    revoked_at: AtomicU64,
}

impl Session {
    /// A fresh session for `user` (as of `user_generation`), valid for
    /// `lifetime`, and its token.
    pub(super) fn issue(
        user: Arc<str>,
        user_generation: u64,
        lifetime: Duration,
        origin: Origin,
    ) -> Option<(Session, String)> {
        let id = token::new_session_id();
        let (token, token_hash) = token::new_token(&id)?;
        let now = now_ms();
        let session = Session {
            id: id.into(),
            user,
            user_generation,
            token_hash,
            previous: None,
            retired: Box::new([]),
            created_at: now,
            token_issued_at: now,
            expires_at: now + lifetime.as_millis() as u64,
            origin: Arc::new(origin),
            last_seen: AtomicU64::new(now),
            persisted_last_seen: AtomicU64::new(now),
            revoked_at: AtomicU64::new(0),
        };
        Some((session, token))
    }

    fn from_record(r: &SessionRecord) -> Option<Session> {
        Some(Session {
            id: r.id.as_str().into(),
            user: r.user.as_str().into(),
            user_generation: r.user_generation,
            token_hash: token::from_hex(&r.token_hash)?,
            previous: r
                .previous_token_hash
                .as_deref()
                .and_then(token::from_hex)
                .map(|h| (h, r.previous_valid_until)),
            retired: r
                .retired_token_hashes
                .iter()
                .filter_map(|h| token::from_hex(h))
                .collect(),
            created_at: r.created_at,
            token_issued_at: r.token_issued_at,
            expires_at: r.expires_at,
            origin: Arc::new(Origin {
                client_ip: r.client_ip.clone(),
                user_agent: r.user_agent.clone(),
            }),
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
            user_generation: self.user_generation,
            token_hash: token::to_hex(&self.token_hash),
            previous_token_hash: self.previous.map(|(h, _)| token::to_hex(&h)),
            previous_valid_until: self.previous.map_or(0, |(_, until)| until),
            retired_token_hashes: self.retired.iter().map(|h| token::to_hex(h)).collect(),
            created_at: self.created_at,
            token_issued_at: self.token_issued_at,
            last_seen: self.last_seen(),
            expires_at: self.expires_at,
            revoked_at: self.revoked_at(),
            client_ip: self.origin.client_ip.clone(),
            user_agent: self.origin.user_agent.clone(),
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
        is_over(now, self.expires_at, self.last_seen(), idle)
    }

    /// Whether `record` still holds this session's token (no rotation since).
    fn holds_token_of(&self, record: &SessionRecord) -> bool {
        record.token_hash == token::to_hex(&self.token_hash)
    }

    /// Whether `hash` is this session's current token.
    pub(super) fn is_current(&self, hash: &TokenHash) -> bool {
        token::same_hash(&self.token_hash, hash)
    }

    /// What `hash` is to this session, if it is not its current token.
    pub(super) fn past_token(&self, hash: &TokenHash, now: u64) -> PastToken {
        match self.previous {
            Some((previous, until)) if token::same_hash(&previous, hash) => {
                if now <= until {
                    PastToken::InGrace
                } else {
                    PastToken::Reused
                }
            }
            _ if self.retired.iter().any(|old| token::same_hash(old, hash)) => PastToken::Reused,
            _ => PastToken::Unknown,
        }
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
            "client_ip": self.origin.client_ip,
            "user_agent": self.origin.user_agent,
        })
    }
}

/// A token presented for a session that is not its current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PastToken {
    /// Replaced by the last rotation, and still within its grace period.
    InGrace,
    /// Rotated out and past its grace: whoever presents it holds a copy of
    /// a token that should no longer exist.
    Reused,
    /// Not a token this session ever had.
    Unknown,
}

/// Whether a session is over: past its absolute end, or idle too long.
fn is_over(now: u64, expires_at: u64, last_seen: u64, idle: Duration) -> bool {
    now >= expires_at || now >= last_seen + idle.as_millis() as u64
}

/// Reads of a session that another change overtook before it is held.
const LOAD_TRIES: usize = 3;

/// The sessions held in memory, by id.
struct Cache {
    by_id: HashMap<Arc<str>, Arc<Session>>,
    capacity: usize,
}

impl Cache {
    fn insert(&mut self, session: Arc<Session>) {
        if self.by_id.len() >= self.capacity && !self.by_id.contains_key(&session.id) {
            self.evict();
        }
        self.by_id.insert(session.id.clone(), session);
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
            self.by_id.remove(id);
        }
    }
}

/// A session read from sled, and the epoch it was read in.
struct Loaded {
    session: Session,
    epoch: u64,
}

/// Every session in sled, the most recently active in memory.
pub(super) struct SessionStore {
    storage: Storage,
    records: Records<SessionRecord>,
    cache: RwLock<Cache>,
    /// Bumped by every change to stored sessions, after sled, before memory.
    epoch: AtomicU64,
    /// Serialises read-modify-writes of stored records.
    writes: Mutex<()>,
    /// Sessions whose `last_seen` moved past `touch_interval` since last written.
    dirty: Mutex<Vec<Arc<Session>>>,
    /// Live sessions as of the last sweep, plus issued, minus revoked since.
    live: AtomicI64,
    /// Revocations in force in memory that could not be saved yet (id →
    /// when), applied to every copy read from sled until they are.
    unsaved: Mutex<HashMap<String, u64>>,
    /// Rotations whose write failed: the record before, and the token hash
    /// the client never received.
    unconfirmed: Mutex<Vec<(SessionRecord, TokenHash)>>,
}

impl SessionStore {
    /// Opens the sessions in `tree`.
    pub fn open(storage: &Storage, tree: &str, capacity: usize) -> sled::Result<SessionStore> {
        Ok(SessionStore {
            storage: storage.clone(),
            records: storage.sessions(tree)?,
            cache: RwLock::new(Cache {
                by_id: HashMap::new(),
                capacity: capacity.max(1),
            }),
            epoch: AtomicU64::new(0),
            writes: Mutex::new(()),
            dirty: Mutex::new(Vec::new()),
            live: AtomicI64::new(0),
            unsaved: Mutex::new(HashMap::new()),
            unconfirmed: Mutex::new(Vec::new()),
        })
    }

    /// The session with this id: from memory, or from sled (and then kept
    /// in memory).
    pub fn find(&self, id: &str) -> sled::Result<Option<Arc<Session>>> {
        if let Some(session) = self.read_cache().by_id.get(id) {
            return Ok(Some(session.clone()));
        }
        for _ in 0..LOAD_TRIES {
            let Some(loaded) = self.load(id)? else {
                return Ok(None);
            };
            if let Some(session) = self.admit(loaded) {
                return Ok(Some(session));
            }
            // Changed while we read: read again.
        }
        // Changes keep coming (a busy change feed): answer from a fresh
        // read, without holding it.
        Ok(self.load(id)?.map(|loaded| Arc::new(loaded.session)))
    }

    /// Reads a session from sled, noting the epoch it was read in.
    fn load(&self, id: &str) -> sled::Result<Option<Loaded>> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(session) = self.records.get(id)?.and_then(|r| Session::from_record(&r)) else {
            return Ok(None);
        };
        if let Some(&at) = self.lock_unsaved().get(id) {
            session.revoked_at.store(at, Ordering::Relaxed);
        }
        Ok(Some(Loaded { session, epoch }))
    }

    /// Holds a loaded session in memory, unless a change to stored sessions
    /// happened since it was read (`None`: read it again).
    fn admit(&self, loaded: Loaded) -> Option<Arc<Session>> {
        let mut cache = self.write_cache();
        if self.epoch.load(Ordering::Acquire) != loaded.epoch {
            return None;
        }
        // Another request may have loaded it meanwhile: share that one.
        let session = cache
            .by_id
            .entry(loaded.session.id.clone())
            .or_insert_with(|| Arc::new(loaded.session))
            .clone();
        if cache.by_id.len() > cache.capacity {
            cache.evict();
        }
        Some(session)
    }

    /// Stores a new session, durably, and holds it in memory.
    pub async fn create(&self, session: Session) -> sled::Result<Arc<Session>> {
        let session = Arc::new(session);
        {
            // Under the lock, so a concurrent revocation of the user's
            // sessions either finds this one or comes after it.
            let _writing = self.lock_writes();
            self.records.put(&session.id, &session.to_record())?;
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
        let Some((token, hash)) = token::new_token(&session.id) else {
            return Ok(None);
        };
        let retired = session
            .previous
            .map(|(hash, _)| hash)
            .into_iter()
            .chain(session.retired.iter().copied())
            .take(RETIRED_KEPT)
            .collect();
        let rotated = Arc::new(Session {
            id: session.id.clone(),
            user: session.user.clone(),
            user_generation: session.user_generation,
            token_hash: hash,
            previous: Some((session.token_hash, now + grace.as_millis() as u64)),
            retired,
            created_at: session.created_at,
            token_issued_at: now,
            expires_at: session.expires_at,
            origin: session.origin.clone(),
            last_seen: AtomicU64::new(session.last_seen()),
            persisted_last_seen: AtomicU64::new(session.last_seen()),
            revoked_at: AtomicU64::new(0),
        });
        {
            let _writing = self.lock_writes();
            let before = self.epoch.load(Ordering::Acquire);
            let written = self.records.update(&session.id, |stored| {
                if stored.revoked_at.is_some() || !session.holds_token_of(&stored) {
                    return Update::Keep;
                }
                let mut record = rotated.to_record();
                // Another node may have seen the session since.
                record.last_seen = record.last_seen.max(stored.last_seen);
                Update::Put(record)
            });
            let written = match written {
                Ok(written) => written,
                Err(err) => {
                    // The write may have landed with its answer lost (a
                    // timeout): the client never gets the new token, so the
                    // old one is put back once storage answers.
                    self.lock_unconfirmed()
                        .push((session.to_record(), rotated.token_hash));
                    self.forget(&session.id);
                    return Err(err);
                }
            };
            if written.is_none() {
                return Ok(None);
            }
            let mut cache = self.write_cache();
            if self.epoch.fetch_add(1, Ordering::AcqRel) == before {
                cache.insert(rotated.clone());
            } else {
                // Something changed meanwhile (another node may have revoked
                // the session): the next request reads it afresh.
                cache.by_id.remove(&*session.id);
            }
        }
        // Durable before the client sees it: a crash must not leave the
        // client holding a token nobody knows.
        self.storage.flush_async().await?;
        Ok(Some((rotated, token)))
    }

    /// The ids of a user's stored sessions (a scan of every record: only
    /// account changes need it).
    pub fn ids_of(&self, user: &str) -> sled::Result<Vec<String>> {
        self.records_of(Some(user))
            .map(|record| record.map(|r| r.id))
            .collect()
    }

    /// Every stored record, or one user's.
    fn records_of<'a>(
        &'a self,
        user: Option<&'a str>,
    ) -> impl Iterator<Item = sled::Result<SessionRecord>> + 'a {
        self.records.iter().filter(move |record| {
            record
                .as_ref()
                .map_or(true, |r| user.is_none_or(|u| u == r.user))
        })
    }

    /// A stored session as it stands: the copy in memory, which has the
    /// freshest activity, or else the record. (The cache is locked per
    /// record, never across a scan, which can be long.)
    fn freshest(&self, record: &SessionRecord) -> Option<Arc<Session>> {
        let cached = self.read_cache().by_id.get(record.id.as_str()).cloned();
        cached.or_else(|| Session::from_record(record).map(Arc::new))
    }

    /// Marks sessions revoked, durably; returns how many were live.
    ///
    /// The revocation holds in memory first, whatever happens to storage: if
    /// it cannot be saved, the sessions stay revoked on this gateway, the
    /// error says so, and [`SessionStore::save_unsaved`] tries again.
    pub async fn revoke(&self, ids: &[String]) -> sled::Result<usize> {
        let now = now_ms();
        let written = {
            let _writing = self.lock_writes();
            {
                let mut unsaved = self.lock_unsaved();
                for id in ids {
                    unsaved.entry(id.clone()).or_insert(now);
                }
            }
            self.epoch.fetch_add(1, Ordering::Release);
            let cache = self.read_cache();
            for id in ids {
                if let Some(session) = cache.by_id.get(id.as_str()) {
                    let _ = session.revoked_at.compare_exchange(
                        0,
                        now,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
            drop(cache);
            self.write_revocations(ids, now)
        };
        let live = written?;
        self.storage.flush_async().await?;
        let mut unsaved = self.lock_unsaved();
        for id in ids {
            unsaved.remove(id);
        }
        drop(unsaved);
        self.live.fetch_sub(live as i64, Ordering::Relaxed);
        Ok(live)
    }

    /// Marks the stored records of `ids` revoked at `at` (where not revoked
    /// yet); returns how many were live. Under the write lock.
    fn write_revocations(&self, ids: &[String], at: u64) -> sled::Result<usize> {
        let mut live = 0;
        for id in ids {
            let revoked = self.records.update(id, |mut record| {
                if record.revoked_at.is_some() {
                    return Update::Keep;
                }
                record.revoked_at = Some(at);
                Update::Put(record)
            })?;
            live += usize::from(revoked.is_some());
        }
        Ok(live)
    }

    /// Puts back the token of rotations whose write failed, where it landed
    /// after all; run by upkeep until storage answers.
    fn undo_unconfirmed(&self) -> sled::Result<()> {
        let waiting = std::mem::take(&mut *self.lock_unconfirmed());
        for (index, (before, lost)) in waiting.iter().enumerate() {
            let lost = token::to_hex(lost);
            let _writing = self.lock_writes();
            let undone = self.records.update(&before.id, |stored| {
                if stored.token_hash != lost {
                    return Update::Keep;
                }
                let mut back = before.clone();
                back.last_seen = back.last_seen.max(stored.last_seen);
                back.revoked_at = stored.revoked_at;
                Update::Put(back)
            });
            if let Err(err) = undone {
                self.lock_unconfirmed()
                    .extend(waiting[index..].iter().cloned());
                return Err(err);
            }
            // A copy read while the lost token stood must not outlive it.
            self.forget(&before.id);
        }
        Ok(())
    }

    /// Saves the revocations that storage refused earlier; run by upkeep.
    /// Returns how many are still waiting.
    pub fn save_unsaved(&self) -> sled::Result<usize> {
        self.undo_unconfirmed()?;
        let waiting: Vec<(String, u64)> = self
            .lock_unsaved()
            .iter()
            .map(|(id, at)| (id.clone(), *at))
            .collect();
        if waiting.is_empty() {
            return Ok(0);
        }
        {
            let _writing = self.lock_writes();
            for (id, at) in &waiting {
                let live = self.write_revocations(std::slice::from_ref(id), *at)?;
                self.live.fetch_sub(live as i64, Ordering::Relaxed);
            }
        }
        self.storage.flush()?;
        let mut unsaved = self.lock_unsaved();
        for (id, at) in waiting {
            if unsaved.get(&id) == Some(&at) {
                unsaved.remove(&id);
            }
        }
        Ok(unsaved.len())
    }

    /// Every stored session, optionally only one user's, oldest first.
    pub fn list(&self, user: Option<&str>) -> sled::Result<Vec<Arc<Session>>> {
        let mut list = Vec::new();
        for record in self.records_of(user) {
            list.extend(self.freshest(&record?));
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
        for session in &pending {
            // Locked per record: a slow store never holds up logins for a whole batch.
            let _writing = self.lock_writes();
            {
                session
                    .persisted_last_seen
                    .fetch_max(session.last_seen(), Ordering::Relaxed);
                // A rotated, revoked-and-swept or deleted session has moved on.
                self.records.update(&session.id, |mut record| {
                    if !session.holds_token_of(&record) || record.last_seen >= session.last_seen() {
                        return Update::Keep;
                    }
                    record.last_seen = session.last_seen();
                    Update::Put(record)
                })?;
            }
        }
        Ok(())
    }

    /// Removes expired sessions from storage and memory, and recounts the
    /// live ones. Reads every record, so it runs off the request path.
    pub fn sweep(&self, idle: Duration) -> sled::Result<()> {
        let now = now_ms();
        let expired = self.count_live(now, idle)?;
        for id in &expired {
            // Locked per record: a slow store never holds up logins for long.
            let _writing = self.lock_writes();
            // Checked again under the lock with the freshest activity.
            let mut gone = false;
            self.records.update(id, |record| {
                gone = self
                    .freshest(&record)
                    .is_none_or(|s| s.is_expired(now, idle));
                if gone {
                    Update::Delete
                } else {
                    Update::Keep
                }
            })?;
            if gone {
                self.forget(id);
            }
        }
        Ok(())
    }

    /// Drops a session from memory (another node changed it): the next
    /// request that presents it reads it again. Moving the epoch makes a
    /// load that read the old record before this read it again too.
    pub fn forget(&self, id: &str) {
        self.epoch.fetch_add(1, Ordering::Release);
        self.write_cache().by_id.remove(id);
    }

    /// Drops every session from memory (after the change feed was interrupted).
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
        self.write_cache().by_id.clear();
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
            if is_over(now, record.expires_at, last_seen, idle) {
                expired.push(record.id);
            } else if record.revoked_at.is_none() {
                live += 1;
            }
        }
        self.live.store(live, Ordering::Relaxed);
        Ok(expired)
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

    fn lock_unconfirmed(&self) -> std::sync::MutexGuard<'_, Vec<(SessionRecord, TokenHash)>> {
        self.unconfirmed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_unsaved(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.unsaved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;

    fn open(dir: &std::path::Path, capacity: usize) -> (Storage, SessionStore) {
        let storage = Storage::open(&StorageConfig::for_tests(dir)).unwrap();
        let store = SessionStore::open(&storage, "sessions", capacity).unwrap();
        (storage, store)
    }

    async fn issue(store: &SessionStore, user: &str, lifetime: Duration) -> (Arc<Session>, String) {
        let (session, token) = Session::issue(user.into(), 0, lifetime, Origin::default()).unwrap();
        (store.create(session).await.unwrap(), token)
    }

    /// What validation looks up: the session a token names, if its secret is current.
    fn lookup(store: &SessionStore, token: &str) -> Option<Arc<Session>> {
        let (id, hash) = token::parse(token).unwrap();
        store
            .find(id.as_str())
            .unwrap()
            .filter(|s| s.is_current(&hash))
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
        for (session, token) in &issued {
            let found = lookup(&store, token).expect("found in storage");
            assert_eq!(found.id, session.id);
            assert!(store.read_cache().by_id.len() <= 16);
        }
        assert!(store.find(&token::new_session_id()).unwrap().is_none());
        assert_eq!(store.ids_of("alice").unwrap().len(), 100);
        assert_eq!(store.list(None).unwrap().len(), 100);
        assert_eq!(store.list(Some("bob")).unwrap().len(), 0);
    }

    #[actix_web::test]
    async fn changes_to_sessions_out_of_memory_stick() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, store) = open(dir.path(), 1);
        let (revoked, revoked_token) = issue(&store, "alice", HOUR).await;
        let (rotated, old_token) = issue(&store, "bob", HOUR).await;
        // `rotated` is the one in memory; revoke the other from storage.
        assert_eq!(store.revoke(&[revoked.id.to_string()]).await.unwrap(), 1);
        assert_eq!(store.revoke(&[revoked.id.to_string()]).await.unwrap(), 0);
        let reloaded = lookup(&store, &revoked_token).unwrap();
        assert!(reloaded.revoked_at().is_some());

        // Rotating a stale copy after eviction is refused; the fresh one rotates.
        let now = now_ms();
        let (fresh, token) = store
            .rotate(&rotated, now, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("rotated");
        assert!(store.rotate(&rotated, now, HOUR).await.unwrap().is_none());
        lookup(&store, &revoked_token); // evicts the rotated session
        let loaded = lookup(&store, &token).expect("the new token is stored");
        assert_eq!(loaded.id, fresh.id);
        let (_, old_hash) = token::parse(&old_token).unwrap();
        assert_eq!(loaded.past_token(&old_hash, now), PastToken::InGrace);
        assert_eq!(loaded.past_token(&old_hash, now + 6_000), PastToken::Reused);

        // Activity written behind for an evicted session lands on its record.
        store.touch(&loaded, now + 60_000, Duration::ZERO);
        lookup(&store, &revoked_token);
        store.persist_activity(false).unwrap();
        let stored = || store.records.get(&fresh.id).unwrap().unwrap();
        assert_eq!(stored().last_seen, now + 60_000);
        // ...but never onto a record that has moved on.
        store.touch(&rotated, now + 120_000, Duration::ZERO);
        store.persist_activity(false).unwrap();
        assert_eq!(stored().last_seen, now + 60_000);
    }

    #[actix_web::test]
    async fn a_revocation_is_never_undone_by_a_concurrent_load() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, store) = open(dir.path(), 1);
        let (session, token) = issue(&store, "alice", HOUR).await;
        issue(&store, "bob", HOUR).await; // evicts alice's
                                          // A request reads alice's session from storage; before it is held
                                          // in memory, the session is revoked.
        let stale = store.load(&session.id).unwrap().unwrap();
        assert!(stale.session.revoked_at().is_none());
        assert_eq!(store.revoke(&[session.id.to_string()]).await.unwrap(), 1);
        assert!(
            store.admit(stale).is_none(),
            "a stale read must be read again"
        );
        assert!(lookup(&store, &token).unwrap().revoked_at().is_some());
    }

    #[actix_web::test]
    async fn sweeping_removes_expired_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, store) = open(dir.path(), 1);
        let (expired, expired_token) = issue(&store, "alice", Duration::ZERO).await;
        let (_, live_token) = issue(&store, "alice", HOUR).await;
        store.sweep(HOUR).unwrap();
        assert_eq!(store.live(), 1);
        assert!(lookup(&store, &expired_token).is_none());
        assert!(store.records.get(&expired.id).unwrap().is_none());
        assert_eq!(store.ids_of("alice").unwrap().len(), 1);
        assert!(lookup(&store, &live_token).is_some());
    }

    #[actix_web::test]
    async fn rotated_out_tokens_are_remembered_as_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, store) = open(dir.path(), 16);
        let (mut session, first) = issue(&store, "alice", HOUR).await;
        let mut tokens = vec![first];
        let now = now_ms();
        for _ in 0..5 {
            let (rotated, token) = store
                .rotate(&session, now, Duration::ZERO)
                .await
                .unwrap()
                .unwrap();
            session = rotated;
            tokens.push(token);
        }
        let hash = |token: &str| token::parse(token).unwrap().1;
        let (current, older) = tokens.split_last().unwrap();
        assert!(session.is_current(&hash(current)));
        // The previous token and the RETIRED_KEPT before it are known as reused...
        for old in older.iter().rev().take(1 + RETIRED_KEPT) {
            assert_eq!(session.past_token(&hash(old), now + 1), PastToken::Reused);
        }
        // ...older ones are forgotten, and strangers are unknown.
        assert_eq!(
            session.past_token(&hash(&tokens[0]), now + 1),
            PastToken::Unknown
        );
        let (_, stranger) = token::new_token(&session.id).unwrap();
        assert_eq!(session.past_token(&stranger, now + 1), PastToken::Unknown);
        // The history survives a reload from storage.
        let reloaded = store.load(&session.id).unwrap().unwrap().session;
        assert_eq!(
            reloaded.past_token(&hash(&tokens[3]), now + 1),
            PastToken::Reused
        );
    }
}
