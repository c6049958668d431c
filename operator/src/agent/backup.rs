//! `foodapp-operator backup`: `pg_dump -Fc` streamed straight into a
//! multipart upload (8 MiB parts in memory, nothing on disk), size and
//! SHA-256 computed on the fly, then verification on a throwaway server,
//! the manifest, and retention. Any failure aborts the upload: no partial
//! object appears; a dump that fails verification is deleted and gets no
//! manifest, so it is never a restore candidate nor counted by retention.

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::manifest::{Manifest, manifest_key};
use super::tool::Tool;
use super::{BackupArgs, Error, StoreArgs, db, retention, s3, timestamp};

/// What one backup produced; printed as the agent's JSON line.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub object_key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub verified: bool,
    #[serde(skip)]
    pub deleted: Vec<String>,
}

pub async fn tool_version(store: &StoreArgs, tool: &str) -> Result<String, Error> {
    let out = Command::new(store.tool(tool))
        .arg("--version")
        .output()
        .await
        .map_err(|e| Error::Io("running the PostgreSQL client tools", e))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn major(version: &str) -> Option<u32> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .find(|part| !part.is_empty())
        .and_then(|m| m.parse().ok())
}

/// A pg_dump older than the server cannot dump it reliably (and refuses to).
pub fn check_not_older(pg_dump_version: &str, server_version: &str) -> Result<(), Error> {
    let tool = pg_dump_version.rsplit(' ').next().and_then(major);
    match (tool, major(server_version)) {
        (Some(t), Some(s)) if t < s => Err(Error::Tool {
            tool: "pg_dump".into(),
            status: "not run".into(),
            stderr: format!(
                "pg_dump {t} is older than the PostgreSQL {s} server; use an agent image with client tools {s} or newer"
            ),
        }),
        _ => Ok(()),
    }
}

/// Reads `PART_SIZE` chunks (the last one shorter) and hands them over; a
/// channel of one keeps at most three parts in memory.
async fn read_parts<R: AsyncRead + Unpin>(
    mut from: R,
    to: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    loop {
        let mut buf = BytesMut::with_capacity(s3::PART_SIZE);
        while buf.len() < s3::PART_SIZE {
            if from.read_buf(&mut buf).await? == 0 {
                if !buf.is_empty() {
                    let _ = to.send(buf.freeze()).await;
                }
                return Ok(());
            }
        }
        if to.send(buf.freeze()).await.is_err() {
            return Ok(());
        }
    }
}

