//! PostgreSQL stopped and started again under load, with two API replicas
//! in front of it: clear 503s while it is away, no 500, every acknowledged
//! order kept, both replicas ready again on their own within seconds.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, settings, user_in};
use foodapp_api::auth::Role;
use foodapp_api::config::DatabaseArgs;
use serde_json::json;
use uuid::Uuid;

/// A PostgreSQL 15 server of this test's own, so it can be stopped.
struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root.
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let bin = PathBuf::from(
            std::env::var("PG15_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let base = std::env::var("FOODAPP_RUN_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
        let dir = PathBuf::from(base).join(format!("faults-{}", Uuid::new_v4().simple()));
        run(
            {
                let mut c = Command::new("install");
                c.args(["-d", "-m", "0700"]);
                if Command::new("id")
                    .arg("-u")
                    .output()
                    .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
                {
                    c.args(["-o", "postgres"]);
                }
                c.arg(&dir);
                c
            },
            "making the data directory",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let data = dir.join("data");
        run(
            as_postgres(
                &bin.join("initdb"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-locale",
                ],
            ),
            "initdb",
        );
        let pg = OwnPostgres { bin, dir, port };
        pg.up();
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let mut all = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()];
        all.extend_from_slice(args);
        as_postgres(&self.bin.join("pg_ctl"), &all)
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        run(
            self.pg_ctl(&["-w", "-t", "30", "start", "-o", &options]),
            "pg_ctl start",
        );
    }

    /// A fast shutdown: sessions are ended, in-flight transactions rolled back.
    fn down(&self) {
        run(self.pg_ctl(&["-w", "-m", "fast", "stop"]), "pg_ctl stop");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Seconds since the start, replica, status, order id.
type Outcome = (f64, usize, u16, Option<String>);

/// A replica as `serve` builds it: the production pool settings.
async fn replica(url: &str) -> Server {
    let pool = foodapp_api::db::connect(&DatabaseArgs {
        database_url: url.to_owned(),
        database_max_connections: 8,
    })
    .await
    .expect("connect");
    Server::start_with(pool, settings()).await
}

async fn ready(client: &reqwest::Client, base: &str) -> bool {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_under_load_loses_no_acknowledged_order() {
    let pg = OwnPostgres::start();
    let setup = sqlx::PgPool::connect(&pg.url()).await.expect("connect");
    foodapp_api::db::MIGRATOR
        .run(&setup)
        .await
        .expect("migrate");
    let a = replica(&pg.url()).await;
    let b = replica(&pg.url()).await;
    let cat: Uuid =
        sqlx::query_scalar("INSERT INTO categories (id, name) VALUES ($1, 'Pies') RETURNING id")
            .bind(Uuid::now_v7())
            .fetch_one(&setup)
            .await
            .unwrap();
    let pie: Uuid = sqlx::query_scalar(
        "INSERT INTO menu_items (id, category_id, name, price_cents) VALUES ($1, $2, 'Pie', 500) RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(cat)
    .fetch_one(&setup)
    .await
    .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..12 {
        tokens.push(user_in(&a.state, &[Role::Customer]).await.1);
    }
    setup.close().await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let start = Instant::now();
    let load_for = Duration::from_secs(13);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let mut workers = Vec::new();
    for (w, token) in tokens.iter().enumerate() {
        let (client, token, outcomes) = (client.clone(), token.clone(), outcomes.clone());
        let bases = [a.base.clone(), b.base.clone()];
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while start.elapsed() < load_for {
                n += 1;
                let which = (w + n) % 2;
                let reply = client
                    .post(format!("{}/api/v1/orders", bases[which]))
                    .bearer_auth(&token)
                    .header("idempotency-key", Uuid::new_v4().to_string())
                    .json(&json!({"items": [{"menu_item_id": pie, "quantity": 1}],
                                  "payment": {"method": "card", "token": "tok_visa"}}))
                    .send()
                    .await
                    .expect("the API answers");
                let status = reply.status().as_u16();
                let body: serde_json::Value = reply.json().await.unwrap_or_default();
                let id = body["id"].as_str().map(str::to_owned);
                let at = start.elapsed().as_secs_f64();
                outcomes.lock().unwrap().push((at, which, status, id));
                if status == 503 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.down();
    let stopped = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !ready(&client, &a.base).await,
        "a says ready without a database"
    );
    assert!(
        !ready(&client, &b.base).await,
        "b says ready without a database"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.up();
    let restarted = start.elapsed().as_secs_f64();
    let mut ready_after = None;
    while start.elapsed() < Duration::from_secs(30) {
        if ready(&client, &a.base).await && ready(&client, &b.base).await {
            ready_after = Some(start.elapsed().as_secs_f64() - restarted);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    let ready_after = ready_after.expect("both replicas ready again within 30 s");
    assert!(ready_after < 5.0, "ready again after {ready_after:.1} s");

    let outcomes = outcomes.lock().unwrap().clone();
    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|o| o.2 != 201 && o.2 != 503)
        .collect();
    assert!(unexpected.is_empty(), "neither 201 nor 503: {unexpected:?}");
    let refused = outcomes.iter().filter(|o| o.2 == 503).count();
    assert!(refused > 0, "the outage was seen");
    // Both replicas take orders again, each within seconds of the restart.
    for replica in 0..2 {
        let back = outcomes
            .iter()
            .filter(|o| o.1 == replica && o.2 == 201 && o.0 > restarted)
            .map(|o| o.0 - restarted)
            .fold(f64::INFINITY, f64::min);
        assert!(
            back < 5.0,
            "replica {replica} placed its first order {back:.1} s after the restart"
        );
    }

    let acknowledged: Vec<Uuid> = outcomes
        .iter()
        .filter_map(|o| o.3.as_deref())
        .map(|id| id.parse().unwrap())
        .collect();
    let check = sqlx::PgPool::connect(&pg.url()).await.expect("connect");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = ANY($1)")
        .bind(&acknowledged)
        .fetch_one(&check)
        .await
        .unwrap();
    check.close().await;
    assert_eq!(
        kept as usize,
        acknowledged.len(),
        "acknowledged orders lost"
    );
    println!(
        "{} orders acknowledged, {refused} refused with 503 (stopped at {stopped:.1} s, started at {restarted:.1} s); both replicas ready {ready_after:.2} s after the restart",
        acknowledged.len()
    );
    drop((a, b));
}
