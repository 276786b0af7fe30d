//! Checking a username and password: the one way every login does it, on
//! the gateway's login endpoint and the admin console's alike.

use std::net::IpAddr;
use std::sync::Arc;

use super::{valid_username, AccountError, Auth, User};
use crate::config::Config;
use crate::error::GatewayError;
use crate::ratelimit::AddressKey;

/// Why a login did not succeed.
#[derive(Debug)]
pub enum LoginError {
    /// An unknown or impossible username, a wrong password or a disabled
    /// user: one answer for all, so none can be told apart.
    Invalid,
    /// The throttle refused the attempt before any password was checked.
    Throttled(GatewayError),
    /// No password-checking slot came free in time; nothing was counted.
    Busy(AccountError),
    /// The shared store is down: no session could be issued, so no
    /// password is checked either.
    Unavailable,
}

impl LoginError {
    /// The `outcome` label of `portcullis_logins_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            LoginError::Invalid => "failure",
            LoginError::Throttled(_) => "throttled",
            LoginError::Busy(_) => "busy",
            LoginError::Unavailable => "unavailable",
        }
    }
}

impl From<LoginError> for GatewayError {
    fn from(err: LoginError) -> Self {
        match err {
            LoginError::Invalid => GatewayError::InvalidCredentials,
            LoginError::Throttled(refusal) => refusal,
            LoginError::Busy(err) => err.into(),
            LoginError::Unavailable => GatewayError::ServiceUnavailable,
        }
    }
}

impl Auth {
    /// Checks credentials from `client`. A name that can never log in is
    /// refused before anything is counted, looked up or hashed; every other
    /// attempt takes its place in the throttle *before* argon2 runs, so a
    /// burst of guesses checks no more passwords than the limits allow.
    pub async fn check_login(
        &self,
        config: &Config,
        username: &str,
        password: String,
        client: IpAddr,
    ) -> Result<Arc<User>, LoginError> {
        if !valid_username(username) {
            return Err(LoginError::Invalid);
        }
        if !self.store_answers() {
            return Err(LoginError::Unavailable);
        }
        let address = AddressKey::new(client, config.server.address_prefixes);
        let attempt = self
            .throttle
            .begin(&config.login, username, address)
            .await
            .map_err(LoginError::Throttled)?;
        match self
            .verify_password(username, password, config.login.max_hash_wait)
            .await
        {
            Ok(Some(user)) => {
                attempt.succeeded().await;
                Ok(user)
            }
            // Dropped, the attempt stays counted as a failure.
            Ok(None) => Err(LoginError::Invalid),
            Err(err) => {
                attempt.abandon().await;
                Err(LoginError::Busy(err.into()))
            }
        }
    }
}
