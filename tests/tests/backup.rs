//! The backup/restore agent, run as a real process against PostgreSQL and
//! s3s-fs: round trip, retention, failures that must leave no partial object
//! and no half-restored database, both SDK checksum settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::primitives::ByteStream;
use foodapp_e2e::{Database, agent, contents, env, keys, new_bucket, s3, success};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Menu, customers and orders: the API's own schema and code paths.
async fn seed(db: &Database) {
    foodapp_api::seed::seed_demo(&db.pool, false).await.unwrap();
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles)
         SELECT gen_random_uuid(), 'c' || g || '@e2e.io', 'C' || g, 'x', '{customer}' FROM generate_series(1, 20) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "SELECT place_order(gen_random_uuid(), u.id, 'k' || g, '\\x00', ARRAY[m.id], ARRAY[1], now(),
                            gen_random_uuid(), 'cash', 'pay_x', false)
         FROM generate_series(1, 40) g
         JOIN LATERAL (SELECT id FROM users ORDER BY id OFFSET g % 20 LIMIT 1) u ON true
         JOIN LATERAL (SELECT id FROM menu_items WHERE stock IS NULL ORDER BY id OFFSET g % 5 LIMIT 1) m ON true",
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

struct Setup {
    db: Database,
    endpoint: String,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

async fn setup() -> Setup {
    let db = Database::new().await;
    seed(&db).await;
    let endpoint = env("S3_ENDPOINT");
    let s3 = s3(&endpoint);
    let bucket = new_bucket(&s3).await;
    Setup {
        db,
        endpoint,
        s3,
        bucket,
    }
}

impl Setup {
    async fn object(&self, key: &str) -> Vec<u8> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        out.body.collect().await.unwrap().to_vec()
    }

    async fn agent(&self, args: &[&str]) -> std::process::Output {
        agent(&self.db.url, &self.endpoint, &self.bucket, args, &[]).await
    }
}

