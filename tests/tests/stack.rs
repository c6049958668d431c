//! The whole stack as `make demo` runs it — foodapp-api behind nginx loaded
//! with the operator's gateway config, PostgreSQL, s3s-fs, the agent — driven
//! through the gateway only. The test owns its processes; they die with it.

use std::process::Stdio;
use std::time::Duration;

use foodapp_api::auth::Role;
use foodapp_api::auth::tokens::JwtKeys;
use foodapp_e2e::{Database, agent, binary, contents, env, new_bucket, s3};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ok(url: &str) {
    for _ in 0..200 {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not answer");
}

struct Stack {
    db: Database,
    api_port: u16,
    api: Option<Child>,
    gateways: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Stack {
    async fn start_api(&mut self) {
        let child = Command::new(binary("foodapp-api"))
            .arg("serve")
            .env("DATABASE_URL", &self.db.url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.api_port))
            .env("JWT_SECRET", SECRET)
            .env("MENU_CACHE_TTL", "0")
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.api = Some(child);
        wait_ok(&format!("http://127.0.0.1:{}/readyz", self.api_port)).await;
    }

    /// An nginx with the operator's gateway config; returns its base URL.
    async fn gateway(&mut self, name: &str, rps: i32, burst: i32) -> String {
        let port = free_port();
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = std::process::Command::new(binary("foodapp-operator"))
            .args(["nginx-config", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &format!("127.0.0.1:{}", self.api_port)])
            .arg("--dir")
            .arg(&dir)
            .args([
                "--requests-per-second",
                &rps.to_string(),
                "--burst",
                &burst.to_string(),
            ])
            .output()
            .unwrap();
        assert!(conf.status.success());
        std::fs::write(dir.join("nginx.conf"), conf.stdout).unwrap();
        let nginx = std::env::var("NGINX_BIN").unwrap_or_else(|_| "/usr/sbin/nginx".into());
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.gateways.push(child);
        let base = format!("http://127.0.0.1:{port}");
        wait_ok(&format!("{base}/healthz")).await;
        base
    }
}

impl Drop for Stack {
    /// nginx is stopped gracefully: killing its master outright would leave
    /// the workers running.
    fn drop(&mut self) {
        for child in &mut self.gateways {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                for _ in 0..50 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

async fn user(db: &Database, roles: &[Role]) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let names: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles) VALUES ($1, $2, 'E2E', 'x', $3)",
    )
    .bind(id)
    .bind(format!("{id}@e2e.io"))
    .bind(names)
    .execute(&db.pool)
    .await
    .unwrap();
    let keys = JwtKeys::new(
        SECRET.as_bytes(),
        Duration::from_secs(900),
        Duration::from_secs(3600),
    );
    (id, keys.issue_access(id, roles).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stack_through_the_gateway() {
    let db = Database::new().await;
    foodapp_api::seed::seed_demo(&db.pool, false).await.unwrap();
    let dir = std::path::Path::new(&env("FOODAPP_RUN_DIR"))
        .join(format!("stack-{}", Uuid::new_v4().simple()));
    let mut stack = Stack {
        db,
        api_port: free_port(),
        api: None,
        gateways: Vec::new(),
        dir,
    };
    stack.start_api().await;
    let gw = stack.gateway("main", 10_000, 10_000).await;
    let http = reqwest::Client::new();

    // A customer registers, logs in and browses, through nginx.
    let r = http
        .post(format!("{gw}/api/v1/auth/register"))
        .json(&json!({"email": "ada@e2e.io", "password": "a-good-password", "name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tokens: Value = http
        .post(format!("{gw}/api/v1/auth/token"))
        .json(&json!({"email": "ada@e2e.io", "password": "a-good-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ada = tokens["access_token"].as_str().unwrap().to_owned();
    let menu = http
        .get(format!("{gw}/api/v1/menu-items?sort=price"))
        .header("x-request-id", "e2e-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        menu.headers()["x-request-id"],
        "e2e-req-1",
        "the request id passes through"
    );
    for ops in ["metrics", "readyz"] {
        let r = http.get(format!("{gw}/{ops}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "/{ops} stays inside the cluster");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(
        menu.headers().get_all("x-request-id").iter().count(),
        1,
        "one X-Request-Id, not the API's and nginx's: {:?}",
        menu.headers()
    );
    assert!(
        menu.headers()
            .get("server")
            .is_some_and(|s| s.to_str().unwrap().starts_with("nginx"))
    );
    let menu: Value = menu.json().await.unwrap();
    let item = menu["items"][0]["id"].as_str().unwrap().to_owned();
    let cats = http
        .get(format!("{gw}/api/v1/categories"))
        .send()
        .await
        .unwrap();
    assert_eq!(cats.status(), 200);

    // Order from the cart.
    let r = http
        .put(format!("{gw}/api/v1/cart/items/{item}"))
        .bearer_auth(&ada)
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let order: Value = http
        .post(format!("{gw}/api/v1/orders"))
        .bearer_auth(&ada)
        .header("idempotency-key", "ada-1")
        .json(&json!({"from_cart": true, "payment": {"method": "card", "token": "tok_visa"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();

    // A second client follows the order live over SSE, through nginx.
    let follow = http
        .get(format!("{gw}/api/v1/orders/{order_id}/events"))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let follower = tokio::spawn(async move {
        let mut stream = follow.bytes_stream();
        let mut text = String::new();
        while !text.contains("\"delivered\"") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("events keep coming");
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
        }
        text
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (_, kitchen) = user(&stack.db, &[Role::Kitchen]).await;
    let (courier_id, courier) = user(&stack.db, &[Role::Courier]).await;
    for (token, action, body) in [
        (&kitchen, "accept", None),
        (&kitchen, "ready", None),
        (&kitchen, "assign", Some(json!({"courier_id": courier_id}))),
        (&courier, "pickup", None),
        (&courier, "deliver", None),
    ] {
        let mut req = http
            .post(format!("{gw}/api/v1/orders/{order_id}/{action}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        assert_eq!(req.send().await.unwrap().status(), 200, "{action}");
    }
    let events = follower.await.unwrap();
    let seen: Vec<&str> = [
        "placed",
        "accepted",
        "ready",
        "out_for_delivery",
        "delivered",
    ]
    .into_iter()
    .filter(|s| events.contains(&format!("\"to_status\":\"{s}\"")))
    .collect();
    assert_eq!(seen.len(), 5, "the follower saw every step: {events}");

    // 200 concurrent buyers of the last 20 units.
    let last: Uuid =
        sqlx::query_scalar("UPDATE menu_items SET stock = 20 WHERE name = 'Tiramisu' RETURNING id")
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    let mut buyers = Vec::new();
    for _ in 0..200 {
        let (_, token) = user(&stack.db, &[Role::Customer]).await;
        let (http, gw) = (http.clone(), gw.clone());
        buyers.push(tokio::spawn(async move {
            http.post(format!("{gw}/api/v1/orders"))
                .bearer_auth(token)
                .header("idempotency-key", Uuid::new_v4().to_string())
                .json(&json!({"items": [{"menu_item_id": last, "quantity": 1}], "payment": {"method": "cash"}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for b in buyers {
        codes.push(b.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 20, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 180);
    let stock: Option<i32> = sqlx::query_scalar("SELECT stock FROM menu_items WHERE id = $1")
        .bind(last)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(stock, Some(0));

    // A client over the rate limit gets 429 problem+json with Retry-After.
    let strict = stack.gateway("strict", 1, 2).await;
    let mut limited = None;
    for _ in 0..10 {
        let r = http
            .get(format!("{strict}/api/v1/categories"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the rate limit answers 429");
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(limited.headers()["retry-after"], "1");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(
        (problem["status"].as_u64(), problem["code"].as_str()),
        (Some(429), Some("rate_limited"))
    );

    // The API goes away: 503 maintenance as problem+json; it comes back: 200.
    stack.api.take().unwrap().kill().await.unwrap();
    let r = http
        .get(format!("{gw}/api/v1/menu-items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "maintenance");
    stack.start_api().await;
    assert_eq!(
        http.get(format!("{gw}/api/v1/menu-items"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Backup with the agent, lose data, restore with the agent: equal again.
    let endpoint = env("S3_ENDPOINT");
    let bucket = new_bucket(&s3(&endpoint)).await;
    let before = contents(&stack.db.pool).await;
    let out = agent(&stack.db.url, &endpoint, &bucket, &["backup"], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sqlx::query("DELETE FROM order_items")
        .execute(&stack.db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM refunds")
        .execute(&stack.db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM order_events")
        .execute(&stack.db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM orders")
        .execute(&stack.db.pool)
        .await
        .unwrap();
    let out = agent(
        &stack.db.url,
        &endpoint,
        &bucket,
        &["restore", "--latest"],
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(contents(&stack.db.pool).await, before);
    let r = http
        .get(format!("{gw}/api/v1/orders/{order_id}"))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the restored order is served through the gateway"
    );
    let restored: Value = r.json().await.unwrap();
    assert_eq!(restored["status"], "delivered");
}
