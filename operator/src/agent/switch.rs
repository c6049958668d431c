//! `foodapp-operator switch`: the only moment a Beside restore pauses writes.
//! The live database is made read-only (new sessions refuse writes with
//! SQLSTATE 25006, which the API answers `503 restoring`; open sessions are
//! ended, their open transactions rolled back), everything it holds that
//! the restored one does not is exported next to the dump, and the agent
//! says so through a file its readiness probe reads: the operator then
//! points the FoodApp at the restored database. With `--service-database-url`
//! the agent waits until that address reaches the restored server, ending
//! the sessions that still reach the old one meanwhile, and reports how
//! long writes paused. `--resume` gives the live database its writes back
//! (a switch that did not happen); `--read-only` only pauses the writes of
//! DATABASE_URL (the start of a Beside PostgreSQL upgrade).

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use super::{Error, StoreArgs, db, s3};
use crate::crd::Discarded;

#[derive(Debug, Clone, clap::Args)]
pub struct SwitchArgs {
    /// Bucket, prefix and the restored database (DATABASE_URL).
    #[command(flatten)]
    pub store: StoreArgs,
    /// The database the shop uses now, to be made read-only.
    #[arg(long, env = "LIVE_DATABASE_URL", hide_env_values = true)]
    pub live_database_url: String,
    /// The address the API reaches its database through (the FoodApp's
    /// database Service): wait until it reaches the restored server.
    #[arg(long, env = "SERVICE_DATABASE_URL", hide_env_values = true)]
    pub service_database_url: Option<String>,
    /// Key of the export of what is discarded (JSON Lines).
    #[arg(long, env = "DISCARD_KEY")]
    pub discard_key: Option<String>,
    /// Switch nothing when anything would be discarded.
    #[arg(long, env = "REQUIRE_NO_DISCARD", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_no_discard: bool,
    /// Written once writes are paused and the export is stored: the pod's
    /// readiness probe tells the operator to switch.
    #[arg(long, env = "PAUSED_FILE", default_value = "/tmp/paused")]
    pub paused_file: std::path::PathBuf,
    /// How long to wait for the switch before giving the writes back.
    #[arg(long, env = "SWITCH_DEADLINE_SECONDS", default_value_t = 120)]
    pub deadline_seconds: u64,
    /// Only give the live database its writes back.
    #[arg(long)]
    pub resume: bool,
    /// Only give the database to switch to (DATABASE_URL) its writes back:
    /// a database a switch replaced, about to be switched back to.
    #[arg(long, conflicts_with = "resume")]
    pub writable: bool,
    /// Only make the database (DATABASE_URL) read-only and end its
    /// sessions: a Beside PostgreSQL upgrade copies it with no write lost.
    #[arg(long, conflicts_with_all = ["resume", "writable"])]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchOutcome {
    pub discarded: Discarded,
    /// Nothing was switched: requireNoDiscard and something would be lost.
    pub refused: bool,
    /// When writes were refused, and when the address the API uses reached
    /// the restored server (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_pause_seconds: Option<f64>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Refuses or allows writes in new sessions of the database `conn` is on.
pub async fn set_read_only(conn: &mut PgConnection, read_only: bool) -> Result<(), Error> {
    // This session may have started read-only (a switch run again, or a
    // resume): it must be able to write the setting itself.
    sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        .execute(&mut *conn)
        .await?;
    let db: String = sqlx::query_scalar("SELECT quote_ident(current_database())")
        .fetch_one(&mut *conn)
        .await?;
    let sql = if read_only {
        format!("ALTER DATABASE {db} SET default_transaction_read_only = on")
    } else {
        format!("ALTER DATABASE {db} RESET default_transaction_read_only")
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// New sessions of the database at `url` take writes again; the ones
/// opened meanwhile are ended so that they reconnect with the setting.
async fn give_writes_back(url: &str) -> Result<(), Error> {
    let mut conn = db::connect(url).await?;
    set_read_only(&mut conn, false).await?;
    end_sessions(&mut conn).await?;
    Ok(())
}

/// Ends every other session of this login on this database: open
/// transactions roll back (nothing they did was acknowledged), and pools
/// reconnect, getting the database's current settings.
pub async fn end_sessions(conn: &mut PgConnection) -> Result<u64, Error> {
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND usename = current_user
           AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(ended).unwrap_or(0))
}

/// Which server and database `url` reaches now, on a new connection.
async fn where_is(url: &str) -> Result<Option<String>, Error> {
    let mut conn = db::connect(url).await?;
    let here = server_address(&mut conn).await;
    conn.close().await.ok();
    here
}

/// Which server and database `conn` reaches: the address the server
/// answers on and the database's name.
async fn server_address(conn: &mut PgConnection) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar("SELECT host(inet_server_addr()) || '/' || current_database()")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Rows the live database has that the restored one lacks, by table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Gained {
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub users: Vec<uuid::Uuid>,
    pub orders: Vec<uuid::Uuid>,
    pub events: Vec<(uuid::Uuid, i64)>,
    pub refunds: Vec<uuid::Uuid>,
}

impl Gained {
    pub fn counts(&self) -> Discarded {
        let n = |l: usize| i64::try_from(l).unwrap_or(i64::MAX);
        Discarded {
            orders: n(self.orders.len()),
            order_events: n(self.events.len()),
            refunds: n(self.refunds.len()),
            users: n(self.users.len()),
            since: self
                .since
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            object_key: None,
            sha256: None,
        }
    }
}

/// How far before the restored database's newest change a row of the live
/// database may have been stamped and still be missing from the backup: a
/// transaction stamps `now()` when it begins and may commit after the dump's
/// snapshot. No API transaction runs for an hour.
const LONGEST_TRANSACTION: chrono::Duration = chrono::Duration::hours(1);

async fn has_table(conn: &mut PgConnection, table: &str) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar("SELECT to_regclass('public.' || $1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// The newest change the restored database holds: what is missing came after.
async fn newest_change(
    restored: &mut PgConnection,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Error> {
    if !has_table(restored, "orders").await? {
        return Ok(None);
    }
    Ok(sqlx::query_scalar(
        "SELECT greatest((SELECT max(created_at) FROM users), (SELECT max(created_at) FROM orders),
                         (SELECT max(at) FROM order_events), (SELECT max(created_at) FROM refunds))",
    )
    .fetch_one(&mut *restored)
    .await?)
}

/// Ids of `table` in `live` stamped (column `at`) since `from`, that
/// `restored` does not hold.
async fn missing_ids(
    live: &mut PgConnection,
    restored: &mut PgConnection,
    table: &'static str,
    at: &'static str,
    from: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<uuid::Uuid>, Error> {
    let candidates: Vec<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {table} WHERE $1::timestamptz IS NULL OR {at} >= $1 ORDER BY id"
    )))
    .bind(from)
    .fetch_all(&mut *live)
    .await?;
    if candidates.is_empty() || !has_table(restored, table).await? {
        return Ok(candidates);
    }
    let present: std::collections::HashSet<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        format!("SELECT id FROM {table} WHERE id = ANY($1)"),
    ))
    .bind(&candidates)
    .fetch_all(&mut *restored)
    .await?
    .into_iter()
    .collect();
    Ok(candidates
        .into_iter()
        .filter(|id| !present.contains(id))
        .collect())
}

