//! `foodapp-operator restore`: checks the dump against its manifest before
//! touching the database, then restores it in one transaction — the public
//! schema is replaced whole, or not at all.

use std::process::Stdio;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use super::manifest::{Manifest, manifest_key};
use super::{Error, RestoreArgs, StoreArgs, retention, s3};

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub object_key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub restored: bool,
}

async fn object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<aws_sdk_s3::primitives::ByteStream, Error> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(s3::err("GetObject"))?;
    Ok(out.body)
}

fn spawn(store: &StoreArgs, tool: &str, args: &[String], stdout: bool) -> Result<Child, Error> {
    Command::new(store.tool(tool))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Io("starting the PostgreSQL client tools", e))
}

async fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text).await;
    }
    text.trim().to_owned()
}

async fn finish(mut child: Child, tool: &str) -> Result<(), Error> {
    let stderr_task = child.stderr.take().map(|mut e| {
        tokio::spawn(async move {
            let mut t = String::new();
            let _ = e.read_to_string(&mut t).await;
            t
        })
    });
    let status = child
        .wait()
        .await
        .map_err(|e| Error::Io("waiting for the PostgreSQL client tools", e))?;
    let stderr = match stderr_task {
        Some(t) => t.await.unwrap_or_default(),
        None => String::new(),
    };
    if status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            tool: tool.to_owned(),
            status: status.to_string(),
            stderr: stderr.trim().to_owned(),
        })
    }
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
    let mut child = spawn(store, "pg_restore", &args, false)?;
    let mut stdin = child.stdin.take().ok_or(Error::Io(
        "pg_restore stdin",
        std::io::ErrorKind::BrokenPipe.into(),
    ))?;
    let mut body = object(client, &store.s3_bucket, key).await?;
    while let Some(chunk) = body.try_next().await.map_err(s3::err("GetObject body"))? {
        if stdin.write_all(&chunk).await.is_err() {
            break; // pg_restore stopped reading: its exit status says why
        }
    }
    drop(stdin);
    finish(child, "pg_restore").await
}

/// Size and SHA-256 of an object, read through once.
async fn digest(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(u64, String), Error> {
    let mut body = object(client, bucket, key).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.try_next().await.map_err(s3::err("GetObject body"))? {
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

async fn copy<R: AsyncRead + Unpin>(mut from: R, to: &mut ChildStdin) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
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
    let mut pg_restore = spawn(store, "pg_restore", &restore_args, true)?;
    let psql_args = [
        "-X".to_owned(),
        "-q".to_owned(),
        "-v".to_owned(),
        "ON_ERROR_STOP=1".to_owned(),
        "--single-transaction".to_owned(),
        "--file=-".to_owned(),
        format!("--dbname={}", store.database_url),
    ];
    let mut psql = spawn(store, "psql", &psql_args, false)?;
    let mut psql_in = psql.stdin.take().ok_or(Error::Io(
        "psql stdin",
        std::io::ErrorKind::BrokenPipe.into(),
    ))?;
    let restore_out = pg_restore.stdout.take().ok_or(Error::Io(
        "pg_restore stdout",
        std::io::ErrorKind::BrokenPipe.into(),
    ))?;
    let mut restore_in = pg_restore.stdin.take().ok_or(Error::Io(
        "pg_restore stdin",
        std::io::ErrorKind::BrokenPipe.into(),
    ))?;

    let feed = async {
        psql_in
            .write_all(b"DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n")
            .await
            .map_err(|e| Error::Io("writing to psql", e))?;
        copy(restore_out, &mut psql_in)
            .await
            .map_err(|e| Error::Io("piping pg_restore into psql", e))?;
        Ok::<_, Error>(())
    };
    let download = async {
        let mut body = object(&client, &store.s3_bucket, &key).await?;
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
    let restored_sql = match (downloaded, fed) {
        (Err(e), _) => Err(e),
        (Ok(()), fed) => match pg_restore.wait().await {
            Ok(status) if status.success() => fed,
            Ok(status) => Err(Error::Tool {
                tool: "pg_restore".into(),
                status: status.to_string(),
                stderr: stderr_of(&mut pg_restore).await,
            }),
            Err(e) => Err(Error::Io("waiting for pg_restore", e)),
        },
    };
    if let Err(e) = restored_sql {
        // Never let psql see end-of-input: killed, it commits nothing.
        let _ = psql.kill().await;
        let _ = pg_restore.kill().await;
        return Err(e);
    }
    drop(psql_in);
    finish(psql, "psql").await?;
    tracing::info!(key, "restore committed");
    Ok(Outcome {
        object_key: key,
        size_bytes: size,
        sha256,
        restored: true,
    })
}
