//! Session-cookie authentication that Portcullis runs itself: users with
//! argon2id passwords, sessions with sliding and absolute expiry, rotation
//! and revocation.
//!
//! Users and sessions live in memory for the request path (a validation is
//! a hash and a map lookup, never argon2) and in sled for durability:
//! creations, rotations, logouts and revocations are flushed before the
//! response; `last_seen` is written behind at most every
//! `session.touch_interval`, so a crash can only make a session look idle a
//! little earlier than it was.

mod cookie;
pub mod csrf;
pub mod endpoints;
pub mod password;
pub mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::http::header::HeaderValue;

pub use cookie::{clear_cookie, session_cookie, session_cookie_value, strip_session_cookie};

use std::net::IpAddr;

use crate::config::{LoginConfig, SessionConfig};
use crate::error::GatewayError;
use crate::ratelimit::CounterStore;
use crate::storage::{now_ms, Records, SessionRecord, Storage, UserRecord, SCHEMA_VERSION};
use token::TokenHash;

/// A user as the request path needs it.
#[derive(Debug)]
pub struct User {
    pub name: Arc<str>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub disabled: bool,
    /// `roles` joined with `,`, ready for the upstream header.
    pub roles_header: HeaderValue,
    record: UserRecord,
}

impl User {
    fn from_record(record: UserRecord) -> User {
        User {
            name: record.username.as_str().into(),
            roles: record.roles.clone(),
            permissions: record.permissions.clone(),
            disabled: record.disabled,
            roles_header: HeaderValue::from_str(&record.roles.join(","))
                .unwrap_or(HeaderValue::from_static("")),
            record,
        }
    }

    /// The public view: everything but the password hash.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "username": &*self.name,
            "roles": self.roles,
            "permissions": self.permissions,
            "disabled": self.disabled,
            "created_at": rfc3339(self.record.created_at),
            "updated_at": rfc3339(self.record.updated_at),
        })
    }
}

/// A live session. Token hashes never change in place: a rotation replaces
/// the whole `Session`, so readers always see a consistent pair.
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
    fn from_record(r: &SessionRecord, user: Arc<str>) -> Option<Session> {
        Some(Session {
            id: r.id.as_str().into(),
            user,
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

    fn is_expired(&self, now: u64, idle: Duration) -> bool {
        now >= self.expires_at || now >= self.idle_expires_at(idle)
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

/// Failed-login throttling per username and per client IP, on the shared
/// sliding-window counters (so it survives restarts like any other limit).
pub struct LoginThrottle<'a> {
    counters: &'a CounterStore,
    config: &'a LoginConfig,
    user_key: String,
    ip_key: String,
}

impl<'a> LoginThrottle<'a> {
    pub fn new(
        counters: &'a CounterStore,
        config: &'a LoginConfig,
        username: &str,
        ip: IpAddr,
    ) -> Self {
        LoginThrottle {
            counters,
            config,
            user_key: format!("login-user|{username}"),
            ip_key: format!("login-ip|{ip}"),
        }
    }

    /// Refuses the attempt (429) while either key has too many recent failures.
    pub fn check(&self) -> Result<(), GatewayError> {
        let window = self.config.failure_window;
        for (key, limit) in [
            (&self.user_key, self.config.max_failures_per_user),
            (&self.ip_key, self.config.max_failures_per_ip),
        ] {
            let decision = self
                .counters
                .peek(key, window, limit)
                .map_err(|_| GatewayError::ServiceUnavailable)?;
            if !decision.allowed {
                return Err(GatewayError::RateLimited {
                    limit,
                    window: window.as_secs().max(1),
                    retry_after: decision.retry_after_ms.div_ceil(1000).max(1),
                });
            }
        }
        Ok(())
    }

    pub fn record_failure(&self) {
        let window = self.config.failure_window;
        let _ = self.counters.record(&self.user_key, window);
        let _ = self.counters.record(&self.ip_key, window);
    }

    /// A successful login clears the username's failures (not the IP's).
    pub fn record_success(&self) {
        let _ = self.counters.reset(&self.user_key);
    }
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingToken,
    InvalidToken,
    TokenExpired,
    TokenRevoked,
}

/// A validated session and its user, plus a new token when it was rotated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: Arc<User>,
    pub session: Arc<Session>,
    pub rotated_token: Option<String>,
}

/// A freshly issued session and its token (shown once, never stored).
pub struct Issued {
    pub session: Arc<Session>,
    pub token: String,
}

/// What went wrong managing users or sessions.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("user {0:?} is disabled")]
    UserDisabled(String),
    #[error("no session with id {0:?}")]
    NoSuchSession(String),
    #[error("the password is too short (at least {0} characters)")]
    PasswordTooShort(usize),
    #[error(
        "{0:?} is not a valid username (1-64 characters: letters, digits, '.', '_', '-', '@')"
    )]
    InvalidUsername(String),
    #[error("{0:?} is not a valid role or permission name")]
    InvalidName(String),
    #[error("storage failed: {0}")]
    Storage(#[from] sled::Error),
    #[error("password hashing failed")]
    Hashing,
}