/// Streams `pg_dump` into `key`; returns size and SHA-256.
async fn dump_and_upload(
    store: &StoreArgs,
    client: &aws_sdk_s3::Client,
    key: &str,
    snapshot: &str,
) -> Result<(u64, String), Error> {
    let args = [
        "--format=custom".to_owned(),
        "--no-owner".to_owned(),
        "--no-privileges".to_owned(),
        format!("--snapshot={snapshot}"),
    ];
    let mut pg_dump = Tool::spawn(
        store,
        "pg_dump",
        &args,
        Some(&store.database_url),
        false,
        true,
    )?;
    let stdout = pg_dump.stdout()?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    let reader = tokio::spawn(read_parts(stdout, tx));

    let mut upload = s3::Upload::start(client, &store.s3_bucket, key).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let uploaded: Result<(), Error> = async {
        while let Some(part) = rx.recv().await {
            hasher.update(&part);
            size += part.len() as u64;
            upload.part(part).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = uploaded {
        pg_dump.kill().await;
        upload.abort().await;
        return Err(e);
    }
    let read = reader
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let dumped = pg_dump.finish().await;
    let checked = read
        .map_err(|e| Error::Io("reading pg_dump", e))
        .and(dumped)
        .and_then(|()| match size {
            0 => Err(Error::Tool {
                tool: "pg_dump".into(),
                status: "no output".into(),
                stderr: String::new(),
            }),
            _ => Ok(()),
        });
    if let Err(e) = checked {
        upload.abort().await;
        return Err(e);
    }
    upload.complete().await?;
    Ok((size, hex::encode(hasher.finalize())))
}

pub async fn run(args: &BackupArgs) -> Result<Outcome, Error> {
    let store = &args.store;
    let started = Utc::now();
    let key = format!(
        "{}{}{}",
        store.key_prefix(),
        timestamp(started),
        super::manifest::DUMP_SUFFIX
    );
    let client = s3::client(store).await;
    if args.create_bucket {
        s3::ensure_bucket(&client, &store.s3_bucket).await?;
    }
    let server_major = db::server_major(&store.database_url).await?;
    let tools = store.with_tools_for(server_major)?;
    let store = &tools;
    let snapshot = db::snapshot(&store.database_url).await?;
    let pg_dump_version = tool_version(store, "pg_dump").await?;
    check_not_older(&pg_dump_version, &snapshot.server_version)?;
    let result = dump_and_upload(store, &client, &key, &snapshot.id).await;
    let (counts, server_version, schema_version) = (
        snapshot.counts.clone(),
        snapshot.server_version.clone(),
        snapshot.schema_version,
    );
    snapshot.release().await?;
    let (size, sha256) = result?;
    let verify = args.verify && !args.no_verify;
    let mut manifest = Manifest {
        format: 1,
        object_key: key.clone(),
        size_bytes: size,
        sha256: sha256.clone(),
        created_at: started.to_rfc3339(),
        food_app: store.foodapp.clone(),
        namespace: store.namespace.clone(),
        postgres_version: server_version,
        pg_dump_version,
        schema_version,
        tables: counts,
        verified: false,
    };
    if verify {
        let checked = match args.verify_database_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => verify_restorable(store, &client, &manifest, url).await,
            None => Err(Error::Verify(
                "no verification server: set VERIFY_DATABASE_URL to a throwaway PostgreSQL (never the production one), or pass --no-verify".into(),
            )),
        };
        if let Err(e) = checked {
            // Never a restore candidate: the dump goes, and gets no manifest.
            if let Err(d) = s3::delete(&client, &store.s3_bucket, &key).await {
                tracing::warn!(key, error = %d, "could not delete the unverified dump; retention will");
            }
            return Err(e);
        }
        manifest.verified = true;
        tracing::info!(
            key,
            "backup verified: restored on the verification server, row counts match"
        );
    }
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Manifest {
        key: key.clone(),
        source: e,
    })?;
    // Written last: a backup exists once its manifest does.
    s3::put(
        &client,
        &store.s3_bucket,
        &manifest_key(&key),
        body,
        "application/json",
    )
    .await?;
    tracing::info!(key, size, verified = verify, "backup stored");
    let deleted = match args.keep_last {
        Some(keep) => retention::apply(&client, store, keep).await?,
        None => Vec::new(),
    };
    Ok(Outcome {
        object_key: key,
        size_bytes: size,
        sha256,
        verified: verify,
        deleted,
    })
}

/// Restores the uploaded object (as stored, read back from the bucket)
/// into a new database on the verification server — through the same path
/// as a real restore — and compares row counts; the database is dropped
/// whatever happens. The production server is never touched.
async fn verify_restorable(
    store: &StoreArgs,
    client: &aws_sdk_s3::Client,
    manifest: &Manifest,
    verify_url: &str,
) -> Result<(), Error> {
    let scratch = format!(
        "foodapp_verify_{}",
        &super::super::build::short_hash(&manifest.object_key)
    );
    let major = db::server_major(verify_url).await?;
    db::create_database(verify_url, &scratch).await?;
    let result = async {
        let url = db::with_database(verify_url, &scratch)?;
        super::restore::restore_sql(store, client, manifest, &url, major, &Default::default())
            .await?;
        let mut conn = db::connect(&url).await?;
        let counts = db::row_counts(&mut conn).await?;
        conn.close().await.ok();
        if counts != manifest.tables {
            let differences: Vec<String> = manifest
                .tables
                .iter()
                .filter(|(t, n)| counts.get(*t) != Some(n))
                .map(|(t, n)| {
                    format!(
                        "{t}: {} rows restored, {n} dumped",
                        counts.get(t).copied().unwrap_or(0)
                    )
                })
                .collect();
            return Err(Error::Verify(differences.join("; ")));
        }
        Ok(())
    }
    .await;
    db::drop_database(verify_url, &scratch).await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_pg_dump_is_refused_before_dumping() {
        assert!(
            check_not_older(
                "pg_dump (PostgreSQL) 17.2",
                "16.4 (Debian 16.4-1.pgdg120+2)"
            )
            .is_ok()
        );
        assert!(
            check_not_older(
                "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)",
                "15.18"
            )
            .is_ok()
        );
        let err = check_not_older("pg_dump (PostgreSQL) 15.18", "16.4").unwrap_err();
        assert!(
            err.to_string()
                .contains("older than the PostgreSQL 16 server"),
            "{err}"
        );
    }
}
