//! SIGTERM while orders are in flight: the API stops accepting, finishes
//! what it started and exits 0; every acknowledged order is committed, and
//! nothing is committed without its acknowledgement reaching the client.

use std::process::Stdio;
use std::time::Duration;

use foodapp_api::auth::Role;
use foodapp_api::auth::tokens::JwtKeys;
use foodapp_e2e::{Database, binary};
use serde_json::json;
use uuid::Uuid;

const SECRET: &str = "shutdown-secret-shutdown-secret-xyz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_orders_and_loses_none() {
    let db = Database::new().await;
    foodapp_api::seed::seed_demo(&db.pool, false).await.unwrap();
    let item: Uuid = sqlx::query_scalar("SELECT id FROM menu_items WHERE stock IS NULL LIMIT 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let customer = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash) VALUES ($1, 'sd@e2e.io', 'SD', 'x')",
    )
    .bind(customer)
    .execute(&db.pool)
    .await
    .unwrap();
    let token = JwtKeys::new(
        SECRET.as_bytes(),
        Duration::from_secs(900),
        Duration::from_secs(900),
    )
    .issue_access(customer, &[Role::Customer])
    .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = tokio::process::Command::new(binary("foodapp-api"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = reqwest::Client::new();
    let mut requests = Vec::new();
    for i in 0..300 {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        requests.push(tokio::spawn(async move {
            // Spread over time so that SIGTERM lands in the middle.
            tokio::time::sleep(Duration::from_millis(i)).await;
            client
                .post(format!("{base}/api/v1/orders"))
                .bearer_auth(token)
                .header("idempotency-key", format!("sd-{i}"))
                .json(&json!({"items": [{"menu_item_id": item, "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"}}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    let pid = api.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );

    let mut acknowledged = 0i64;
    let mut refused = 0;
    for r in requests {
        match r.await.unwrap() {
            Ok(201) => acknowledged += 1,
            Ok(other) => panic!("an order got {other} during shutdown"),
            Err(_) => refused += 1,
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(30), api.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the API exits cleanly: {status}");
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        acknowledged > 0 && refused > 0,
        "SIGTERM came mid-stream ({acknowledged} acknowledged, {refused} refused)"
    );
    assert_eq!(
        committed, acknowledged,
        "every acknowledged order committed, none committed unacknowledged"
    );
}
