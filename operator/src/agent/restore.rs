//! `foodapp-operator restore`: checks the dump against its manifest before
//! touching the database, then restores it in one transaction — the public
//! schema is replaced whole, or not at all. The transaction is opened and
//! committed by the agent itself: COMMIT is sent only after the whole object
//! was read, its checksum matched and pg_restore exited 0. If the agent dies
//! anywhere before, psql dies with it (or reads end of input without a
//! COMMIT) and PostgreSQL rolls everything back.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::manifest::{DUMP_SUFFIX, Manifest, manifest_key};
use super::retention::Backup;
use super::tool::Tool;
use super::{Error, RestoreArgs, StoreArgs, anonymize, db, retention, s3};

/// What psql runs before the restored SQL. Sessions holding locks on the
/// schema being replaced (a running pg_dump, a stuck transaction) are ended
/// so that DROP SCHEMA does not wait on them; idle sessions (a running API's
/// pool) are left alone. Any lock wait is still bounded: the restore fails,
/// rolled back, rather than hang.
const BEGIN: &str = "\\set ON_ERROR_STOP 1
DO $$
DECLARE holder int;
BEGIN
  FOR holder IN SELECT DISTINCT l.pid
      FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND l.pid <> pg_backend_pid()
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  LOOP
    BEGIN
      PERFORM pg_terminate_backend(holder);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE NOTICE 'cannot end session %: the lock timeout bounds the wait', holder;
    END;
  END LOOP;
END $$;
BEGIN;
SET LOCAL lock_timeout = '60s';
";

/// Replaces the schema; after what checks the database first.
const REPLACE_SCHEMA: &str = "DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public;
";

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub object_key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub restored: bool,
    /// Rows per table matched the manifest after the commit (--check-counts).
    pub verified: bool,
    /// What the data says about people was replaced (--anonymize).
    pub anonymized: bool,
}

/// What a restore adds to its transaction: checks before the schema is
/// replaced, and edits after the data is in (both inside the transaction).
#[derive(Debug, Default, Clone)]
pub struct Edits {
    pub before: String,
    pub after: String,
}

impl Edits {
    /// The edits `args` asks for (`--clone`, `--anonymize`).
    pub fn of(args: &RestoreArgs) -> Result<Edits, Error> {
        let mut edits = Edits::default();
        if args.anonymize {
            edits.after.push_str(&anonymize::anonymize_sql());
        }
        if args.clone {
            edits.before.push_str(anonymize::REQUIRE_NO_ORDERS);
            let hash = match (&args.clone_admin_email, &args.clone_admin_password) {
                (Some(email), Some(password)) if !email.trim().is_empty() => Some((
                    email.as_str(),
                    anonymize::hash_password(password).map_err(Error::Verify)?,
                )),
                _ => None,
            };
            edits.after.push_str(&anonymize::clone_sql(
                hash.as_ref().map(|(e, h)| (*e, h.as_str())),
            ));
        }
        Ok(edits)
    }
}

/// Size and SHA-256 of an object, read through once.
async fn digest(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(u64, String), Error> {
    let mut body = s3::get_stream(client, bucket, key).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.try_next().await.map_err(s3::err("GetObject body"))? {
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// The backup a restore names: `--object-key` must be one of this
/// FoodApp's own dumps (directly under its prefix, with a manifest naming
/// it); `--latest` is the newest of them.
pub async fn resolve(args: &RestoreArgs, client: &aws_sdk_s3::Client) -> Result<Backup, Error> {
    let store = &args.store;
    let prefix = store.key_prefix();
    let owner = format!("{}/{}", store.namespace, store.foodapp);
    let Some(key) = &args.object_key else {
        let (backups, _) = retention::backups(client, store).await?;
        return retention::latest(&backups).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "no complete backup of {owner} under s3://{}/{prefix}",
                store.s3_bucket
            ))
        });
    };
    if !super::is_own_dump(&prefix, key) {
        return Err(Error::NotFound(format!(
            "{key} is not a backup of {owner}: its backups are {prefix}<time>{DUMP_SUFFIX}"
        )));
    }
    let bytes = s3::get_bytes(client, &store.s3_bucket, &manifest_key(key))
        .await
        .map_err(|e| {
            Error::NotFound(format!(
                "no manifest for {key} ({e}): not a complete backup"
            ))
        })?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
        key: key.clone(),
        source: e,
    })?;
    if !manifest.belongs_to(&store.namespace, &store.foodapp, key) {
        return Err(Error::NotFound(format!(
            "the manifest of {key} names {}/{} and {}, not {owner} and this key",
            manifest.namespace, manifest.food_app, manifest.object_key
        )));
    }
    Ok(Backup {
        dump: key.clone(),
        manifest,
    })
}