#[derive(Default)]
struct SessionIndex {
    by_id: HashMap<Arc<str>, Arc<Session>>,
    /// Current and still-in-grace previous token hashes.
    by_token: HashMap<TokenHash, Arc<Session>>,
}

impl SessionIndex {
    fn insert(&mut self, session: Arc<Session>) {
        if let Some(old) = self.by_id.insert(session.id.clone(), session.clone()) {
            self.by_token.remove(&old.token_hash);
            if let Some((previous, _)) = old.previous {
                self.by_token.remove(&previous);
            }
        }
        self.by_token.insert(session.token_hash, session.clone());
        if let Some((previous, _)) = session.previous {
            self.by_token.insert(previous, session);
        }
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let session = self.by_id.remove(id)?;
        self.by_token.remove(&session.token_hash);
        if let Some((previous, _)) = session.previous {
            self.by_token.remove(&previous);
        }
        Some(session)
    }
}

/// Users and sessions: in memory for the request path, in sled for durability.
pub struct Auth {
    storage: Storage,
    user_records: Records<UserRecord>,
    session_records: Records<SessionRecord>,
    users: RwLock<HashMap<Arc<str>, Arc<User>>>,
    sessions: RwLock<SessionIndex>,
    /// Sessions whose `last_seen` moved past `touch_interval` since last written.
    dirty: Mutex<Vec<Arc<Session>>>,
    decoy_hash: std::sync::OnceLock<String>,
    rotation: tokio::sync::Mutex<()>,
}

impl Auth {
    /// Loads every user and session from storage.
    pub fn open(storage: &Storage) -> Result<Auth, sled::Error> {
        let user_records = storage.users()?;
        let session_records = storage.sessions()?;
        let users: HashMap<Arc<str>, Arc<User>> = user_records
            .all()?
            .into_iter()
            .map(|r| {
                let user = Arc::new(User::from_record(r));
                (user.name.clone(), user)
            })
            .collect();
        let mut index = SessionIndex::default();
        // Streamed, not collected: with many sessions the records would
        // otherwise all be in memory twice at startup.
        for record in session_records.iter() {
            let record = record?;
            // Sessions share their user's name rather than each holding a copy.
            let user = users
                .get(record.user.as_str())
                .map_or_else(|| Arc::from(record.user.as_str()), |u| u.name.clone());
            if let Some(session) = Session::from_record(&record, user) {
                index.insert(Arc::new(session));
            }
        }
        Ok(Auth {
            storage: storage.clone(),
            user_records,
            session_records,
            users: RwLock::new(users),
            sessions: RwLock::new(index),
            dirty: Mutex::new(Vec::new()),
            decoy_hash: std::sync::OnceLock::new(),
            rotation: tokio::sync::Mutex::new(()),
        })
    }

    fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().ok()?.get(name).cloned()
    }

    /// Validates a session token: the per-request check. Refreshes the idle
    /// expiry and, after `rotate_after`, rotates the token.
    pub async fn authenticate(
        &self,
        token: &str,
        config: &SessionConfig,
    ) -> Result<Principal, Rejection> {
        let hash = token::hash_token(token).ok_or(Rejection::InvalidToken)?;
        let now = now_ms();
        let session = self
            .sessions
            .read()
            .ok()
            .and_then(|index| index.by_token.get(&hash).cloned())
            .ok_or(Rejection::InvalidToken)?;
        let current = token::same_hash(&session.token_hash, &hash);
        if !current {
            match session.previous {
                Some((previous, until)) if token::same_hash(&previous, &hash) => {
                    if now > until {
                        return Err(Rejection::TokenExpired);
                    }
                }
                _ => return Err(Rejection::InvalidToken),
            }
        }
        if session.revoked_at().is_some() {
            return Err(Rejection::TokenRevoked);
        }
        if session.is_expired(now, config.idle_timeout) {
            return Err(Rejection::TokenExpired);
        }
        let user = self
            .user(&session.user)
            .filter(|u| !u.disabled)
            .ok_or(Rejection::TokenRevoked)?;
        self.touch(&session, now, config.touch_interval);
        let due =
            now.saturating_sub(session.token_issued_at) >= config.rotate_after.as_millis() as u64;
        let (session, rotated_token) = if current && due {
            match self.rotate(&session, now, config).await {
                Some((rotated, token)) => (rotated, Some(token)),
                None => (session, None),
            }
        } else {
            (session, None)
        };
        Ok(Principal {
            user,
            session,
            rotated_token,
        })
    }

    fn touch(&self, session: &Arc<Session>, now: u64, interval: Duration) {
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

    /// Replaces the session's token; the old one stays valid for `rotation_grace`.
    /// Returns `None` when another request rotated it first.
    async fn rotate(
        &self,
        session: &Arc<Session>,
        now: u64,
        config: &SessionConfig,
    ) -> Option<(Arc<Session>, String)> {
        let token = token::new_token();
        let hash = token::hash_token(&token)?;
        let rotated = Arc::new(Session {
            id: session.id.clone(),
            user: session.user.clone(),
            token_hash: hash,
            previous: Some((
                session.token_hash,
                now + config.rotation_grace.as_millis() as u64,
            )),
            created_at: session.created_at,
            token_issued_at: now,
            expires_at: session.expires_at,
            last_seen: AtomicU64::new(session.last_seen()),
            persisted_last_seen: AtomicU64::new(now),
            revoked_at: AtomicU64::new(session.revoked_at.load(Ordering::Relaxed)),
        });
        // One rotation at a time (they are rare), so the record written and
        // the session indexed are always the same one.
        let _rotating = self.rotation.lock().await;
        if !self
            .session(&session.id)
            .is_some_and(|live| Arc::ptr_eq(&live, session))
        {
            return None; // another request rotated it first
        }
        // Durable before the client sees it: a crash must not leave the
        // client holding a token nobody knows, nor log it out.
        self.session_records
            .put(&rotated.id, &rotated.to_record())
            .ok()?;
        self.storage.flush_async().await.ok()?;
        let mut index = self.sessions.write().ok()?;
        if !index
            .by_id
            .get(&session.id)
            .is_some_and(|live| Arc::ptr_eq(live, session))
        {
            return None; // swept meanwhile
        }
        // Revocation marks sessions under the read lock, so this sees any
        // revocation of the old session.
        rotated.revoked_at.store(
            session.revoked_at.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        index.insert(rotated.clone());
        Some((rotated, token))
    }

    /// Checks a username and password (argon2, on the blocking pool). Unknown
    /// and disabled users cost the same work and get the same answer.
    pub async fn verify_password(&self, username: &str, password: String) -> Option<Arc<User>> {
        let user = self.user(username);
        let hash = match &user {
            Some(u) => u.record.password_hash.clone(),
            None => self.decoy_hash.get_or_init(password::decoy_hash).clone(),
        };
        let matches = actix_web::web::block(move || password::verify(&password, &hash))
            .await
            .unwrap_or(false);
        user.filter(|u| matches && !u.disabled)
    }

    /// Issues a new session (fresh token, never adopted from the client).
    pub async fn issue(&self, username: &str, lifetime: Duration) -> Result<Issued, AccountError> {
        let user = self
            .user(username)
            .ok_or_else(|| AccountError::NoSuchUser(username.into()))?;
        if user.disabled {
            return Err(AccountError::UserDisabled(username.into()));
        }
        let token = token::new_token();
        let hash = token::hash_token(&token).ok_or(AccountError::Hashing)?;
        let now = now_ms();
        let session = Arc::new(Session {
            id: token::new_session_id().into(),
            user: user.name.clone(),
            token_hash: hash,
            previous: None,
            created_at: now,
            token_issued_at: now,
            expires_at: now + lifetime.as_millis() as u64,
            last_seen: AtomicU64::new(now),
            persisted_last_seen: AtomicU64::new(now),
            revoked_at: AtomicU64::new(0),
        });
        self.session_records
            .put(&session.id, &session.to_record())?;
        self.storage.flush_async().await?;
        self.sessions
            .write()
            .map_err(|_| poisoned())?
            .insert(session.clone());
        Ok(Issued { session, token })
    }

    /// Revokes one session, durably. False when no such live session exists.
    pub async fn revoke(&self, id: &str) -> Result<bool, AccountError> {
        let revoked = self.mark_revoked(|s| &*s.id == id)?;
        self.storage.flush_async().await?;
        Ok(revoked > 0)
    }

    /// Revokes every session of a user, durably; returns how many.
    pub async fn revoke_user(&self, username: &str) -> Result<usize, AccountError> {
        let revoked = self.mark_revoked(|s| &*s.user == username)?;
        self.storage.flush_async().await?;
        Ok(revoked)
    }

    fn mark_revoked(&self, matches: impl Fn(&Session) -> bool) -> Result<usize, AccountError> {
        let now = now_ms();
        // Marked while the index is read-locked, so a concurrent rotation
        // either sees the mark or is seen here.
        let targets: Vec<Arc<Session>> = {
            let index = self.sessions.read().map_err(|_| poisoned())?;
            let targets: Vec<Arc<Session>> = index
                .by_id
                .values()
                .filter(|s| matches(s) && s.revoked_at().is_none())
                .cloned()
                .collect();
            for session in &targets {
                session.revoked_at.store(now, Ordering::Relaxed);
            }
            targets
        };
        for session in &targets {
            self.session_records
                .put(&session.id, &session.to_record())?;
        }
        Ok(targets.len())
    }

    /// Looks up a session by id.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.read().ok()?.by_id.get(id).cloned()
    }

    /// Every session, optionally only one user's, oldest first.
    pub fn sessions(&self, user: Option<&str>) -> Vec<Arc<Session>> {
        let mut list: Vec<Arc<Session>> = self
            .sessions
            .read()
            .map(|index| {
                index
                    .by_id
                    .values()
                    .filter(|s| user.is_none_or(|u| &*s.user == u))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        list.sort_by_key(|s| s.created_at);
        list
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<Arc<User>> {
        let mut list: Vec<Arc<User>> = self
            .users
            .read()
            .map(|u| u.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Looks up a user by name.
    pub fn find_user(&self, name: &str) -> Option<Arc<User>> {
        self.user(name)
    }

    /// Creates a user.
    pub async fn add_user(
        &self,
        username: &str,
        password: String,
        roles: Vec<String>,
        permissions: Vec<String>,
        min_password_length: usize,
    ) -> Result<Arc<User>, AccountError> {
        validate_username(username)?;
        validate_names(&roles)?;
        validate_names(&permissions)?;
        if self.user(username).is_some() {
            return Err(AccountError::UserExists(username.into()));
        }
        let password_hash = hash_password(password, min_password_length).await?;
        let now = now_ms();
        let record = UserRecord {
            v: SCHEMA_VERSION,
            username: username.into(),
            password_hash,
            roles,
            permissions,
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        self.save_user(record).await
    }

    /// Changes a password; every session of the user is revoked.
    pub async fn set_password(
        &self,
        username: &str,
        password: String,
        min_password_length: usize,
    ) -> Result<usize, AccountError> {
        let password_hash = hash_password(password, min_password_length).await?;
        self.update_user(username, |r| r.password_hash = password_hash)
            .await
    }

    /// Replaces roles and/or permissions; every session of the user is revoked,
    /// so new privileges always come with a fresh token.
    pub async fn set_privileges(
        &self,
        username: &str,
        roles: Option<Vec<String>>,
        permissions: Option<Vec<String>>,
    ) -> Result<usize, AccountError> {
        if let Some(r) = &roles {
            validate_names(r)?;
        }
        if let Some(p) = &permissions {
            validate_names(p)?;
        }
        self.update_user(username, |r| {
            if let Some(roles) = roles {
                r.roles = roles;
            }
            if let Some(permissions) = permissions {
                r.permissions = permissions;
            }
        })
        .await
    }

    /// Disables or re-enables a user; disabling revokes every session.
    pub async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
    ) -> Result<usize, AccountError> {
        self.update_user(username, |r| r.disabled = disabled).await
    }

    /// Deletes a user and every one of their sessions.
    pub async fn delete_user(&self, username: &str) -> Result<usize, AccountError> {
        if self.user(username).is_none() {
            return Err(AccountError::NoSuchUser(username.into()));
        }
        let revoked = self.mark_revoked(|s| &*s.user == username)?;
        self.user_records.delete(username)?;
        self.storage.flush_async().await?;
        self.users.write().map_err(|_| poisoned())?.remove(username);
        Ok(revoked)
    }

    async fn update_user(
        &self,
        username: &str,
        change: impl FnOnce(&mut UserRecord),
    ) -> Result<usize, AccountError> {
        let user = self
            .user(username)
            .ok_or_else(|| AccountError::NoSuchUser(username.into()))?;
        let mut record = user.record.clone();
        change(&mut record);
        record.updated_at = now_ms();
        let revoked = self.mark_revoked(|s| &*s.user == username)?;
        self.save_user(record).await?;
        Ok(revoked)
    }

    async fn save_user(&self, record: UserRecord) -> Result<Arc<User>, AccountError> {
        self.user_records.put(&record.username, &record)?;
        self.storage.flush_async().await?;
        let user = Arc::new(User::from_record(record));
        self.users
            .write()
            .map_err(|_| poisoned())?
            .insert(user.name.clone(), user.clone());
        Ok(user)
    }

    /// Writes behind the `last_seen` of sessions active since their last
    /// write: those queued by `touch`, or with `everything` (at shutdown)
    /// every session with unwritten activity.
    pub fn persist_activity(&self, everything: bool) -> Result<(), sled::Error> {
        let mut pending = self
            .dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        if everything {
            if let Ok(index) = self.sessions.read() {
                pending.extend(
                    index
                        .by_id
                        .values()
                        .filter(|s| s.last_seen() > s.persisted_last_seen.load(Ordering::Relaxed))
                        .cloned(),
                );
            }
        }
        for session in pending {
            // A rotated or swept session has a newer record, or none.
            if self
                .session(&session.id)
                .is_some_and(|live| Arc::ptr_eq(&live, &session))
            {
                session
                    .persisted_last_seen
                    .fetch_max(session.last_seen(), Ordering::Relaxed);
                self.session_records
                    .put(&session.id, &session.to_record())?;
            }
        }
        Ok(())
    }

    /// Removes expired sessions from memory and storage.
    pub fn sweep(&self, idle: Duration) -> Result<(), sled::Error> {
        let now = now_ms();
        let expired: Vec<Arc<str>> = self
            .sessions
            .read()
            .map(|index| {
                index
                    .by_id
                    .values()
                    .filter(|s| s.is_expired(now, idle))
                    .map(|s| s.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        if !expired.is_empty() {
            self.session_records
                .delete_many(expired.iter().map(|id| &**id))?;
            if let Ok(mut index) = self.sessions.write() {
                for id in &expired {
                    index.remove(id);
                }
            }
        }
        Ok(())
    }

    /// The number of live (unexpired, unrevoked) sessions.
    pub fn live_sessions(&self, idle: Duration) -> usize {
        let now = now_ms();
        self.sessions
            .read()
            .map(|index| {
                index
                    .by_id
                    .values()
                    .filter(|s| s.revoked_at().is_none() && !s.is_expired(now, idle))
                    .count()
            })
            .unwrap_or(0)
    }
}

fn poisoned() -> AccountError {
    AccountError::Storage(sled::Error::ReportableBug(
        "an in-memory index lock is poisoned".into(),
    ))
}

async fn hash_password(password: String, min_length: usize) -> Result<String, AccountError> {
    if password.chars().count() < min_length {
        return Err(AccountError::PasswordTooShort(min_length));
    }
    actix_web::web::block(move || password::hash(&password))
        .await
        .map_err(|_| AccountError::Hashing)?
        .map_err(|_| AccountError::Hashing)
}

fn validate_username(name: &str) -> Result<(), AccountError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    valid
        .then_some(())
        .ok_or_else(|| AccountError::InvalidUsername(name.into()))
}

fn validate_names(names: &[String]) -> Result<(), AccountError> {
    match names.iter().find(|n| {
        n.is_empty() || n.len() > 64 || !n.bytes().all(|b| b.is_ascii_graphic() && b != b',')
    }) {
        Some(bad) => Err(AccountError::InvalidName(bad.clone())),
        None => Ok(()),
    }
}