#[tokio::test]
async fn a_restore_brings_back_every_table_exactly_as_backed_up() {
    let s = setup().await;
    let before = contents(&s.db.pool).await;
    let out = success(&s.agent(&["backup"]).await);
    let key = out["objectKey"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("backups/e2e/shop/") && key.ends_with(".dump"),
        "{key}"
    );
    assert_eq!(out["verified"], true);
    assert_eq!(out["sha256"].as_str().unwrap().len(), 64);
    assert!(out["sizeBytes"].as_u64().unwrap() > 1000);

    let manifest_key = key.replace(".dump", ".manifest.json");
    let manifest: Value = serde_json::from_slice(&s.object(&manifest_key).await).unwrap();
    assert_eq!(manifest["sha256"], out["sha256"]);
    assert_eq!(manifest["tables"]["public.orders"], 40);
    assert_eq!(
        manifest["schemaVersion"],
        foodapp_api::db::expected_version()
    );
    assert!(
        manifest["postgresVersion"]
            .as_str()
            .unwrap()
            .starts_with("15")
    );

    // Life goes on: data changes and disappears.
    sqlx::query("DELETE FROM order_items")
        .execute(&s.db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM orders WHERE total_cents > 900")
        .execute(&s.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE menu_items SET price_cents = price_cents * 2")
        .execute(&s.db.pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE stray (x int)")
        .execute(&s.db.pool)
        .await
        .unwrap();
    assert_ne!(contents(&s.db.pool).await, before);

    let restored = success(&s.agent(&["restore", "--object-key", &key]).await);
    assert_eq!(restored["restored"], true);
    assert_eq!(
        contents(&s.db.pool).await,
        before,
        "every table's content is back, and nothing else"
    );

    // --latest finds the same backup.
    sqlx::query("DELETE FROM refunds")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let latest = success(&s.agent(&["restore", "--latest"]).await);
    assert_eq!(latest["objectKey"], key.as_str());
}

#[tokio::test]
async fn retention_keeps_exactly_the_newest_backups_and_their_manifests() {
    let s = setup().await;
    let mut made = Vec::new();
    for _ in 0..4 {
        let out = success(
            &s.agent(&["backup", "--no-verify", "--keep-last", "2"])
                .await,
        );
        made.push(out["objectKey"].as_str().unwrap().to_owned());
    }
    let mut expected: Vec<String> = made[2..]
        .iter()
        .flat_map(|k| [k.clone(), k.replace(".dump", ".manifest.json")])
        .collect();
    expected.sort();
    assert_eq!(keys(&s.s3, &s.bucket).await, expected);
}

#[tokio::test]
async fn both_checksum_settings_of_the_sdk_work() {
    let s = setup().await;
    for setting in ["when-required", "when-supported"] {
        let out = agent(
            &s.db.url,
            &s.endpoint,
            &s.bucket,
            &["backup"],
            &[("S3_CHECKSUMS", setting)],
        )
        .await;
        let out = success(&out);
        let key = out["objectKey"].as_str().unwrap();
        success(
            &agent(
                &s.db.url,
                &s.endpoint,
                &s.bucket,
                &["restore", "--object-key", key],
                &[("S3_CHECKSUMS", setting)],
            )
            .await,
        );
    }
}

#[tokio::test]
async fn a_corrupted_object_is_refused_before_the_database_is_touched() {
    let s = setup().await;
    let out = success(&s.agent(&["backup", "--no-verify"]).await);
    let key = out["objectKey"].as_str().unwrap().to_owned();
    let mut bytes = s.object(&key).await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    bytes[middle + 1] ^= 0x55;
    s.s3.put_object()
        .bucket(&s.bucket)
        .key(&key)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .unwrap();

    sqlx::query("UPDATE menu_items SET price_cents = 1")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let now = contents(&s.db.pool).await;
    let refused = s.agent(&["restore", "--object-key", &key]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(contents(&s.db.pool).await, now, "the database is unchanged");
}

#[tokio::test]
async fn a_dump_that_breaks_half_way_through_restoring_leaves_the_database_unchanged() {
    let s = setup().await;
    let out = success(&s.agent(&["backup", "--no-verify"]).await);
    let key = out["objectKey"].as_str().unwrap().to_owned();
    let bytes = s.object(&key).await;
    // A truncated dump with a manifest that matches it: the checksum passes,
    // pg_restore fails part-way.
    let cut = bytes[..bytes.len() * 6 / 10].to_vec();
    let broken_key = key.replace(".dump", "-broken.dump");
    let manifest_key = key.replace(".dump", ".manifest.json");
    let mut manifest: Value = serde_json::from_slice(&s.object(&manifest_key).await).unwrap();
    manifest["sha256"] = Value::String(hex::encode(Sha256::digest(&cut)));
    manifest["sizeBytes"] = Value::from(cut.len() as u64);
    s.s3.put_object()
        .bucket(&s.bucket)
        .key(&broken_key)
        .body(ByteStream::from(cut))
        .send()
        .await
        .unwrap();
    s.s3.put_object()
        .bucket(&s.bucket)
        .key(broken_key.replace(".dump", ".manifest.json"))
        .body(ByteStream::from(serde_json::to_vec(&manifest).unwrap()))
        .send()
        .await
        .unwrap();

    sqlx::query("DELETE FROM orders WHERE total_cents > 900")
        .execute(&s.db.pool)
        .await
        .ok();
    let now = contents(&s.db.pool).await;
    let failed = s.agent(&["restore", "--object-key", &broken_key]).await;
    assert!(!failed.status.success(), "a truncated dump cannot restore");
    assert_eq!(contents(&s.db.pool).await, now, "all or nothing: nothing");
}

/// A TCP proxy that forwards until `limit` bytes went upstream, then cuts
/// every connection and refuses new ones: S3 becoming unreachable mid-upload.
async fn cutting_proxy(upstream: SocketAddr, limit: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut cut = cut_rx.clone();
        loop {
            tokio::select! {
                _ = cut.changed() => return, // dropping the listener refuses new connections
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { return };
                    let (sent, cut_tx, mut cut_rx) = (sent.clone(), cut_tx.clone(), cut_rx.clone());
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                        let (mut cr, mut cw) = client.split();
                        let (mut sr, mut sw) = server.split();
                        let up = async {
                            let mut buf = vec![0u8; 64 * 1024];
                            loop {
                                let n = cr.read(&mut buf).await.unwrap_or(0);
                                if n == 0 || sent.fetch_add(n, Ordering::SeqCst) + n > limit {
                                    let _ = cut_tx.send(true);
                                    return;
                                }
                                if sw.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        };
                        let down = tokio::io::copy(&mut sr, &mut cw);
                        tokio::select! {
                            _ = up => {}
                            _ = down => {}
                            _ = cut_rx.changed() => {}
                        }
                    });
                }
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_lost_mid_upload_fails_the_backup_and_leaves_no_object() {
    let s = setup().await;
    let earlier = success(&s.agent(&["backup", "--no-verify"]).await);
    // Make the dump span several 8 MiB parts: incompressible rows.
    sqlx::query(
        "CREATE TABLE bulk AS SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text) AS v
         FROM generate_series(1, 300000) g",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    let upstream: SocketAddr = s.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = cutting_proxy(upstream, 10 * 1024 * 1024).await;
    let out = agent(
        &s.db.url,
        &format!("http://{proxy}"),
        &s.bucket,
        &["backup", "--no-verify"],
        &[("AWS_MAX_ATTEMPTS", "2")],
    )
    .await;
    assert!(!out.status.success(), "the backup must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UploadPart") || stderr.contains("S3"),
        "{stderr}"
    );

    let earlier_key = earlier["objectKey"].as_str().unwrap();
    let left = keys(&s.s3, &s.bucket).await;
    assert_eq!(
        left,
        vec![
            earlier_key.to_owned(),
            earlier_key.replace(".dump", ".manifest.json")
        ],
        "no partial object"
    );
    success(&s.agent(&["restore", "--object-key", earlier_key]).await);
}

#[tokio::test]
async fn a_failing_pg_dump_aborts_the_upload() {
    let s = setup().await;
    sqlx::query("CREATE TABLE bulk AS SELECT g, md5(g::text) || md5(random()::text) AS v FROM generate_series(1, 300000) g")
        .execute(&s.db.pool)
        .await
        .unwrap();
    // A pg_dump that dies after 9 MB: one part is uploaded before it fails.
    let dir = std::env::temp_dir().join(format!("failing-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("pg_dump");
    std::fs::write(
        &script,
        "#!/bin/sh\npg_dump \"$@\" | head -c 9000000\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = agent(
        &s.db.url,
        &s.endpoint,
        &s.bucket,
        &["backup", "--no-verify"],
        &[("PG_BIN", dir.to_str().unwrap())],
    )
    .await;
    std::fs::remove_dir_all(&dir).ok();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_dump failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(keys(&s.s3, &s.bucket).await.is_empty(), "no object");
    // s3s-fs keeps an upload's parts as files beside the buckets until it
    // is completed or aborted.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let aborted = stderr
        .lines()
        .find(|l| l.contains("multipart upload aborted"))
        .expect("the agent aborted the upload");
    let log: Value = serde_json::from_str(aborted).unwrap();
    assert!(
        log["parts"].as_u64().unwrap() >= 1,
        "a part had been uploaded before pg_dump failed"
    );
    let id = log["upload_id"].as_str().unwrap();
    let store = std::path::Path::new(&env("FOODAPP_RUN_DIR")).join("s3");
    let leftovers: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(id))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the aborted upload left {leftovers:?}"
    );
}

/// Every table's row count and a digest of its rows, from a fresh connection
/// (a restore ends the sessions of its database).
async fn fingerprint(url: &str) -> Vec<(String, i64, String)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    // A psql that outlived its killed agent may still be committing (or
    // rolling back): wait until no other session of the database works.
    for _ in 0..100 {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let (n, digest): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(string_agg(r::text, ',' ORDER BY r::text)) FROM {t} AS r"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        out.push((t, n, digest.unwrap_or_default()));
    }
    conn.close().await.ok();
    out
}

#[tokio::test]
async fn killing_the_agent_anywhere_in_a_restore_leaves_the_database_unchanged() {
    let s = setup().await;
    // Enough data that a restore takes a while, so kills land inside it.
    sqlx::query(
        "CREATE TABLE padding AS SELECT g AS id, repeat(md5(g::text), 16) AS filler FROM generate_series(1, 60000) g",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    let backup = success(&s.agent(&["backup", "--no-verify"]).await);
    let key = backup["objectKey"].as_str().unwrap().to_owned();
    let backed_up = fingerprint(&s.db.url).await;
    let started = std::time::Instant::now();
    success(&s.agent(&["restore", "--object-key", &key]).await);
    let full = started.elapsed();
    assert_eq!(fingerprint(&s.db.url).await, backed_up);

    // The database moves on after the backup: that is what must survive.
    move_on(&s).await;
    let current = fingerprint(&s.db.url).await;
    let mut kills = 0;
    let mut committed = 0;
    let mut attempt = 0u32;
    while kills < 10 {
        attempt += 1;
        assert!(
            attempt < 40,
            "could not land 10 kills inside a {full:?} restore"
        );
        // Spread over the restore: from before psql starts to near the end.
        let delay = full.mul_f64(f64::from(attempt * 37 % 97) / 100.0);
        let mut child = tokio::process::Command::new(foodapp_e2e::binary("foodapp-operator"))
            .args(["restore", "--object-key", &key])
            .envs(agent_env(&s))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(delay).await;
        if let Some(status) = child.try_wait().unwrap() {
            // Finished before the kill: it committed; put the newer state back.
            assert!(status.success());
            assert_eq!(fingerprint(&s.db.url).await, backed_up);
            move_on(&s).await;
            assert_eq!(fingerprint(&s.db.url).await, current);
            continue;
        }
        child.start_kill().unwrap(); // SIGKILL: no handler runs
        child.wait().await.unwrap();
        kills += 1;
        // All or nothing: a kill that lands after COMMIT reached the server
        // leaves the whole backup in place, any earlier one leaves the
        // database as it was; never a mix of the two.
        let after = fingerprint(&s.db.url).await;
        if after == backed_up {
            committed += 1;
            move_on(&s).await;
        } else {
            assert_eq!(
                after, current,
                "kill {kills} after {delay:?} of a {full:?} restore changed the database"
            );
        }
        assert_eq!(fingerprint(&s.db.url).await, current);
    }
    assert!(
        committed < kills / 2,
        "{committed} of {kills} kills came after the commit: too late to test anything"
    );
}

/// Changes made after the backup: what a failed restore must leave.
async fn move_on(s: &Setup) {
    for sql in [
        "CREATE TABLE after_backup AS SELECT 'kept' AS note",
        "DELETE FROM padding WHERE id % 3 = 0",
    ] {
        sqlx::query(sql).execute(&s.db.pool).await.unwrap();
    }
}

fn agent_env(s: &Setup) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", s.db.url.clone()),
        ("S3_ENDPOINT", s.endpoint.clone()),
        ("S3_REGION", "us-east-1".to_owned()),
        ("S3_BUCKET", s.bucket.clone()),
        ("S3_PREFIX", "backups".to_owned()),
        ("S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", env("S3_ACCESS_KEY")),
        ("AWS_SECRET_ACCESS_KEY", env("S3_SECRET_KEY")),
        ("FOODAPP_NAME", "shop".to_owned()),
        ("POD_NAMESPACE", "e2e".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Databases on the server of `admin_url` whose name starts with `prefix`.
async fn databases_like(admin_url: &str, prefix: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let names =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(prefix)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.ok();
    names
}

#[tokio::test]
async fn backup_verify_and_restore_hold_across_tool_and_server_versions() {
    // (tools, server): newer tools against an older server (pg_restore 18
    // writes SET transaction_timeout, which 15 refuses), and same majors.
    let pg15_tools = "/usr/lib/postgresql/15/bin".to_owned();
    let cases = [
        (
            "tools 18 -> server 15",
            env("PG18_BIN"),
            env("DATABASE_URL"),
            env("VERIFY_DATABASE_URL"),
        ),
        (
            "tools 15 -> server 15",
            pg15_tools,
            env("DATABASE_URL"),
            env("VERIFY_DATABASE_URL"),
        ),
        (
            "tools 18 -> server 18",
            env("PG18_BIN"),
            env("PG18_DATABASE_URL"),
            env("PG18_DATABASE_URL"),
        ),
    ];
    for (case, tools, server, verify) in cases {
        let db = Database::on(&server).await;
        seed(&db).await;
        let endpoint = env("S3_ENDPOINT");
        let s3 = s3(&endpoint);
        let bucket = new_bucket(&s3).await;
        let run = |args: &'static [&'static str]| {
            let (db_url, endpoint, bucket, tools, verify) = (
                db.url.clone(),
                endpoint.clone(),
                bucket.clone(),
                tools.clone(),
                verify.clone(),
            );
            async move {
                agent(
                    &db_url,
                    &endpoint,
                    &bucket,
                    args,
                    &[("PG_BIN", &tools), ("VERIFY_DATABASE_URL", &verify)],
                )
                .await
            }
        };
        let before = contents(&db.pool).await;
        let out = run(&["backup"]).await;
        let backup = success(&out);
        assert_eq!(backup["verified"], true, "{case}");
        sqlx::query("DELETE FROM order_items")
            .execute(&db.pool)
            .await
            .unwrap();
        let restored = run(&["restore", "--latest"]).await;
        success(&restored);
        assert_eq!(
            contents(&db.pool).await,
            before,
            "{case}: identical content"
        );
        println!("{case}: backup, verify and restore ok");
    }
}

#[tokio::test]
async fn verification_never_touches_the_production_server() {
    let s = setup().await;
    let out = success(&s.agent(&["backup"]).await);
    assert_eq!(out["verified"], true);
    // Other tests verify on the same server at the same time: only this
    // backup's scratch database (named from its object key) is looked for.
    let key = out["objectKey"].as_str().unwrap();
    use sha2::Digest;
    let scratch = format!(
        "foodapp_verify_{}",
        &hex::encode(sha2::Sha256::digest(key.as_bytes()))[..10]
    );
    assert!(
        databases_like(&env("DATABASE_URL"), "foodapp_verify_")
            .await
            .is_empty(),
        "no scratch database on the production server"
    );
    assert!(
        !databases_like(&env("VERIFY_DATABASE_URL"), "foodapp_verify_")
            .await
            .contains(&scratch),
        "the scratch database {scratch} is dropped"
    );
    let none = agent(
        &s.db.url,
        &s.endpoint,
        &s.bucket,
        &["backup"],
        &[("VERIFY_DATABASE_URL", "")],
    )
    .await;
    assert!(
        !none.status.success(),
        "no verification server: refused rather than using production"
    );
    assert!(String::from_utf8_lossy(&none.stderr).contains("VERIFY_DATABASE_URL"));
}

#[tokio::test]
async fn a_backup_that_fails_verification_is_removed_and_never_used() {
    let s = setup().await;
    let good = success(&s.agent(&["backup", "--keep-last", "1"]).await);
    let good_key = good["objectKey"].as_str().unwrap().to_owned();
    // A verification server that is not there: verification fails.
    let unreachable = "postgres://postgres@127.0.0.1:9/postgres";
    for _ in 0..2 {
        let out = agent(
            &s.db.url,
            &s.endpoint,
            &s.bucket,
            &["backup", "--keep-last", "1"],
            &[("VERIFY_DATABASE_URL", unreachable)],
        )
        .await;
        assert!(!out.status.success());
    }
    assert_eq!(
        keys(&s.s3, &s.bucket).await,
        [
            good_key.clone(),
            good_key.replace(".dump", ".manifest.json")
        ],
        "failed backups left nothing, and did not push the good one out of keepLast"
    );
    sqlx::query("DELETE FROM order_items")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let restored = success(&s.agent(&["restore", "--latest"]).await);
    assert_eq!(
        restored["objectKey"],
        good_key.as_str(),
        "latest is the verified one"
    );
}

#[tokio::test]
async fn two_foodapps_sharing_a_bucket_never_see_each_others_backups() {
    let s = setup().await;
    let other = Database::new().await;
    seed(&other).await;
    // Tenant A: prefix "backups", FoodApp e2e/shop (keys backups/e2e/shop/…).
    // Tenant B: prefix "backups/e2e/shop", FoodApp e2e/shop: its keys are
    // nested inside A's prefix.
    let b_env = [("S3_PREFIX", "backups/e2e/shop")];
    let a_backup = success(&s.agent(&["backup", "--keep-last", "1"]).await);
    let a_key = a_backup["objectKey"].as_str().unwrap().to_owned();
    let b1 = success(&agent(&other.url, &s.endpoint, &s.bucket, &["backup"], &b_env).await);
    let b_key = b1["objectKey"].as_str().unwrap().to_owned();
    assert!(b_key.starts_with("backups/e2e/shop/e2e/shop/"), "{b_key}");
    // A's retention and latest ignore B's newer, nested backup.
    let a2 = success(&s.agent(&["backup", "--keep-last", "1"]).await);
    let all = keys(&s.s3, &s.bucket).await;
    assert!(
        all.contains(&b_key),
        "A's retention deleted B's backup: {all:?}"
    );
    assert!(!all.contains(&a_key), "A's own older backup was retired");
    let restored = success(&s.agent(&["restore", "--latest"]).await);
    assert_eq!(restored["objectKey"], a2["objectKey"]);
    // A cannot restore B's key, nor a copy of B's backup placed in A's prefix.
    let refused = s.agent(&["restore", "--object-key", &b_key]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not a backup of e2e/shop"));
    let planted = "backups/e2e/shop/29990101T000000000Z.dump";
    for (from, to) in [
        (b_key.clone(), planted.to_owned()),
        (
            b_key.replace(".dump", ".manifest.json"),
            planted.replace(".dump", ".manifest.json"),
        ),
    ] {
        let body = s.object(&from).await;
        s.s3.put_object()
            .bucket(&s.bucket)
            .key(&to)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
    let refused = s.agent(&["restore", "--object-key", planted]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("names"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let latest = success(&s.agent(&["restore", "--latest"]).await);
    assert_eq!(
        latest["objectKey"], a2["objectKey"],
        "a planted manifest is never latest"
    );
}

#[tokio::test]
async fn a_session_holding_locks_does_not_hang_a_restore() {
    use sqlx::Connection;
    let s = setup().await;
    let out = success(&s.agent(&["backup", "--no-verify"]).await);
    let key = out["objectKey"].as_str().unwrap().to_owned();
    // As a running pg_dump does: a transaction holding AccessShareLock.
    let mut holder = sqlx::PgConnection::connect(&s.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT count(*) FROM orders")
        .execute(&mut holder)
        .await
        .unwrap();
    // An idle session, as an API's pool holds: left alone.
    let mut idle = sqlx::PgConnection::connect(&s.db.url).await.unwrap();
    let started = std::time::Instant::now();
    success(&s.agent(&["restore", "--object-key", &key]).await);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        sqlx::query("SELECT 1").execute(&mut holder).await.is_err(),
        "the lock holder was ended"
    );
    sqlx::query("SELECT 1").execute(&mut idle).await.unwrap();
}
