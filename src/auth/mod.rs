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
mod login;
pub mod password;
mod sessions;
mod throttle;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::http::header::HeaderValue;

pub use cookie::{clear_cookie, session_cookie, session_cookie_value, strip_session_cookie};
pub use login::LoginError;
pub use password::HashingError;
pub use sessions::{Origin, Session};
pub use throttle::{Attempt, LoginThrottle, THROTTLE_TREE};

use crate::config::{AdminConfig, Config, SessionConfig, StorageBackend};
use crate::error::GatewayError;
use crate::shared::Change;
use crate::storage::{
    now_ms, Records, Storage, Update, UserRecord, CONSOLE_SESSIONS_TREE, SCHEMA_VERSION,
    SESSIONS_TREE,
};
use crate::telemetry::Metrics;
use password::Hashing;
use sessions::{PastToken, SessionStore};

/// A user as the request path needs it.
#[derive(Debug)]
pub struct User {
    pub name: Arc<str>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub disabled: bool,
    /// Bumped by every change to the account; sessions of an older one end.
    pub generation: u64,
    /// The password was generated at first start and must be changed.
    pub must_change_password: bool,
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
            generation: record.generation,
            must_change_password: record.must_change_password,
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
            "must_change_password": self.must_change_password,
            "created_at": rfc3339(self.record.created_at),
            "updated_at": rfc3339(self.record.updated_at),
        })
    }
}

/// Unix milliseconds as RFC 3339 UTC (clamped to the year 9999, the last
/// one RFC 3339 can write).
pub fn rfc3339(ms: u64) -> String {
    const LAST_MS: u64 = 253_402_300_799_999;
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.min(LAST_MS));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone)]
pub enum Rejection {
    MissingToken,
    InvalidToken,
    TokenExpired,
    TokenRevoked,
    /// A token the session rotated out, presented after its grace period:
    /// someone holds a copy. The session has been revoked.
    TokenReused(Arc<Session>),
    /// The session could not be read from storage.
    Unavailable,
}

impl Rejection {
    /// The authentication outcome recorded in the access log and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::MissingToken => "missing_token",
            Rejection::InvalidToken => "invalid_token",
            Rejection::TokenExpired => "token_expired",
            Rejection::TokenRevoked => "token_revoked",
            Rejection::TokenReused(_) => "token_reused",
            Rejection::Unavailable => "service_unavailable",
        }
    }
}

/// The answer to each rejection. A reused token gets the same answer as a
/// revoked one: whoever holds the copy learns nothing.
impl From<Rejection> for GatewayError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::MissingToken => GatewayError::MissingToken,
            Rejection::InvalidToken => GatewayError::InvalidToken,
            Rejection::TokenExpired => GatewayError::TokenExpired,
            Rejection::TokenRevoked | Rejection::TokenReused(_) => GatewayError::TokenRevoked,
            Rejection::Unavailable => GatewayError::ServiceUnavailable,
        }
    }
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
    /// Nothing was changed: storage refused the write.
    #[error("storage failed, nothing was changed: {0}")]
    Storage(#[from] sled::Error),
    /// The change is in force on this gateway, but storage refused it: it is
    /// retried in the background and lost if the gateway stops first.
    #[error("in force on this gateway but not saved (storage failed: {0}); retrying")]
    Unsaved(sled::Error),
    #[error("{0}")]
    Hashing(#[from] HashingError),
}

/// The one place account errors become answers.
impl From<AccountError> for GatewayError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::UserExists(_) | AccountError::UserDisabled(_) => {
                GatewayError::Conflict(err.to_string())
            }
            AccountError::NoSuchUser(_) | AccountError::NoSuchSession(_) => {
                GatewayError::NoSuchResource(err.to_string())
            }
            AccountError::PasswordTooShort(_)
            | AccountError::InvalidUsername(_)
            | AccountError::InvalidName(_) => GatewayError::BadRequest(err.to_string().into()),
            AccountError::Storage(_) => GatewayError::StorageFailed { applied: false },
            AccountError::Unsaved(_) => GatewayError::StorageFailed { applied: true },
            AccountError::Hashing(HashingError::Busy) => GatewayError::Busy,
            AccountError::Hashing(HashingError::Failed) => GatewayError::Internal,
        }
    }
}