/// Everything `live` gained that `restored` lacks: users, orders (with
/// their lines and history), status changes of orders both hold, refunds.
pub async fn gained(live: &mut PgConnection, restored: &mut PgConnection) -> Result<Gained, Error> {
    if !has_table(live, "orders").await? {
        return Ok(Gained::default());
    }
    let since = newest_change(restored).await?;
    let from = since.map(|t| t - LONGEST_TRANSACTION);
    let users = missing_ids(live, restored, "users", "created_at", from).await?;
    let orders = missing_ids(live, restored, "orders", "created_at", from).await?;
    let refunds = missing_ids(live, restored, "refunds", "created_at", from).await?;
    // Status changes of orders the restored database has, but not these.
    let recent: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT order_id, id FROM order_events
         WHERE ($1::timestamptz IS NULL OR at >= $1) AND NOT (order_id = ANY($2))
         ORDER BY order_id, id",
    )
    .bind(from)
    .bind(&orders)
    .fetch_all(&mut *live)
    .await?;
    let events = if recent.is_empty() || !has_table(restored, "order_events").await? {
        recent
    } else {
        let (order_ids, ids): (Vec<uuid::Uuid>, Vec<i64>) = recent.iter().copied().unzip();
        let present: std::collections::HashSet<(uuid::Uuid, i64)> = sqlx::query_as(
            "SELECT e.order_id, e.id FROM order_events e
             JOIN unnest($1::uuid[], $2::bigint[]) AS c (order_id, id)
               ON c.order_id = e.order_id AND c.id = e.id",
        )
        .bind(&order_ids)
        .bind(&ids)
        .fetch_all(&mut *restored)
        .await?
        .into_iter()
        .collect();
        recent
            .into_iter()
            .filter(|e| !present.contains(e))
            .collect()
    };
    Ok(Gained {
        since,
        users,
        orders,
        events,
        refunds,
    })
}

