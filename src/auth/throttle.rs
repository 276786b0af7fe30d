//! Failed-login throttling per username and per client address, on counters
//! of their own (a rate-limit policy can neither read nor reset them).
//!
//! An attempt takes its place in both counts *before* the password is
//! checked, so a burst of simultaneous guesses verifies at most the allowed
//! number of passwords instead of all of them; a successful login gives the
//! place back. Counts are written behind to sled like any other counter, so
//! a restart does not reset them; with `storage.backend = "redis"` they are
//! shared, so guesses spread over several nodes count together.

use std::time::Duration;

use prometheus::IntCounter;

use crate::config::LoginConfig;
use crate::error::GatewayError;
use crate::ratelimit::{AddressKey, Counters as _, Limiter};
use crate::storage::Storage;

/// The sled tree of login-failure counts.
pub const THROTTLE_TREE: &str = "login_throttle";

/// The login-failure counters.
pub struct LoginThrottle {
    counters: Limiter,
}

/// One login attempt holding its place in the failure counts. Dropped as
/// it is, the attempt stays counted as a failure.
#[must_use = "an attempt is a failure unless it is resolved otherwise"]
pub struct Attempt<'a> {
    counters: &'a Limiter,
    window: Duration,
    user_key: String,
    address_key: String,
}

impl LoginThrottle {
    /// Opens the counters, holding at most `capacity` keys in memory.
    pub fn open(
        storage: &Storage,
        capacity: usize,
        evictions: IntCounter,
    ) -> Result<LoginThrottle, sled::Error> {
        Ok(LoginThrottle {
            counters: Limiter::open(storage, THROTTLE_TREE, capacity, evictions)?,
        })
    }

    /// Counts an attempt for `username` from `address`, or refuses it (429)
    /// when either already has `max_failures_*` failures in the window.
    /// `username` must already be valid: nothing is counted for names that
    /// can never log in.
    pub async fn begin(
        &self,
        config: &LoginConfig,
        username: &str,
        address: AddressKey,
    ) -> Result<Attempt<'_>, GatewayError> {
        let window = config.failure_window;
        let attempt = Attempt {
            counters: &self.counters,
            window,
            user_key: user_key(username),
            address_key: address_key(address),
        };
        for (key, limit) in [
            (&attempt.user_key, config.max_failures_per_user),
            (&attempt.address_key, config.max_failures_per_ip),
        ] {
            let decision = self
                .counters
                .acquire(key, window, limit)
                .await
                .map_err(|_| GatewayError::ServiceUnavailable)?;
            if !decision.allowed {
                if *key == attempt.address_key {
                    // The username's place was taken for an attempt that never happens.
                    let _ = self.counters.release(&attempt.user_key, window).await;
                }
                return Err(GatewayError::RateLimited {
                    limit,
                    window: window.as_secs().max(1),
                    retry_after: decision.retry_after_ms.div_ceil(1000).max(1),
                });
            }
        }
        Ok(attempt)
    }

    /// Writes changed counts to sled (and, with `sweep`, drops expired ones).
    pub fn persist(&self, sweep: bool) -> Result<(), crate::ratelimit::StoreError> {
        self.counters.local().persist(sweep).map(|_| ())
    }

    /// Keys held in memory.
    pub fn len(&self) -> usize {
        self.counters.local().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.counters.local().is_empty()
    }

    /// Forgets one key (`user|NAME` or `address|ADDRESS`); true when it existed.
    pub async fn reset(&self, key: &str) -> Result<bool, crate::ratelimit::StoreError> {
        self.counters.reset(key).await
    }

    /// The `n` usernames and addresses with the most recent failures.
    pub async fn busiest(
        &self,
        n: usize,
    ) -> Result<Vec<(String, u64)>, crate::ratelimit::StoreError> {
        self.counters.busiest("", n).await
    }
}

impl Attempt<'_> {
    /// The password was right: the username's failures are cleared, and
    /// the address gets its place back (its earlier failures stay).
    pub async fn succeeded(self) {
        let _ = self.counters.reset(&self.user_key).await;
        let _ = self.counters.release(&self.address_key, self.window).await;
    }

    /// The password was never checked (the gateway was too busy): nothing is counted.
    pub async fn abandon(self) {
        let _ = self.counters.release(&self.user_key, self.window).await;
        let _ = self.counters.release(&self.address_key, self.window).await;
    }
}

fn user_key(username: &str) -> String {
    format!("user|{username}")
}

fn address_key(address: AddressKey) -> String {
    format!("address|{address}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AddressPrefixes, StorageConfig};

    fn config() -> LoginConfig {
        LoginConfig {
            min_password_length: 12,
            max_failures_per_user: 3,
            max_failures_per_ip: 5,
            failure_window: Duration::from_secs(60),
            max_concurrent_hashes: 1,
            max_hash_wait: Duration::from_secs(1),
        }
    }

    fn address(ip: &str) -> AddressKey {
        AddressKey::new(ip.parse().unwrap(), AddressPrefixes::default())
    }

    #[actix_web::test]
    async fn attempts_are_counted_before_they_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageConfig::for_tests(dir.path())).unwrap();
        let evictions = IntCounter::new("evictions", "test").unwrap();
        let throttle = LoginThrottle::open(&storage, 100, evictions).unwrap();
        let config = config();
        let from = address("192.0.2.1");
        // Three attempts in flight at once fill alice's place; the fourth is refused.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(throttle.begin(&config, "alice", from).await.unwrap());
        }
        assert!(throttle.begin(&config, "alice", from).await.is_err());
        // Abandoned attempts give their places back.
        for attempt in held {
            attempt.abandon().await;
        }
        let attempt = throttle.begin(&config, "alice", from).await.unwrap();
        attempt.succeeded().await;
        let busiest = throttle.busiest(10).await.unwrap();
        assert!(busiest.iter().all(|(key, _)| key != "user|alice"));
        // The address limit (5) counts across usernames and frees the username's place.
        for name in ["b", "c", "d", "e", "f"] {
            drop(throttle.begin(&config, name, from).await.unwrap());
        }
        assert!(throttle.begin(&config, "g", from).await.is_err());
        let busiest = throttle.busiest(10).await.unwrap();
        assert!(busiest.iter().all(|(key, _)| key != "user|g"));
    }
}
