//! The agent's database side: an exported snapshot with row counts that match
//! the dump exactly, versions for the manifest, scratch databases.

use std::collections::BTreeMap;

use sqlx::{Connection, PgConnection};

/// Same server, another database.
pub fn with_database(url: &str, database: &str) -> Result<String, url::ParseError> {
    let mut u = url::Url::parse(url)?;
    u.set_path(&format!("/{database}"));
    Ok(u.to_string())
}

pub async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(url).await
}

/// The server's major version (`server_version_num` / 10000).
pub async fn server_major(url: &str) -> Result<u32, sqlx::Error> {
    let mut conn = connect(url).await?;
    let num: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(num.parse::<u32>().unwrap_or(0) / 10000)
}

/// Rows per user table, `schema.table` → count.
pub async fn row_counts(conn: &mut PgConnection) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT c.relispartition
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = BTreeMap::new();
    for table in tables {
        // The name comes from format('%I.%I'): quoted as an identifier.
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *conn)
                .await?;
        counts.insert(table.replace('"', ""), n);
    }
    Ok(counts)
}

/// A read-only repeatable-read transaction whose snapshot pg_dump imports,
/// so the row counts describe exactly what is dumped.
pub struct Snapshot {
    pub conn: PgConnection,
    pub id: String,
    pub counts: BTreeMap<String, i64>,
    pub server_version: String,
    pub schema_version: Option<i64>,
}

pub async fn snapshot(url: &str) -> Result<Snapshot, sqlx::Error> {
    let mut conn = connect(url).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await?;
    let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    let migrated: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut conn)
            .await?;
    let schema_version: Option<i64> = if migrated {
        sqlx::query_scalar("SELECT max(version) FROM public._sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await?
    } else {
        None
    };
    let counts = row_counts(&mut conn).await?;
    Ok(Snapshot {
        conn,
        id,
        counts,
        server_version,
        schema_version,
    })
}

impl Snapshot {
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut self.conn).await?;
        self.conn.close().await
    }
}

pub async fn create_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await
}
