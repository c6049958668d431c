//! Password hashing with argon2id (OWASP parameters), off the async runtime,
//! and bounded: each hash takes ~19 MiB and real CPU, so at most
//! `HASH_CONCURRENCY` (default: the CPUs, at most 4) run at once; a request
//! waits up to two seconds for a turn, then gets `503 unavailable` with
//! `Retry-After` rather than pushing the pod out of memory.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::TryRngCore;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::error::PasswordError;

/// How long a request waits for a hashing slot.
const WAIT: Duration = Duration::from_secs(2);

static CONCURRENCY: OnceLock<usize> = OnceLock::new();

static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    Semaphore::new(CONCURRENCY.get().copied().unwrap_or(cpus).max(1))
});

/// Sets the bound (`HASH_CONCURRENCY`); call before the first hash.
pub fn set_concurrency(n: usize) {
    let _ = CONCURRENCY.set(n);
}

/// A turn to hash, or `Busy` after a short wait.
async fn slot() -> Result<SemaphorePermit<'static>, PasswordError> {
    turn(&SLOTS, WAIT).await
}

async fn turn(slots: &Semaphore, wait: Duration) -> Result<SemaphorePermit<'_>, PasswordError> {
    match tokio::time::timeout(wait, slots.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(PasswordError::Busy),
    }
}

pub async fn hash(password: String) -> Result<String, PasswordError> {
    let _slot = slot().await?;
    let failed =
        |what: &str, e: &dyn std::fmt::Display| PasswordError::Failed(format!("{what}: {e}"));
    tokio::task::spawn_blocking(move || {
        let mut salt_bytes = [0u8; 16];
        rand::rngs::OsRng
            .try_fill_bytes(&mut salt_bytes)
            .map_err(|e| failed("no randomness", &e))?;
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| failed("salt", &e))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| failed("hash", &e))
    })
    .await
    .map_err(|e| failed("hashing task", &e))?
}

/// Verifies a password. With no stored hash (unknown user) it still does the
/// same work against a fixed hash, so timing does not reveal which emails exist.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, PasswordError> {
    let _slot = slot().await?;
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && known
    })
    .await
    .map_err(|e| PasswordError::Failed(format!("verify task: {e}")))
}

// argon2id hash of a random password nobody knows, with the default parameters.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$x3T8l6t4VYJfJb8pA7b0yYfT7sWZk4Q6m4VJ7m6Qm9c";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashing_beyond_the_bound_waits_briefly_then_answers_503() {
        let slots = Semaphore::new(2);
        let wait = Duration::from_millis(200);
        let a = turn(&slots, wait).await.unwrap();
        let _b = turn(&slots, wait).await.unwrap();
        let started = std::time::Instant::now();
        let err = turn(&slots, wait).await.unwrap_err();
        assert!(started.elapsed() >= wait);
        assert!(matches!(err, PasswordError::Busy));
        drop(a);
        assert!(turn(&slots, wait).await.is_ok(), "a freed turn is taken");
        assert!(
            SLOTS.available_permits() >= 1,
            "the real bound is at least one"
        );
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("correct horse".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse".into(), Some(h)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }
}