/// The export: one JSON object a line, `{"kind": "user"|"order"|
/// "order_event"|"refund", "row": {...}}`; an order carries its `items` and
/// `events`. Rows are read from the live database as stored.
pub async fn export(live: &mut PgConnection, g: &Gained) -> Result<Vec<u8>, Error> {
    let mut lines: Vec<serde_json::Value> = Vec::new();
    lines.extend(
        by_id(
            live,
            "SELECT jsonb_build_object('kind', 'user', 'row', to_jsonb(u))
             FROM users u WHERE u.id = ANY($1) ORDER BY u.created_at, u.id",
            &g.users,
        )
        .await?,
    );
    lines.extend(
        by_id(
            live,
            "SELECT jsonb_build_object('kind', 'order', 'row', to_jsonb(o),
               'items', (SELECT coalesce(jsonb_agg(to_jsonb(i) ORDER BY i.menu_item_id), '[]')
                         FROM order_items i WHERE i.order_id = o.id),
               'events', (SELECT coalesce(jsonb_agg(to_jsonb(e) ORDER BY e.id), '[]')
                          FROM order_events e WHERE e.order_id = o.id))
             FROM orders o WHERE o.id = ANY($1) ORDER BY o.created_at, o.id",
            &g.orders,
        )
        .await?,
    );
    if !g.events.is_empty() {
        let (order_ids, ids): (Vec<uuid::Uuid>, Vec<i64>) = g.events.iter().copied().unzip();
        lines.extend(
            sqlx::query_scalar::<_, serde_json::Value>(
                "SELECT jsonb_build_object('kind', 'order_event', 'row', to_jsonb(e))
                 FROM order_events e JOIN unnest($1::uuid[], $2::bigint[]) AS c (order_id, id)
                   ON c.order_id = e.order_id AND c.id = e.id ORDER BY e.at, e.id",
            )
            .bind(&order_ids)
            .bind(&ids)
            .fetch_all(&mut *live)
            .await?,
        );
    }
    lines.extend(
        by_id(
            live,
            "SELECT jsonb_build_object('kind', 'refund', 'row', to_jsonb(r))
             FROM refunds r WHERE r.id = ANY($1) ORDER BY r.created_at, r.id",
            &g.refunds,
        )
        .await?,
    );
    let mut out = Vec::new();
    for line in lines {
        out.extend(serde_json::to_vec(&line).map_err(|e| Error::Verify(e.to_string()))?);
        out.push(b'\n');
    }
    Ok(out)
}

/// The export lines `sql` makes of the rows with these ids (none: no query).
async fn by_id(
    live: &mut PgConnection,
    sql: &'static str,
    ids: &[uuid::Uuid],
) -> Result<Vec<serde_json::Value>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(sql)
        .bind(ids)
        .fetch_all(&mut *live)
        .await?)
}

