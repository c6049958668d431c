//! Support for the end-to-end tests in `tests/`: they run the real binaries
//! against the services `scripts/test-services` starts (PostgreSQL, s3s-fs,
//! nginx). Everything a test starts is stopped when its handle drops.

use std::path::PathBuf;
use std::process::Output;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use sqlx::{Connection, PgConnection, PgPool};

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run through `make test` (scripts/test-services)")
    })
}

/// A binary of the workspace, built by `cargo test --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test` (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// A fresh database with the API's schema, dropped at the end.
pub struct Database {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    admin: String,
}

impl Database {
    /// A fresh, migrated database on the test server (DATABASE_URL).
    pub async fn new() -> Database {
        Database::on(&env("DATABASE_URL")).await
    }

    /// A fresh, migrated database on the server of `admin`.
    pub async fn on(admin: &str) -> Database {
        let admin = admin.to_owned();
        let name = format!("foodapp_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let mut u = url::Url::parse(&admin).unwrap();
        u.set_path(&format!("/{name}"));
        let url = u.to_string();
        let pool = PgPool::connect(&url)
            .await
            .expect("connect to the test database");
        foodapp_api::db::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations");
        Database {
            name,
            url,
            pool,
            admin,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// An S3 client for the test server, configured as the agent configures its own.
pub fn s3(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            env("S3_ACCESS_KEY"),
            env("S3_SECRET_KEY"),
            None,
            None,
            "test",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub async fn new_bucket(s3: &aws_sdk_s3::Client) -> String {
    let bucket = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    bucket
}

pub async fn keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = s3
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("list");
    let mut keys: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

/// Runs `foodapp-operator` with the agent's environment for `db` and `bucket`
/// (without blocking the test's runtime, which may be serving a proxy).
pub async fn agent(
    db_url: &str,
    endpoint: &str,
    bucket: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Output {
    let mut cmd = tokio::process::Command::new(binary("foodapp-operator"));
    cmd.args(args)
        .env("DATABASE_URL", db_url)
        .env("S3_ENDPOINT", endpoint)
        .env("S3_REGION", "us-east-1")
        .env("S3_BUCKET", bucket)
        .env("S3_PREFIX", "backups")
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("AWS_ACCESS_KEY_ID", env("S3_ACCESS_KEY"))
        .env("AWS_SECRET_ACCESS_KEY", env("S3_SECRET_KEY"))
        .env("FOODAPP_NAME", "shop")
        .env("POD_NAMESPACE", "e2e")
        .env_remove("KUBERNETES_SERVICE_HOST");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(300), cmd.output())
        .await
        .expect("the agent finishes within 5 minutes")
        .expect("run foodapp-operator")
}

/// The one JSON line a successful agent run prints; the run's output when it failed.
pub fn success(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "agent failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim().lines().last().unwrap()).expect("one JSON line")
}

/// Every table's rows, as text, in a stable order: for comparing contents.
pub async fn contents(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t_row)::text FROM {t} AS t_row ORDER BY 1"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        out.push((t, rows));
    }
    out
}
