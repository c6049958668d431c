//! The switch of a Beside restore, run as the real agent against PostgreSQL
//! and s3s-fs: a restore into a second database on the same server (the
//! External engine's path), the account of exactly what the live database
//! gained after the backup, its export, the pause of writes and their
//! return, and `requireNoDiscard`.

use foodapp_e2e::{Database, agent, env, new_bucket, s3, success};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

async fn customers(db: &Database, prefix: &str, n: i32) {
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles)
         SELECT gen_random_uuid(), $1 || g || '@e2e.io', 'C' || g, 'x', '{customer}'
         FROM generate_series(1, $2) g",
    )
    .bind(prefix)
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// `n` orders of the customers whose email starts with `prefix`; their ids.
async fn orders(db: &Database, prefix: &str, n: i32) -> Vec<uuid::Uuid> {
    sqlx::query_scalar(
        "WITH o AS (SELECT gen_random_uuid() AS id, g FROM generate_series(1, $2) g)
         SELECT o.id FROM o
         JOIN LATERAL (SELECT id FROM users WHERE email LIKE $1 || '%' ORDER BY id LIMIT 1) u ON true
         JOIN LATERAL (SELECT id FROM menu_items WHERE stock IS NULL ORDER BY id LIMIT 1) m ON true
         JOIN LATERAL place_order(o.id, u.id, $1 || o.g || o.id, '\\x00', ARRAY[m.id], ARRAY[1], now(),
                                  to_json(now())::text, gen_random_uuid(), 'card', 'pay_x', false, NULL) p ON true
         WHERE p.outcome = 'placed'",
    )
    .bind(prefix)
    .bind(n)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

struct Shop {
    app: String,
    live: Database,
    endpoint: String,
    bucket: String,
    key: String,
    restored: String,
    restored_url: String,
}

/// A shop with a backup, restored into a second database of the same
/// server by the agent (`--into-database`, row counts checked).
async fn shop() -> Shop {
    let live = Database::new().await;
    foodapp_api::seed::seed_demo(&live.pool, false)
        .await
        .unwrap();
    customers(&live, "before", 5).await;
    orders(&live, "before", 8).await;
    let endpoint = env("S3_ENDPOINT");
    let bucket = new_bucket(&s3(&endpoint)).await;
    // A name of its own: tests back up at the same moment, and verification
    // names its scratch database after the key.
    let app = format!("shop{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let backup = success(
        &agent(
            &live.url,
            &endpoint,
            &bucket,
            &["backup"],
            &[("FOODAPP_NAME", &app)],
        )
        .await,
    );
    let key = backup["objectKey"].as_str().unwrap().to_owned();
    let restored = format!("{}_r{}", live.name, "abc123");
    let out = agent(
        &live.url,
        &endpoint,
        &bucket,
        &["restore", "--object-key", &key],
        &[
            ("INTO_DATABASE", &restored),
            ("CHECK_COUNTS", "true"),
            ("FOODAPP_NAME", &app),
        ],
    )
    .await;
    let r = success(&out);
    assert_eq!(r["verified"], true, "{r}");
    let mut u = url::Url::parse(&live.url).unwrap();
    u.set_path(&format!("/{restored}"));
    Shop {
        app,
        live,
        endpoint,
        bucket,
        key,
        restored,
        restored_url: u.to_string(),
    }
}

impl Shop {
    async fn switch(&self, extra: &[(&str, &str)]) -> std::process::Output {
        let dir = tempfile_dir();
        let paused = format!("{dir}/paused");
        let discard = format!("{}.discarded.jsonl", self.key);
        let mut vars = vec![
            ("LIVE_DATABASE_URL", self.live.url.as_str()),
            ("DISCARD_KEY", discard.as_str()),
            ("PAUSED_FILE", paused.as_str()),
            ("FOODAPP_NAME", self.app.as_str()),
        ];
        vars.extend_from_slice(extra);
        agent(
            &self.restored_url,
            &self.endpoint,
            &self.bucket,
            &["switch"],
            &vars,
        )
        .await
    }

    async fn object(&self, key: &str) -> Vec<u8> {
        s3(&self.endpoint)
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .to_vec()
    }

    async fn drop_restored(&self) {
        let mut c = PgConnection::connect(&env("DATABASE_URL")).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.restored
        )))
        .execute(&mut c)
        .await
        .unwrap();
    }
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(format!("switch-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

/// A write on a new session of `url`: its SQLSTATE when refused.
async fn write(url: &str) -> Option<String> {
    let mut c = PgConnection::connect(url).await.unwrap();
    let r = sqlx::query("UPDATE menu_items SET price_cents = price_cents WHERE false")
        .execute(&mut c)
        .await;
    r.err().and_then(|e| {
        e.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    })
}

#[tokio::test]
async fn the_switch_accounts_for_exactly_what_the_live_database_gained_after_the_backup() {
    let s = shop().await;
    // After the backup: new customers and their orders, a status change and
    // a refund on orders the backup has.
    customers(&s.live, "after", 3).await;
    let gained = orders(&s.live, "after", 4).await;
    let (old_order, payment): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "SELECT id, payment_id FROM orders WHERE NOT (id = ANY($1)) ORDER BY id LIMIT 1",
    )
    .bind(&gained)
    .fetch_one(&s.live.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO order_events (order_id, from_status, to_status, at) VALUES ($1, 'placed', 'accepted', now())",
    )
    .bind(old_order)
    .execute(&s.live.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO refunds (id, order_id, payment_id, amount_cents, reason, created_at)
         VALUES (gen_random_uuid(), $1, $2, 100, 'test', now())",
    )
    .bind(old_order)
    .bind(payment)
    .execute(&s.live.pool)
    .await
    .unwrap();

    // An open session of the shop: the switch ends it.
    let mut pooled = PgConnection::connect(&s.live.url).await.unwrap();
    let out = success(&s.switch(&[("SERVICE_DATABASE_URL", &s.restored_url)]).await);
    assert_eq!(out["refused"], false, "{out}");
    let d = &out["discarded"];
    assert_eq!(d["orders"], 4, "{out}");
    assert_eq!(d["users"], 3, "{out}");
    assert_eq!(d["orderEvents"], 1, "{out}");
    assert_eq!(d["refunds"], 1, "{out}");
    assert!(out["writePauseSeconds"].as_f64().unwrap() < 5.0, "{out}");
    assert!(
        sqlx::query("SELECT 1").execute(&mut pooled).await.is_err(),
        "open sessions of the live database are ended"
    );

    // The export: every discarded row, with its order's lines and history,
    // and a manifest whose checksum matches it.
    let key = d["objectKey"].as_str().unwrap().to_owned();
    assert_eq!(key, format!("{}.discarded.jsonl", s.key));
    let body = s.object(&key).await;
    let manifest: Value = serde_json::from_slice(
        &s.object(&key.replace(".discarded.jsonl", ".discarded.manifest.json"))
            .await,
    )
    .unwrap();
    use sha2::Digest;
    assert_eq!(manifest["sha256"], hex::encode(sha2::Sha256::digest(&body)));
    assert_eq!(d["sha256"], manifest["sha256"]);
    let lines: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| {
        lines
            .iter()
            .filter(|l| l["kind"] == kind)
            .collect::<Vec<_>>()
    };
    let exported: Vec<uuid::Uuid> = of("order")
        .iter()
        .map(|l| l["row"]["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let mut expected = gained.clone();
    expected.sort();
    let mut got = exported.clone();
    got.sort();
    assert_eq!(got, expected, "exactly the orders placed after the backup");
    for order in of("order") {
        assert_eq!(order["items"].as_array().unwrap().len(), 1);
    }
    assert_eq!(of("user").len(), 3);
    assert_eq!(of("refund").len(), 1);
    assert_eq!(
        of("order_event")[0]["row"]["order_id"],
        old_order.to_string()
    );

    // Once the address reaches the restored server, the replaced one is
    // kept as it was (it must start again for a revert).
    assert_eq!(write(&s.live.url).await, None);

    // Without the address to wait for, the agent ends with writes paused:
    // the live database refuses them (the API answers 503 restoring), the
    // restored one takes them.
    success(&s.switch(&[]).await);
    assert_eq!(write(&s.live.url).await.as_deref(), Some("25006"));
    assert_eq!(write(&s.restored_url).await, None);

    // A switch that did not happen gives the writes back.
    let out = agent(
        &s.restored_url,
        &s.endpoint,
        &s.bucket,
        &["switch", "--resume"],
        &[("LIVE_DATABASE_URL", &s.live.url)],
    )
    .await;
    success(&out);
    assert_eq!(write(&s.live.url).await, None, "writes are back");

    // A revert: the database a switch replaced takes writes again.
    success(&s.switch(&[]).await);
    assert_eq!(write(&s.live.url).await.as_deref(), Some("25006"));
    let out = agent(
        &s.live.url,
        &s.endpoint,
        &s.bucket,
        &["switch", "--writable"],
        &[("LIVE_DATABASE_URL", &s.restored_url)],
    )
    .await;
    success(&out);
    assert_eq!(
        write(&s.live.url).await,
        None,
        "the kept database takes writes"
    );
    s.drop_restored().await;
}

#[tokio::test]
async fn read_only_pauses_the_writes_of_database_url_and_writable_gives_them_back() {
    // A Beside PostgreSQL upgrade: writes pause before its backup, and come
    // back if it ends without switching.
    let s = shop().await;
    let out = agent(
        &s.live.url,
        &s.endpoint,
        &s.bucket,
        &["switch", "--read-only"],
        &[("LIVE_DATABASE_URL", &s.live.url)],
    )
    .await;
    success(&out);
    assert_eq!(write(&s.live.url).await.as_deref(), Some("25006"));
    assert_eq!(write(&s.restored_url).await, None, "only that database");
    let out = agent(
        &s.live.url,
        &s.endpoint,
        &s.bucket,
        &["switch", "--writable"],
        &[("LIVE_DATABASE_URL", &s.live.url)],
    )
    .await;
    success(&out);
    assert_eq!(write(&s.live.url).await, None, "writes are back");
    s.drop_restored().await;
}

#[tokio::test]
async fn require_no_discard_leaves_the_live_database_writable_and_switches_nothing() {
    let s = shop().await;
    // Nothing gained: the switch goes ahead.
    let clean = success(&s.switch(&[("REQUIRE_NO_DISCARD", "true")]).await);
    assert_eq!(clean["refused"], false, "{clean}");
    assert_eq!(clean["discarded"]["orders"], 0);
    success(
        &agent(
            &s.restored_url,
            &s.endpoint,
            &s.bucket,
            &["switch", "--resume"],
            &[("LIVE_DATABASE_URL", &s.live.url)],
        )
        .await,
    );
    // One order after the backup: refused, and the shop keeps writing.
    orders(&s.live, "before", 1).await;
    let refused = success(&s.switch(&[("REQUIRE_NO_DISCARD", "true")]).await);
    assert_eq!(refused["refused"], true, "{refused}");
    assert_eq!(refused["discarded"]["orders"], 1);
    assert_eq!(
        write(&s.live.url).await,
        None,
        "the live database still takes writes"
    );
    s.drop_restored().await;
}

#[tokio::test]
async fn a_switch_agent_stopped_before_the_switch_gives_the_writes_back() {
    let s = shop().await;
    let dir = tempfile_dir();
    let paused = format!("{dir}/paused");
    // The address never reaches the restored server: the agent waits.
    let mut child = tokio::process::Command::new(foodapp_e2e::binary("foodapp-operator"))
        .arg("switch")
        .env("DATABASE_URL", &s.restored_url)
        .env("LIVE_DATABASE_URL", &s.live.url)
        .env("SERVICE_DATABASE_URL", &s.live.url)
        .env("PAUSED_FILE", &paused)
        .env("S3_BUCKET", &s.bucket)
        .env("FOODAPP_NAME", &s.app)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::path::Path::new(&paused).exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(std::path::Path::new(&paused).exists(), "writes were paused");
    assert_eq!(write(&s.live.url).await.as_deref(), Some("25006"));
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "a stopped switch is not a success");
    assert_eq!(
        write(&s.live.url).await,
        None,
        "the live database takes writes again"
    );
    s.drop_restored().await;
}
