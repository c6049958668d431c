//! `foodapp-operator restore`: checks the dump against its manifest before
//! touching the database, then restores it in one transaction — the public
//! schema is replaced whole, or not at all.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::manifest::{Manifest, manifest_key};
use super::tool::Tool;
use super::{Error, RestoreArgs, StoreArgs, retention, s3};

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub object_key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub restored: bool,
}

/// Streams an object into `pg_restore -d url` (verification's scratch database).
pub async fn pg_restore_into(
    store: &StoreArgs,
    client: &aws_sdk_s3::Client,
    key: &str,
    url: &str,
) -> Result<(), Error> {
    let args = ["--no-owner", "--no-privileges", "--exit-on-error"]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--dbname={url}")])
        .collect::<Vec<_>>();
    let mut pg_restore = Tool::spawn(store, "pg_restore", &args, true, false)?;
    let mut stdin = pg_restore.stdin()?;
    let mut body = s3::get_stream(client, &store.s3_bucket, key).await?;
    while let Some(chunk) = body.try_next().await.map_err(s3::err("GetObject body"))? {
        if stdin.write_all(&chunk).await.is_err() {
            break; // pg_restore stopped reading: its exit status says why
        }
    }
    drop(stdin);
    pg_restore.finish().await
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

pub async fn resolve(args: &RestoreArgs, client: &aws_sdk_s3::Client) -> Result<String, Error> {
    let store = &args.store;
    match &args.object_key {
        Some(key) => Ok(key.clone()),
        None => {
            let keys = s3::list(client, &store.s3_bucket, &store.key_prefix()).await?;
            retention::latest(&keys).ok_or_else(|| {
                Error::NotFound(format!(
                    "no complete backup under s3://{}/{}",
                    store.s3_bucket,
                    store.key_prefix()
                ))
            })
        }
    }
}

pub async fn run(args: &RestoreArgs) -> Result<Outcome, Error> {
    let store = &args.store;
    let client = s3::client(store).await;
    let key = resolve(args, &client).await?;
    let manifest_bytes = s3::get_bytes(&client, &store.s3_bucket, &manifest_key(&key))
        .await
        .map_err(|e| {
            Error::NotFound(format!(
                "no manifest for {key} ({e}): not a complete backup"
            ))
        })?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| Error::Manifest {
            key: key.clone(),
            source: e,
        })?;

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

    // Second pass: dump → pg_restore (to SQL) → psql, one transaction that
    // first replaces the public schema. psql only gets end-of-input (and so
    // commits) when everything upstream succeeded; otherwise it is killed and
    // PostgreSQL rolls the whole restore back.
    let restore_args = [
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--file=-",
    ]
    .map(str::to_owned);
    let mut pg_restore = Tool::spawn(store, "pg_restore", &restore_args, true, true)?;
    let psql_args = [
        "-X".to_owned(),
        "-q".to_owned(),
        "-v".to_owned(),
        "ON_ERROR_STOP=1".to_owned(),
        "--single-transaction".to_owned(),
        "--file=-".to_owned(),
        format!("--dbname={}", store.database_url),
    ];
    let mut psql = Tool::spawn(store, "psql", &psql_args, true, false)?;
    let mut psql_in = psql.stdin()?;
    let mut restore_out = pg_restore.stdout()?;
    let mut restore_in = pg_restore.stdin()?;

    let feed = async {
        psql_in
            .write_all(b"DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n")
            .await
            .map_err(|e| Error::Io("writing to psql", e))?;
        // Copies without closing psql's input: that is left to the end.
        tokio::io::copy(&mut restore_out, &mut psql_in)
            .await
            .map_err(|e| Error::Io("piping pg_restore into psql", e))?;
        Ok::<_, Error>(())
    };
    let download = async {
        let mut body = s3::get_stream(&client, &store.s3_bucket, &key).await?;
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
        // Never let psql see end-of-input: killed, it commits nothing.
        psql.kill().await;
        return Err(e);
    }
    drop(psql_in);
    psql.finish().await?;
    tracing::info!(key, "restore committed");
    Ok(Outcome {
        object_key: key,
        size_bytes: size,
        sha256,
        restored: true,
    })
}