/// How the sessions of one kind expire and rotate.
#[derive(Debug, Clone, Copy)]
struct SessionRules {
    idle_timeout: Duration,
    /// `None`: tokens are never rotated.
    rotate_after: Option<Duration>,
    rotation_grace: Duration,
    touch_interval: Duration,
}

impl From<&SessionConfig> for SessionRules {
    fn from(config: &SessionConfig) -> Self {
        SessionRules {
            idle_timeout: config.idle_timeout,
            rotate_after: Some(config.rotate_after),
            rotation_grace: config.rotation_grace,
            touch_interval: config.touch_interval,
        }
    }
}

impl From<&AdminConfig> for SessionRules {
    /// Console sessions are short and never rotate: the console is one tab
    /// on a trusted network, and its token never travels to an upstream.
    fn from(config: &AdminConfig) -> Self {
        SessionRules {
            idle_timeout: config.session_idle_timeout,
            rotate_after: None,
            rotation_grace: Duration::ZERO,
            touch_interval: Duration::from_secs(5),
        }
    }
}

/// How long an account change may wait for an argon2 slot.
const ACCOUNT_HASH_WAIT: Duration = Duration::from_secs(30);

/// Users (all in memory) and sessions (the active ones in memory), stored
/// in sled; the login throttle and the argon2 slots.
pub struct Auth {
    user_records: Records<UserRecord>,
    storage: Storage,
    users: RwLock<HashMap<Arc<str>, Arc<User>>>,
    /// Serialises account changes, so two never undo each other.
    user_writes: tokio::sync::Mutex<()>,
    sessions: SessionStore,
    /// The admin console's sessions, apart: a gateway token never opens the console.
    console_sessions: SessionStore,
    hashing: Hashing,
    pub throttle: LoginThrottle,
    /// How long sessions held in memory stay accepted while the shared
    /// Redis is down (`storage.redis.session_fallback`).
    session_fallback: Option<Duration>,
    decoy_hash: std::sync::OnceLock<String>,
}

impl Auth {
    /// Loads every user; holds up to `storage.session_cache` sessions in
    /// memory; opens the login throttle.
    pub fn open(
        storage: &Storage,
        config: &Config,
        metrics: &Metrics,
    ) -> Result<Auth, sled::Error> {
        let auth = Auth {
            user_records: storage.users()?,
            storage: storage.clone(),
            users: RwLock::new(HashMap::new()),
            user_writes: tokio::sync::Mutex::new(()),
            sessions: SessionStore::open(storage, SESSIONS_TREE, config.storage.session_cache)?,
            console_sessions: SessionStore::open(storage, CONSOLE_SESSIONS_TREE, 1024)?,
            hashing: Hashing::new(
                config.login.max_concurrent_hashes,
                metrics.password_verifications.clone(),
            ),
            throttle: LoginThrottle::open(
                storage,
                config.storage.login_throttle_keys,
                metrics.counter_evictions("login_throttle"),
            )?,
            decoy_hash: std::sync::OnceLock::new(),
            session_fallback: match &config.storage.backend {
                StorageBackend::Redis(redis) => Some(redis.session_fallback),
                StorageBackend::Sled => None,
            },
        };
        *auth.users.write().map_err(|_| poisoned_index())? = auth.load_users()?;
        Ok(auth)
    }

    fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().ok()?.get(name).cloned()
    }

    /// Validates a session token: the per-request check. Refreshes the idle
    /// expiry and, after `rotate_after`, rotates the token. A rotated-out
    /// token presented after its grace period revokes the session.
    pub async fn authenticate(
        &self,
        token: &str,
        config: &SessionConfig,
    ) -> Result<Principal, Rejection> {
        if self.past_fallback() {
            return Err(Rejection::Unavailable);
        }
        self.validate(&self.sessions, token, config.into()).await
    }

    /// Whether the shared Redis has been out of reach for longer than
    /// `storage.redis.session_fallback`: from then on what this node holds
    /// may have been revoked elsewhere, so sessions fail closed.
    fn past_fallback(&self) -> bool {
        match (self.session_fallback, self.storage.shared()) {
            (Some(fallback), Some(shared)) => shared.down_for().is_some_and(|down| down > fallback),
            _ => false,
        }
    }

    /// Whether the store of users and sessions takes writes: always for
    /// sled (whose failures show when a write fails), and for Redis while
    /// it answers its health checks.
    pub fn store_answers(&self) -> bool {
        self.storage.shared().is_none_or(|shared| shared.is_up())
    }

    /// Validates an admin console session token: the same checks, with the
    /// console's own expiry and no rotation.
    pub async fn authenticate_console(
        &self,
        token: &str,
        config: &AdminConfig,
    ) -> Result<Principal, Rejection> {
        self.validate(&self.console_sessions, token, config.into())
            .await
    }

    async fn validate(
        &self,
        store: &SessionStore,
        token: &str,
        rules: SessionRules,
    ) -> Result<Principal, Rejection> {
        let (id, hash) = token::parse(token).ok_or(Rejection::InvalidToken)?;
        let now = now_ms();
        let session = store
            .find(id.as_str())
            .map_err(|_| Rejection::Unavailable)?
            .ok_or(Rejection::InvalidToken)?;
        let current = session.is_current(&hash);
        if session.revoked_at().is_some() {
            return Err(Rejection::TokenRevoked);
        }
        if !current {
            match session.past_token(&hash, now) {
                PastToken::InGrace => {}
                PastToken::Reused => {
                    // Revoked in memory even if storage fails: the stolen copy is useless either way.
                    let _ = store.revoke(&[session.id.to_string()]).await;
                    return Err(Rejection::TokenReused(session));
                }
                PastToken::Unknown => return Err(Rejection::InvalidToken),
            }
        }
        if session.is_expired(now, rules.idle_timeout) {
            return Err(Rejection::TokenExpired);
        }
        let user = self
            .user(&session.user)
            .filter(|u| !u.disabled && u.generation == session.user_generation)
            .ok_or(Rejection::TokenRevoked)?;
        store.touch(&session, now, rules.touch_interval);
        let due = rules
            .rotate_after
            .is_some_and(|after| session.rotation_due(now, after));
        let rotated = if current && due {
            // A failed rotation keeps the current token, which stays valid.
            store
                .rotate(&session, now, rules.rotation_grace)
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

    /// Whether a session that opened a long-lived connection (a WebSocket
    /// tunnel) still stands: not revoked, within its lifetime, its user
    /// enabled and unchanged. The open connection is the session's
    /// activity: a session that stands is touched, so it does not idle out
    /// under its tunnel. A storage error keeps it (the next check tries again).
    pub fn still_valid(&self, session: &Session, config: &SessionConfig) -> bool {
        let now = now_ms();
        if session.revoked_at().is_some() || now >= session.expires_at || self.past_fallback() {
            return false;
        }
        let current = match self.sessions.find(&session.id) {
            Ok(Some(current)) if current.revoked_at().is_none() => current,
            Ok(_) => return false,
            Err(_) => return true,
        };
        let user_stands = self
            .user(&session.user)
            .is_some_and(|u| !u.disabled && u.generation == session.user_generation);
        if user_stands {
            self.sessions.touch(&current, now, config.touch_interval);
        }
        user_stands
    }

    /// Checks a username and password (argon2, in one of the bounded slots,
    /// waiting at most `wait` for one). Unknown and disabled users cost the
    /// same work and get the same answer. The user returned is the account
    /// as it was when its password was checked.
    pub async fn verify_password(
        &self,
        username: &str,
        password: String,
        wait: Duration,
    ) -> Result<Option<Arc<User>>, HashingError> {
        let user = self.user(username);
        let hash = match &user {
            Some(u) => u.record.password_hash.clone(),
            None => self.decoy_hash.get_or_init(password::decoy_hash).clone(),
        };
        let matches = self.hashing.verify(password, hash, wait).await?;
        Ok(user.filter(|u| matches && !u.disabled))
    }

    /// Issues a new session (fresh token, never adopted from the client) for
    /// `user` as it stands in this snapshot: if the account has changed
    /// since, the session is born revoked.
    pub async fn issue(
        &self,
        user: &User,
        lifetime: Duration,
        origin: Origin,
    ) -> Result<Issued, AccountError> {
        Self::issue_in(&self.sessions, user, lifetime, origin).await
    }

    /// Issues a new admin console session for `user`.
    pub async fn issue_console(
        &self,
        user: &User,
        lifetime: Duration,
        origin: Origin,
    ) -> Result<Issued, AccountError> {
        Self::issue_in(&self.console_sessions, user, lifetime, origin).await
    }

    async fn issue_in(
        store: &SessionStore,
        user: &User,
        lifetime: Duration,
        origin: Origin,
    ) -> Result<Issued, AccountError> {
        if user.disabled {
            return Err(AccountError::UserDisabled(user.name.to_string()));
        }
        let (session, token) = Session::issue(user.name.clone(), user.generation, lifetime, origin)
            .ok_or(HashingError::Failed)?;
        let session = store.create(session).await?;
        Ok(Issued { session, token })
    }

    /// Issues a new session for the user named `username`.
    pub async fn issue_for(
        &self,
        username: &str,
        lifetime: Duration,
        origin: Origin,
    ) -> Result<Issued, AccountError> {
        let user = self
            .user(username)
            .ok_or_else(|| AccountError::NoSuchUser(username.into()))?;
        self.issue(&user, lifetime, origin).await
    }

    /// Revokes one session, durably. False when no such live session exists.
    pub async fn revoke(&self, id: &str) -> Result<bool, AccountError> {
        Self::revoke_in(&self.sessions, id).await
    }

    /// Ends one admin console session (a console logout), durably.
    pub async fn revoke_console(&self, id: &str) -> Result<bool, AccountError> {
        Self::revoke_in(&self.console_sessions, id).await
    }

    async fn revoke_in(store: &SessionStore, id: &str) -> Result<bool, AccountError> {
        let revoked = store
            .revoke(&[id.to_owned()])
            .await
            .map_err(AccountError::Unsaved)?;
        Ok(revoked > 0)
    }

    /// Revokes every session of a user, durably, the console's included;
    /// returns how many gateway sessions.
    pub async fn revoke_user(&self, username: &str) -> Result<usize, AccountError> {
        let console = self.console_sessions.ids_of(username)?;
        self.console_sessions
            .revoke(&console)
            .await
            .map_err(AccountError::Unsaved)?;
        let ids = self.sessions.ids_of(username)?;
        self.sessions
            .revoke(&ids)
            .await
            .map_err(AccountError::Unsaved)
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
        self.create_user(
            username,
            password,
            roles,
            permissions,
            min_password_length,
            false,
        )
        .await
    }

    /// Creates the first admin at first start: its password was generated
    /// and must be changed at the first login.
    pub async fn add_first_admin(
        &self,
        username: &str,
        password: String,
        role: &str,
    ) -> Result<Arc<User>, AccountError> {
        self.create_user(
            username,
            password,
            vec![role.to_owned()],
            Vec::new(),
            0,
            true,
        )
        .await
    }

    async fn create_user(
        &self,
        username: &str,
        password: String,
        roles: Vec<String>,
        permissions: Vec<String>,
        min_password_length: usize,
        must_change_password: bool,
    ) -> Result<Arc<User>, AccountError> {
        if !valid_username(username) {
            return Err(AccountError::InvalidUsername(username.into()));
        }
        validate_names(&roles)?;
        validate_names(&permissions)?;
        let password_hash = self.hash_password(password, min_password_length).await?;
        let _writing = self.user_writes.lock().await;
        if self.user(username).is_some() {
            return Err(AccountError::UserExists(username.into()));
        }
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
            generation: 0,
            must_change_password,
        };
        // Created only if no node has created the name meanwhile.
        if !self.user_records.create(username, &record)? {
            return Err(AccountError::UserExists(username.into()));
        }
        self.remember_user(record).await
    }

    /// Changes a password; every session of the user ends.
    pub async fn set_password(
        &self,
        username: &str,
        password: String,
        min_password_length: usize,
    ) -> Result<usize, AccountError> {
        let password_hash = self.hash_password(password, min_password_length).await?;
        self.update_user(username, |r| {
            r.password_hash.clone_from(&password_hash);
            r.must_change_password = false;
        })
        .await
    }

    /// Whether any enabled user holds `role`.
    pub fn anyone_holds(&self, role: &str) -> bool {
        self.users
            .read()
            .map(|users| {
                users
                    .values()
                    .any(|u| !u.disabled && u.roles.iter().any(|r| r == role))
            })
            .unwrap_or(true)
    }

    /// Replaces roles and/or permissions; every session of the user ends,
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
            if let Some(roles) = &roles {
                r.roles.clone_from(roles);
            }
            if let Some(permissions) = &permissions {
                r.permissions.clone_from(permissions);
            }
        })
        .await
    }

    /// Disables or re-enables a user; either way every session ends.
    pub async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
    ) -> Result<usize, AccountError> {
        self.update_user(username, |r| r.disabled = disabled).await
    }

    /// Deletes a user and every one of their sessions. The account is gone
    /// (durably) before the sessions are revoked, so none outlives it.
    pub async fn delete_user(&self, username: &str) -> Result<usize, AccountError> {
        {
            let _writing = self.user_writes.lock().await;
            if self.user(username).is_none() {
                return Err(AccountError::NoSuchUser(username.into()));
            }
            self.user_records.delete(username)?;
            self.storage.flush_async().await?;
            self.users.write().map_err(|_| poisoned())?.remove(username);
        }
        self.revoke_user(username).await
    }

    /// Applies `change` to the account and bumps its generation, saved
    /// durably *before* the sessions are revoked: from the moment the
    /// change is in memory, every session issued before it fails
    /// validation, including one issued by a login that raced the change.
    async fn update_user(
        &self,
        username: &str,
        change: impl Fn(&mut UserRecord),
    ) -> Result<usize, AccountError> {
        {
            let _writing = self.user_writes.lock().await;
            // From the stored record, which another node may have changed
            // (read again, and the change made again, if it changes meanwhile).
            let record = self.user_records.update(username, |mut record| {
                change(&mut record);
                record.updated_at = now_ms();
                record.generation += 1;
                Update::Put(record)
            })?;
            let record = record.ok_or_else(|| AccountError::NoSuchUser(username.into()))?;
            self.remember_user(record).await?;
        }
        self.revoke_user(username).await
    }

    /// Makes a stored user durable, then the one the request path sees.
    async fn remember_user(&self, record: UserRecord) -> Result<Arc<User>, AccountError> {
        self.storage.flush_async().await?;
        let user = Arc::new(User::from_record(record));
        hold_user(
            &mut *self.users.write().map_err(|_| poisoned())?,
            user.clone(),
        );
        Ok(user)
    }

    async fn hash_password(
        &self,
        password: String,
        min_length: usize,
    ) -> Result<String, AccountError> {
        if password.chars().count() < min_length {
            return Err(AccountError::PasswordTooShort(min_length));
        }
        Ok(self.hashing.hash(password, ACCOUNT_HASH_WAIT).await?)
    }

    /// Writes behind the `last_seen` of recently active sessions (with
    /// `everything`, at shutdown, of every session with unwritten activity),
    /// and saves revocations storage refused earlier.
    pub fn persist_activity(&self, everything: bool) -> Result<(), sled::Error> {
        for store in [&self.sessions, &self.console_sessions] {
            store.save_unsaved()?;
            store.persist_activity(everything)?;
        }
        Ok(())
    }

    /// Removes expired sessions, the gateway's and the console's, from
    /// memory and storage.
    pub fn sweep(&self, config: &Config) -> Result<(), sled::Error> {
        self.sessions.sweep(config.session.idle_timeout)?;
        self.console_sessions
            .sweep(config.admin.session_idle_timeout)
    }

    /// Live sessions, as of the last sweep plus logins and minus revocations since.
    pub fn live_sessions(&self) -> usize {
        self.sessions.live()
    }

    /// Takes in a change another node made to shared users or sessions:
    /// what this node holds in memory of it is read again (a session, when
    /// next presented).
    pub fn apply(&self, change: &Change) -> Result<(), sled::Error> {
        match change {
            Change::Session(id) => self.sessions.forget(id),
            Change::User(name) => {
                let stored = self.user_records.get(name)?;
                let mut users = self.users.write().map_err(|_| poisoned_index())?;
                match stored {
                    Some(record) => hold_user(&mut users, Arc::new(User::from_record(record))),
                    None => {
                        users.remove(name.as_str());
                    }
                }
            }
            Change::Resync => {
                // Sessions first: they cannot fail, and a revocation missed
                // must not wait on reading the users.
                self.forget_sessions();
                self.reload_users()?;
            }
            Change::Route(_) => {}
        }
        Ok(())
    }

    /// Drops every gateway session held in memory: each is read again
    /// when next presented.
    pub fn forget_sessions(&self) {
        self.sessions.forget_all();
    }

    /// Reads every user again from the store.
    pub fn reload_users(&self) -> Result<(), sled::Error> {
        let users = self.load_users()?;
        *self.users.write().map_err(|_| poisoned_index())? = users;
        Ok(())
    }

    fn load_users(&self) -> Result<HashMap<Arc<str>, Arc<User>>, sled::Error> {
        Ok(self
            .user_records
            .all()?
            .into_iter()
            .map(|r| {
                let user = Arc::new(User::from_record(r));
                (user.name.clone(), user)
            })
            .collect())
    }
}

/// Holds `user` in memory unless the copy held is newer: a read from the
/// store may finish after a later change was already taken in. A user
/// deleted and made again starts over (another creation time).
fn hold_user(users: &mut HashMap<Arc<str>, Arc<User>>, user: Arc<User>) {
    let newer_held = users.get(&user.name).is_some_and(|held| {
        held.record.created_at == user.record.created_at && held.generation > user.generation
    });
    if !newer_held {
        users.insert(user.name.clone(), user);
    }
}

fn poisoned_index() -> sled::Error {
    sled::Error::ReportableBug("an in-memory index lock is poisoned".into())
}

fn poisoned() -> AccountError {
    AccountError::Storage(poisoned_index())
}

/// Whether `name` may be a username: 1-64 letters, digits, '.', '_', '-'
/// and '@'. Checked on login before anything is counted or looked up.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// Checks role or permission names: 1-64 visible characters, no ','.
pub fn validate_names(names: &[String]) -> Result<(), AccountError> {
    match names.iter().find(|n| {
        n.is_empty() || n.len() > 64 || !n.bytes().all(|b| b.is_ascii_graphic() && b != b',')
    }) {
        Some(bad) => Err(AccountError::InvalidName(bad.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_past_year_9999_are_clamped_not_a_panic() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