/// The major of the pg_dump that wrote a backup: its archive needs a
/// pg_restore at least as new.
fn dump_major(manifest: &Manifest) -> u32 {
    manifest
        .pg_dump_version
        .rsplit(' ')
        .next()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Creates `database` on the server of `url` unless it exists; the URL of it.
async fn ensure_database(url: &str, database: &str) -> Result<String, Error> {
    let mut conn = db::connect(url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted: String = sqlx::query_scalar("SELECT quote_ident($1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&mut conn)
            .await?;
        tracing::info!(database, "created the database to restore into");
    }
    Ok(db::with_database(url, database)?)
}

/// The restored database holds exactly the rows the manifest counted.
async fn check_counts(url: &str, manifest: &Manifest) -> Result<(), Error> {
    let mut conn = db::connect(url).await?;
    let counts = db::row_counts(&mut conn).await?;
    let differ: Vec<String> = manifest
        .tables
        .iter()
        .filter(|(table, n)| counts.get(*table) != Some(*n))
        .map(|(table, n)| {
            format!(
                "{table}: {} rows, the backup has {n}",
                counts.get(table).copied().unwrap_or(0)
            )
        })
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(Error::Verify(format!(
            "the restored database differs from the backup: {}",
            differ.join("; ")
        )))
    }
}

pub async fn run(args: &RestoreArgs) -> Result<Outcome, Error> {
    let edits = Edits::of(args)?;
    let client = s3::client(&args.store).await;
    let Backup {
        dump: key,
        manifest,
    } = resolve(args, &client).await?;
    let target = match &args.into_database {
        Some(database) => ensure_database(&args.store.database_url, database).await?,
        None => args.store.database_url.clone(),
    };
    let server_major = db::server_major(&target).await?;
    let store = args
        .store
        .with_tools_for(server_major.max(dump_major(&manifest)))?;

    // First pass: the object must be exactly what was uploaded, before the
    // database is touched at all.
    let (size, sha256) = digest(&client, &store.s3_bucket, &key).await?;
    if sha256 != manifest.sha256 || size != manifest.size_bytes {
        return Err(Error::Checksum {
            key,
            expected: manifest.sha256,
            actual: sha256,
        });
    }
    restore_sql(&store, &client, &manifest, &target, server_major, &edits).await?;
    tracing::info!(key, "restore committed");
    if args.check_counts {
        check_counts(&target, &manifest).await?;
    }
    Ok(Outcome {
        object_key: key,
        size_bytes: size,
        sha256,
        restored: true,
        verified: args.check_counts,
        anonymized: args.anonymize,
    })
}

/// Restores the backup `manifest` describes into `target_url`, in one
/// transaction the agent opens and commits itself: dump → pg_restore (to
/// SQL, without settings a `server_major` server refuses) → psql. COMMIT is
/// written only after the whole object was read, its checksum matched and
/// pg_restore exited 0; on any failure psql is killed first, and if the agent
/// dies, psql dies with it or reads end of input with the transaction open.
/// Verification restores through the same path. `edits` run in the same
/// transaction: their checks before the schema is replaced, their changes
/// before COMMIT.
pub async fn restore_sql(
    store: &StoreArgs,
    client: &aws_sdk_s3::Client,
    manifest: &Manifest,
    target_url: &str,
    server_major: u32,
    edits: &Edits,
) -> Result<(), Error> {
    let key = &manifest.object_key;
    let restore_args = [
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--file=-",
    ]
    .map(str::to_owned);
    let mut pg_restore = Tool::spawn(store, "pg_restore", &restore_args, None, true, true)?;
    let psql_args = [
        "-X".to_owned(),
        "-q".to_owned(),
        "-v".to_owned(),
        "ON_ERROR_STOP=1".to_owned(),
        "--file=-".to_owned(),
    ];
    let mut psql = Tool::spawn(store, "psql", &psql_args, Some(target_url), true, false)?;
    let mut psql_in = psql.stdin()?;
    let restore_out = pg_restore.stdout()?;
    let mut restore_in = pg_restore.stdin()?;
    let unsupported = super::tool::unsupported_lines(server_major);

    let feed = async {
        for sql in [BEGIN, &edits.before, REPLACE_SCHEMA] {
            psql_in
                .write_all(sql.as_bytes())
                .await
                .map_err(|e| Error::Io("writing to psql", e))?;
        }
        super::tool::copy_sql(restore_out, &mut psql_in, &unsupported)
            .await
            .map_err(|e| Error::Io("piping pg_restore into psql", e))?;
        Ok::<_, Error>(())
    };
    let download = async {
        let mut body = s3::get_stream(client, &store.s3_bucket, key).await?;
        let mut hasher = Sha256::new();
        // The last chunk is held back until the checksum of the whole
        // object is known, so a changed object never completes a restore.
        let mut held: Option<Bytes> = None;
        while let Some(chunk) = body.try_next().await.map_err(s3::err("GetObject body"))? {
            hasher.update(&chunk);
            if let Some(previous) = held.replace(chunk) {
                restore_in
                    .write_all(&previous)
                    .await
                    .map_err(|e| Error::Io("writing to pg_restore", e))?;
            }
        }
        let actual = hex::encode(hasher.finalize());
        if actual != manifest.sha256 {
            return Err(Error::Checksum {
                key: key.clone(),
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        if let Some(last) = held {
            restore_in
                .write_all(&last)
                .await
                .map_err(|e| Error::Io("writing to pg_restore", e))?;
        }
        drop(restore_in);
        Ok(())
    };
    let (fed, downloaded) = tokio::join!(feed, download);
    let restored_sql = match downloaded {
        Err(e) => {
            pg_restore.kill().await;
            Err(e)
        }
        Ok(()) => pg_restore.finish().await.and(fed),
    };
    if let Err(e) = restored_sql {
        // Stopped before any COMMIT: the transaction is rolled back.
        return Err(psql.stop(e).await);
    }
    psql_in
        .write_all(format!("{}COMMIT;\n", edits.after).as_bytes())
        .await
        .map_err(|e| Error::Io("writing to psql", e))?;
    drop(psql_in);
    psql.finish().await
}
