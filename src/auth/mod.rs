//! Session-cookie authentication that Portcullis runs itself: users with
//! argon2id passwords, sessions with sliding and absolute expiry, rotation
//! and revocation.
//!
//! Users live in memory; sessions live in sled, the most recently active
//! also in memory (see [`sessions`]), so a validation is usually a hash and
//! a map lookup, never argon2. Creations, rotations, logouts and
//! revocations are flushed before the response; `last_seen` is written
//! behind at most every `session.touch_interval`, so a crash can only make
//! a session look idle a little earlier than it was.

mod cookie;
pub mod csrf;
pub mod endpoints;
pub mod password;
mod sessions;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::http::header::HeaderValue;

pub use cookie::{clear_cookie, session_cookie, session_cookie_value, strip_session_cookie};
pub use sessions::Session;

use crate::config::{LoginConfig, SessionConfig};
use crate::error::GatewayError;
use crate::ratelimit::CounterStore;
use crate::storage::{now_ms, Records, Storage, UserRecord, SCHEMA_VERSION};
use sessions::SessionStore;

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
    /// The session could not be read from storage.
    Unavailable,
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
    #[error("hashing a password or token failed")]
    Hashing,
}

/// Users (all in memory) and sessions (the active ones in memory), stored in sled.
pub struct Auth {
    user_records: Records<UserRecord>,
    storage: Storage,
    users: RwLock<HashMap<Arc<str>, Arc<User>>>,
    sessions: SessionStore,
    decoy_hash: std::sync::OnceLock<String>,
}

impl Auth {
    /// Loads every user; holds up to `session_cache` sessions in memory.
    pub fn open(storage: &Storage, session_cache: usize) -> Result<Auth, sled::Error> {
        let user_records = storage.users()?;
        let users: HashMap<Arc<str>, Arc<User>> = user_records
            .all()?
            .into_iter()
            .map(|r| {
                let user = Arc::new(User::from_record(r));
                (user.name.clone(), user)
            })
            .collect();
        Ok(Auth {
            user_records,
            storage: storage.clone(),
            users: RwLock::new(users),
            sessions: SessionStore::open(storage, session_cache)?,
            decoy_hash: std::sync::OnceLock::new(),
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
        let (id, hash) = token::parse(token).ok_or(Rejection::InvalidToken)?;
        let now = now_ms();
        let session = self
            .sessions
            .find(id.as_str())
            .map_err(|_| Rejection::Unavailable)?
            .ok_or(Rejection::InvalidToken)?;
        let current = session.is_current(&hash);
        if !current {
            match session.previous_valid_until(&hash) {
                Some(until) if now > until => return Err(Rejection::TokenExpired),
                Some(_) => {}
                None => return Err(Rejection::InvalidToken),
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
        self.sessions.touch(&session, now, config.touch_interval);
        let rotated = if current && session.rotation_due(now, config.rotate_after) {
            // A failed rotation keeps the current token, which stays valid.
            self.sessions
                .rotate(&session, now, config.rotation_grace)
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let (session, rotated_token) = match rotated {
            Some((rotated, token)) => (rotated, Some(token)),
            None => (session, None),
        };
        Ok(Principal {
            user,
            session,
            rotated_token,
        })
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
        let (session, token) =
            Session::issue(user.name.clone(), lifetime).ok_or(AccountError::Hashing)?;
        let session = self.sessions.create(session).await?;
        Ok(Issued { session, token })
    }

    /// Revokes one session, durably. False when no such live session exists.
    pub async fn revoke(&self, id: &str) -> Result<bool, AccountError> {
        Ok(self.sessions.revoke(&[id.to_owned()]).await? > 0)
    }

    /// Revokes every session of a user, durably; returns how many.
    pub async fn revoke_user(&self, username: &str) -> Result<usize, AccountError> {
        let ids = self.sessions.ids_of(username)?;
        Ok(self.sessions.revoke(&ids).await?)
    }

    /// Every stored session, optionally only one user's, oldest first.
    pub fn sessions(&self, user: Option<&str>) -> Result<Vec<Arc<Session>>, AccountError> {
        Ok(self.sessions.list(user)?)
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
        let revoked = self.revoke_user(username).await?;
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
        let revoked = self.revoke_user(username).await?;
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

    /// Writes behind the `last_seen` of recently active sessions (with
    /// `everything`, at shutdown, of every session with unwritten activity).
    pub fn persist_activity(&self, everything: bool) -> Result<(), sled::Error> {
        self.sessions.persist_activity(everything)
    }

    /// Removes expired sessions from memory and storage.
    pub fn sweep(&self, idle: Duration) -> Result<(), sled::Error> {
        self.sessions.sweep(idle)
    }

    /// Live sessions, as of the last sweep plus logins and minus revocations since.
    pub fn live_sessions(&self) -> usize {
        self.sessions.live()
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