/// The manifest of an export, beside it (`.discarded.manifest.json`): a
/// dump's rules, so that nothing mistakes it for a backup (retention and
/// restores look for `<time>.dump` with `<time>.manifest.json` only).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscardManifest {
    pub object_key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub created_at: String,
    pub food_app: String,
    pub namespace: String,
    pub discarded: Discarded,
}

pub fn discard_manifest_key(export_key: &str) -> String {
    format!(
        "{}.discarded.manifest.json",
        export_key
            .strip_suffix(".discarded.jsonl")
            .unwrap_or(export_key)
    )
}

/// Stores the export and its manifest; returns the counts with the key and
/// checksum.
async fn store_export(
    store: &StoreArgs,
    key: &str,
    body: Vec<u8>,
    mut counts: Discarded,
) -> Result<Discarded, Error> {
    let client = s3::client(store).await;
    let sha256 = hex::encode(Sha256::digest(&body));
    let size = body.len() as u64;
    s3::put(&client, &store.s3_bucket, key, body, "application/jsonl").await?;
    counts.object_key = Some(key.to_owned());
    counts.sha256 = Some(sha256.clone());
    let manifest = DiscardManifest {
        object_key: key.to_owned(),
        size_bytes: size,
        sha256,
        created_at: now(),
        food_app: store.foodapp.clone(),
        namespace: store.namespace.clone(),
        discarded: counts.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Verify(e.to_string()))?;
    s3::put(
        &client,
        &store.s3_bucket,
        &discard_manifest_key(key),
        bytes,
        "application/json",
    )
    .await?;
    Ok(counts)
}

