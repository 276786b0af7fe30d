//! Password hashing with argon2id. Verification is deliberately slow and
//! takes ~19 MiB, so it runs on the blocking pool, only ever on login (never
//! per request), and only a bounded number at a time: a burst of logins
//! queues for a slot instead of taking memory without limit.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use prometheus::IntCounter;
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

/// Hashes a password into a PHC string (argon2id, the crate's default parameters).
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a PHC string; false for any mismatch or bad hash.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a random password, verified against when the username is
/// unknown so that unknown users cost the same argon2 work as known ones.
pub fn decoy_hash() -> String {
    let random = crate::auth::token::random_secret();
    hash(&random).unwrap_or_default()
}

/// Why argon2 work was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashingError {
    /// Every slot stayed taken for the whole wait.
    #[error("too many passwords are being checked at once")]
    Busy,
    #[error("hashing a password failed")]
    Failed,
}

/// The argon2 slots: at most `permits` hashes run at once.
pub struct Hashing {
    permits: Arc<Semaphore>,
    /// Passwords verified (argon2 work actually done).
    verifications: IntCounter,
}

impl Hashing {
    pub fn new(permits: usize, verifications: IntCounter) -> Hashing {
        Hashing {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            verifications,
        }
    }

    /// Runs `work` on the blocking pool once a slot is free, waiting at most
    /// `wait` for one. The slot is held by the work itself, so a client that
    /// goes away mid-hash does not free it before the hash is done.
    async fn run<T: Send + 'static>(
        &self,
        wait: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashingError::Busy)?
            .map_err(|_| HashingError::Failed)?;
        actix_web::web::block(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|_| HashingError::Failed)
    }

    /// Whether `password` matches the PHC string `phc`.
    pub async fn verify(
        &self,
        password: String,
        phc: String,
        wait: Duration,
    ) -> Result<bool, HashingError> {
        let verifications = self.verifications.clone();
        self.run(wait, move || {
            verifications.inc();
            verify(&password, &phc)
        })
        .await
    }

    /// A new PHC string for `password`.
    pub async fn hash(&self, password: String, wait: Duration) -> Result<String, HashingError> {
        self.run(wait, move || hash(&password))
            .await?
            .map_err(|_| HashingError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_password() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("wrong", &phc));
        assert!(!verify("anything", "not a hash"));
    }

    #[actix_web::test]
    async fn excess_work_waits_a_bounded_time() {
        let verifications = IntCounter::new("verifications", "test").unwrap();
        let hashing = Arc::new(Hashing::new(1, verifications));
        let (started, release) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(std::sync::Barrier::new(2)),
        );
        let (s, r) = (started.clone(), release.clone());
        let busy = hashing.clone();
        let holder = actix_web::rt::spawn(async move {
            busy.run(Duration::from_secs(5), move || {
                s.notify_one();
                r.wait();
            })
            .await
        });
        started.notified().await;
        let refused = hashing.run(Duration::from_millis(50), || ()).await;
        assert_eq!(refused, Err(HashingError::Busy));
        release.wait();
        holder.await.unwrap().unwrap();
        assert_eq!(hashing.run(Duration::from_millis(50), || 7).await, Ok(7));
    }
}
