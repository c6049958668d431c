//! Connection pool, embedded migrations and the schema-version check that
//! `serve` and `/readyz` rely on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseArgs;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub async fn connect(args: &DatabaseArgs) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        // No ping before every query (a round trip each): a broken connection
        // fails its query, is discarded, and /readyz reports the outage.
        .test_before_acquire(false)
        // Once one connection was found lost, every connection older than
        // that is replaced as it is taken: the server ended them together
        // (a restart, or a restore's switch ending every session), and each
        // would otherwise fail one more request.
        .before_acquire(|_, meta| Box::pin(async move { Ok(!opened_before_loss(meta.age)) }))
        .acquire_timeout(Duration::from_secs(5))
        .connect(&args.database_url)
        .await
}

/// When a connection was last found lost (ended by the server, or broken),
/// in milliseconds since the Unix epoch; 0: never.
static LOST_AT_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A query found its connection lost: the pool's older connections are
/// suspect from now on.
pub fn connection_lost() {
    LOST_AT_MS.store(now_ms(), Ordering::Relaxed);
}

/// Whether a connection of this age was opened before the last loss.
pub fn opened_before_loss(age: Duration) -> bool {
    let lost = LOST_AT_MS.load(Ordering::Relaxed);
    let opened = now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
    lost != 0 && opened <= lost
}

/// The newest migration this build embeds.
pub fn expected_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration applied to the database; 0 when none is.
pub async fn applied_version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is at migration {applied} but this build needs {expected}: run `foodapp-api migrate` first"
    )]
    Behind { applied: i64, expected: i64 },
    #[error("cannot read the schema version: {0}")]
    Database(#[from] sqlx::Error),
}

/// The schema this build can serve: at its newest migration, or ahead of it.
/// Ahead is normal during a rollout: the new release's migration Job ran
/// (migrations only add, so the old pods keep working) and the old pods
/// must keep serving until the new ones are ready. Behind is never served.
/// Returns the applied version.
pub async fn check_schema(pool: &PgPool) -> Result<i64, SchemaError> {
    let applied = applied_version(pool).await?;
    let expected = expected_version();
    if applied < expected {
        return Err(SchemaError::Behind { applied, expected });
    }
    Ok(applied)
}

/// Runs `attempt` again, up to three times in all, while it fails with a
/// transient database error worth retrying at once (a deadlock, a
/// serialization failure, a connection lost mid-way), after a short jittered
/// pause. No pooled connection within the acquire timeout is not retried:
/// the database is away, and the caller gets its 503 now. Only for work that is safe to
/// repeat: a transaction that was rolled back, or one idempotent by key.
/// The last error stands (a 503 with Retry-After).
pub async fn retry_transient<T, E, F, Fut>(
    mut attempt: F,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    const ATTEMPTS: u32 = 3;
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if retryable(&e) && tries < ATTEMPTS => {
                let pause = 20 * u64::from(tries) + u64::from(rand::random::<u8>() % 30);
                tracing::warn!(error = %e, tries, "transient database error; retrying");
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            result => return result,
        }
    }
}