pub async fn run(args: &SwitchArgs) -> Result<SwitchOutcome, Error> {
    if args.read_only {
        let mut conn = db::connect(&args.store.database_url).await?;
        set_read_only(&mut conn, true).await?;
        let ended = end_sessions(&mut conn).await?;
        tracing::info!(ended, "the database is read-only");
        return Ok(SwitchOutcome::nothing_switched(false));
    }
    if args.writable || args.resume {
        let (url, which) = if args.writable {
            (&args.store.database_url, "the database to switch to")
        } else {
            (&args.live_database_url, "the live database")
        };
        give_writes_back(url).await?;
        tracing::info!("{which} takes writes");
        return Ok(SwitchOutcome::nothing_switched(false));
    }
    let mut live = db::connect(&args.live_database_url).await?;
    let mut restored = db::connect(&args.store.database_url).await?;
    // A first look while the shop still writes: refuse before pausing.
    if args.require_no_discard {
        let preview = gained(&mut live, &mut restored).await?.counts();
        if !preview.is_empty() {
            return Ok(refused(preview));
        }
    }
    let paused = Instant::now();
    let paused_at = now();
    set_read_only(&mut live, true).await?;
    let ended = end_sessions(&mut live).await?;
    tracing::info!(ended, "the live database is read-only");
    let result = pause_and_export(args, &mut live, &mut restored).await;
    let counts = match result {
        Ok(Some(counts)) => counts,
        Ok(None) | Err(_) => {
            // Nothing switches: the live database gets its writes back.
            set_read_only(&mut live, false).await?;
            end_sessions(&mut live).await?;
            return match result {
                Ok(_) => Ok(refused(gained(&mut live, &mut restored).await?.counts())),
                Err(e) => Err(e),
            };
        }
    };
    std::fs::write(&args.paused_file, b"paused\n")
        .map_err(|e| Error::Io("writing the paused file", e))?;
    let Some(service) = &args.service_database_url else {
        return Ok(SwitchOutcome {
            discarded: counts,
            refused: false,
            paused_at: Some(paused_at),
            resumed_at: None,
            write_pause_seconds: None,
        });
    };
    let deadline = paused + Duration::from_secs(args.deadline_seconds);
    let mut last_said = Instant::now();
    let resumed = loop {
        if Instant::now() > deadline {
            return Err(Error::Verify(format!(
                "the database address did not reach the restored server within {}s",
                args.deadline_seconds
            )));
        }
        // Sessions that reached the old server meanwhile are ended, so
        // their pools reconnect through the address, to the restored one.
        end_sessions(&mut live).await?;
        // Each look is bounded (a connection attempt caught in the moment
        // the address changes servers may never be answered), and asks the
        // restored server where it is now: its pod may have moved.
        let look = tokio::time::timeout(Duration::from_secs(2), async {
            let target = where_is(&args.store.database_url).await?;
            let here = where_is(service).await?;
            Ok::<_, Error>((target, here))
        })
        .await;
        let (target, here) = match look {
            Ok(Ok((target, here))) => (target, Ok(Ok(here))),
            Ok(Err(e)) => (None, Ok(Err(e))),
            Err(e) => (None, Err(e)),
        };
        match here {
            Ok(Ok(here)) if here.is_some() && here == target => break Instant::now(),
            other if last_said.elapsed() > Duration::from_secs(5) => {
                let seen = match other {
                    Ok(Ok(h)) => format!("reaches {}", h.unwrap_or_default()),
                    Ok(Err(e)) => format!("fails: {e}"),
                    Err(_) => "does not answer within 2 s".to_owned(),
                };
                tracing::info!(
                    seen,
                    restored = target.as_deref().unwrap_or_default(),
                    "waiting for the database address to reach the restored server"
                );
                last_said = Instant::now();
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resumed_at = now();
    // Connections opened before every node's rules changed may still
    // reach the old server: end them for a little longer.
    for _ in 0..10 {
        end_sessions(&mut live).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing reaches it any more: the replaced database is kept as it was,
    // so that it starts again as it is for a revert (its pod's start-up
    // script writes).
    set_read_only(&mut live, false).await?;
    Ok(SwitchOutcome {
        discarded: counts,
        refused: false,
        paused_at: Some(paused_at),
        resumed_at: Some(resumed_at),
        write_pause_seconds: Some((resumed - paused).as_secs_f64()),
    })
}

/// The agent is being stopped (its restore was deleted, its node drained):
/// unless the FoodApp already reaches the restored database, the live one
/// gets its writes back. What it says it did.
pub async fn on_terminate(args: &SwitchArgs) -> Result<String, Error> {
    if let Some(service) = &args.service_database_url {
        let mut restored = db::connect(&args.store.database_url).await?;
        let target = server_address(&mut restored).await?;
        let mut via = db::connect(service).await?;
        if server_address(&mut via).await? == target {
            return Ok("stopped after the switch: the restored database serves".to_owned());
        }
    }
    give_writes_back(&args.live_database_url).await?;
    Ok("stopped before the switch: writes were given back to the live database".to_owned())
}

fn refused(discarded: Discarded) -> SwitchOutcome {
    SwitchOutcome {
        discarded,
        ..SwitchOutcome::nothing_switched(true)
    }
}

impl SwitchOutcome {
    fn nothing_switched(refused: bool) -> SwitchOutcome {
        SwitchOutcome {
            discarded: Discarded::default(),
            refused,
            paused_at: None,
            resumed_at: None,
            write_pause_seconds: None,
        }
    }
}

/// With writes refused: the final account of what is discarded, stored.
/// None: requireNoDiscard, and something would be.
async fn pause_and_export(
    args: &SwitchArgs,
    live: &mut PgConnection,
    restored: &mut PgConnection,
) -> Result<Option<Discarded>, Error> {
    let g = gained(live, restored).await?;
    let counts = g.counts();
    if args.require_no_discard && !counts.is_empty() {
        return Ok(None);
    }
    match &args.discard_key {
        Some(key) => {
            let body = export(live, &g).await?;
            Ok(Some(store_export(&args.store, key, body, counts).await?))
        }
        None => Ok(Some(counts)),
    }
}
