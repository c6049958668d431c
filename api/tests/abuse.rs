//! The API as an attacker or an unlucky schedule meets it: lock-order
//! deadlocks, stock hoarding, live streams as a weapon, refresh-token and
//! role races, numbers at the edge. Each answer is a 2xx or a precise 4xx.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{Server, TestApp, cash, user_in};
use foodapp_api::auth::Role;
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

/// Deadlocks PostgreSQL detected in this test's database so far. Statistics
/// reach the view when a session ends, so `pool` is closed first.
async fn deadlocks(app: &TestApp) -> i64 {
    let pool = app.db.another_pool().await;
    let n = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn the_sweeper_and_new_orders_over_the_same_items_never_deadlock() {
    let app = TestApp::with_settings(foodapp_api::Settings {
        order_auto_reject_after: Duration::from_millis(1),
        ..common::settings()
    })
    .await;
    let cat = app.category("Tapas").await;
    let mut items = Vec::new();
    for i in 0..12 {
        items.push(
            app.item(cat, &format!("Tapa {i}"), 300, Some(1_000_000))
                .await,
        );
    }
    let mut customers = Vec::new();
    for _ in 0..6 {
        customers.push(app.user(&[Role::Customer]).await.1);
    }
    let before = deadlocks(&app).await;

    // Six customers order four overlapping items at a time while the sweeper
    // rejects (and restocks) whatever is older than a millisecond.
    let placing = futures::future::join_all(customers.iter().enumerate().map(|(c, token)| {
        let app = &app;
        let items = &items;
        async move {
            let mut statuses = Vec::new();
            for n in 0..40usize {
                let lines: Vec<Value> = (0..4)
                    .map(|k| json!({"menu_item_id": items[(c * 5 + n * 7 + k * 3) % 12], "quantity": 1}))
                    .collect();
                let r = app.order(token,
                    &Uuid::new_v4().to_string(),
                    json!({"items": lines, "payment": cash()}),
                )
                .await;
                statuses.push((r.status, r.text));
            }
            statuses
        }
    }));
    let done = std::sync::atomic::AtomicBool::new(false);
    let sweeping = async {
        let mut rejected = 0;
        let mut errors = Vec::new();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            match foodapp_api::orders::sweeper::sweep_once(&app.state).await {
                Ok(n) => rejected += n,
                Err(e) => errors.push(e.to_string()),
            }
        }
        (rejected, errors)
    };
    let (placed, (rejected, errors)) = tokio::join!(
        async {
            let placed = placing.await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            placed
        },
        sweeping
    );
    let failed: Vec<_> = placed
        .iter()
        .flatten()
        .filter(|(s, _)| *s != StatusCode::CREATED)
        .collect();
    assert!(failed.is_empty(), "orders that failed: {failed:?}");
    assert!(errors.is_empty(), "sweeps that failed: {errors:?}");
    assert!(rejected > 0, "the sweeper ran alongside the orders");
    app.db.pool.close().await;
    assert_eq!(deadlocks(&app).await - before, 0, "deadlocks detected");
}

#[tokio::test]
async fn a_customer_holds_only_so_many_open_cash_orders() {
    let app = TestApp::with_settings(foodapp_api::Settings {
        max_unpaid_orders: 3,
        ..common::settings()
    })
    .await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let (_, kitchen) = app.user(&[Role::Kitchen]).await;
    let cat = app.category("Sushi").await;
    let roll = app.item(cat, "Maki", 700, Some(1000)).await;
    let line = |q: i32| json!([{"menu_item_id": roll, "quantity": q}]);

    // Ten concurrent cash orders: three get through, whatever the schedule.
    let keys: Vec<String> = (0..10).map(|i| format!("hoard-{i}")).collect();
    let replies = futures::future::join_all(
        keys.iter()
            .map(|key| app.order(&token, key, json!({"items": line(1), "payment": cash()}))),
    )
    .await;
    let placed: Vec<&common::Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert_eq!(placed.len(), 3);
    for r in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(r.code(), "too_many_unpaid_orders");
        assert!(r.is_problem());
        assert_eq!(r.body["extra"]["limit"], 3);
    }
    assert_eq!(
        app.stock(roll).await,
        Some(997),
        "refused orders took no stock"
    );

    // A retry of a placed one still replays; card orders are not limited.
    let again = app
        .order(
            &token,
            "hoard-0",
            json!({"items": line(1), "payment": cash()}),
        )
        .await;
    if placed.iter().any(|r| r.body["id"] == again.body["id"]) {
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    let card = app
        .order(
            &token,
            "by-card",
            json!({"items": line(1), "payment": {"method": "card", "token": "tok_visa"}}),
        )
        .await;
    assert_eq!(card.status, StatusCode::CREATED, "{}", card.text);

    // A finished order frees its place.
    let first = placed[0].body["id"].as_str().unwrap();
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/orders/{first}/reject"),
            Some(&kitchen),
            Some(json!({"reason": "closed"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let next = app
        .order(
            &token,
            "after-reject",
            json!({"items": line(1), "payment": cash()}),
        )
        .await;
    assert_eq!(next.status, StatusCode::CREATED, "{}", next.text);
}

#[tokio::test]
async fn a_retry_gets_the_stored_reply_of_a_multi_line_order_byte_for_byte() {
    let app = TestApp::new().await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let (_, kitchen) = app.user(&[Role::Kitchen]).await;
    let cat = app.category("Mezze").await;
    let mut lines = Vec::new();
    for (i, price) in [450, 1200, 99, 2500, 0].into_iter().enumerate() {
        let item = app
            .item(cat, &format!("Mezze \"{i}\" ü"), price, Some(50))
            .await;
        lines.push(json!({"menu_item_id": item, "quantity": i + 1}));
    }
    let body = json!({"items": lines, "payment": {"method": "wallet", "token": "tok_wallet"}});
    let first = app.order(&token, "multi", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["items"].as_array().unwrap().len(), 5);
    let id = first.body["id"].as_str().unwrap().to_owned();
    // What POST answered is what GET shows of a new order.
    let got = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
    assert_eq!(got.body, first.body);

    // The order moves on and the menu changes: a retry still gets the reply.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/orders/{id}/accept"),
            Some(&kitchen),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    sqlx::query("UPDATE menu_items SET price_cents = price_cents + 1, name = name || '!'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let concurrent =
        futures::future::join_all((0..5).map(|_| app.order(&token, "multi", body.clone()))).await;
    for again in concurrent {
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(again.headers["location"], first.headers["location"]);
        assert_eq!(again.text, first.text, "byte for byte");
    }
}

#[tokio::test]
async fn stock_is_bounded_and_returned_units_never_overflow() {
    let app = TestApp::new().await;
    let (_, manager) = app.user(&[Role::Manager]).await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let cat = app.category("Bulk").await;
    let too_much = app
        .post(
            "/api/v1/menu-items",
            Some(&manager),
            json!({"category_id": cat, "name": "Rice", "price_cents": 10, "stock": i32::MAX}),
        )
        .await;
    assert_eq!(too_much.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(too_much.code(), "validation_failed");

    // Stock set near the limit behind the API's back: an order is rejected
    // and its units come back without an overflow error blocking the sweep.
    let rice = app.item(cat, "Rice", 10, Some(10)).await;
    let placed = app
        .order(
            &token,
            "rice",
            json!({"items": [{"menu_item_id": rice, "quantity": 5}], "payment": cash()}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::CREATED);
    sqlx::query("UPDATE menu_items SET stock = 2147483645 WHERE id = $1")
        .bind(rice)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let id = placed.body["id"].as_str().unwrap();
    let cancelled = app
        .call(
            Method::POST,
            &format!("/api/v1/orders/{id}/cancel"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(app.stock(rice).await, Some(i32::MAX));
}

/// Opens a live stream of `order` on `base`.
async fn follow(base: &str, token: &str, order: &str, last: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(format!("{base}/api/v1/orders/{order}/events"))
        .bearer_auth(token);
    if let Some(id) = last {
        req = req.header("last-event-id", id);
    }
    req.send().await.unwrap()
}

/// The `status` events of a stream until it ends (within `within`).
async fn until_end(resp: reqwest::Response, within: Duration) -> Vec<Value> {
    let body = tokio::time::timeout(within, resp.text())
        .await
        .expect("the stream ends")
        .unwrap();
    body.split("\n\n")
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

async fn place_one(app: &TestApp, token: &str) -> String {
    let cat = app.category(&format!("Cat {}", Uuid::new_v4())).await;
    let item = app.item(cat, "Soup", 500, None).await;
    let r = app
        .order(
            token,
            &Uuid::new_v4().to_string(),
            json!({"items": [{"menu_item_id": item, "quantity": 1}], "payment": cash()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn live_streams_are_limited_per_user_and_in_total() {
    let app = TestApp::new().await;
    let settings = foodapp_api::Settings {
        live_streams_per_user: 2,
        live_streams_total: 3,
        ..common::settings()
    };
    let server = Server::start_with(app.db.pool.clone(), settings).await;
    let (_, alice) = user_in(&server.state, &[Role::Customer]).await;
    let (_, bob) = user_in(&server.state, &[Role::Customer]).await;
    let (_, carol) = user_in(&server.state, &[Role::Customer]).await;
    let a = place_one(&app, &alice).await;
    let b = place_one(&app, &bob).await;
    let c = place_one(&app, &carol).await;

    let first = follow(&server.base, &alice, &a, None).await;
    let second = follow(&server.base, &alice, &a, None).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = follow(&server.base, &alice, &a, None).await;
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["content-type"], "application/problem+json");
    let problem: Value = third.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_streams");

    let bobs = follow(&server.base, &bob, &b, None).await;
    assert_eq!(bobs.status(), 200);
    let carols = follow(&server.base, &carol, &c, None).await;
    assert_eq!(carols.status(), 429, "three streams in total");
    assert_eq!(server.state.followers.open(), 3);

    // Closing a stream frees its place.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.state.followers.open() > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream keeps its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(follow(&server.base, &carol, &c, None).await.status(), 200);
}

#[tokio::test]
async fn streams_of_finished_orders_end_whatever_last_event_id_says() {
    let app = TestApp::new().await;
    let server = Server::start(app.db.pool.clone()).await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let order = place_one(&app, &token).await;
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/orders/{order}/cancel"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let all = until_end(
        follow(&server.base, &token, &order, None).await,
        Duration::from_secs(5),
    )
    .await;
    let statuses: Vec<&str> = all
        .iter()
        .map(|e| e["to_status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["placed", "cancelled"]);
    for last in ["9223372036854775807", &all[1]["event_id"].to_string(), "-5"] {
        let events = until_end(
            follow(&server.base, &token, &order, Some(last)).await,
            Duration::from_secs(5),
        )
        .await;
        assert!(events.len() <= 2, "{last}: {events:?}");
    }
    let bad = follow(&server.base, &token, &order, Some("yesterday")).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(server.state.followers.open(), 0);
}

#[tokio::test]
async fn an_open_order_followed_from_a_future_event_id_still_gets_what_comes() {
    let app = TestApp::new().await;
    let server = Server::start(app.db.pool.clone()).await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let (_, kitchen) = app.user(&[Role::Kitchen]).await;
    let order = place_one(&app, &token).await;
    let stream = follow(&server.base, &token, &order, Some("9223372036854775807")).await;
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/orders/{order}/reject"),
            Some(&kitchen),
            Some(json!({"reason": "no gas"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = until_end(stream, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["to_status"], "rejected");
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = TestApp::new().await;
    let server = Server::start(app.db.pool.clone()).await;
    let (customer, token) = app.user(&[Role::Customer]).await;
    let order = place_one(&app, &token).await;
    // A token with two seconds left.
    let ttl = server.state.keys.access_ttl.as_secs() as i64;
    let short = server
        .state
        .keys
        .issue_access_at(
            customer,
            &[Role::Customer],
            chrono::Utc::now().timestamp() - ttl + 2,
        )
        .unwrap();
    let stream = follow(&server.base, &short, &order, None).await;
    assert_eq!(stream.status(), 200);
    let events = until_end(stream, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "the placement, then the end");
}

#[tokio::test]
async fn a_change_made_while_notifications_reconnect_still_reaches_the_stream() {
    let app = TestApp::new().await;
    let server = Server::start(app.db.another_pool().await).await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let (_, kitchen) = app.user(&[Role::Kitchen]).await;
    let order = place_one(&app, &token).await;
    let stream = follow(&server.base, &token, &order, None).await;
    let mut body = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"placed\""));

    // The replica's LISTEN connection is cut; the order is accepted before
    // the listener is back, so its NOTIFY reaches nobody.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(cut, 1);
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/orders/{order}/accept"),
            Some(&kitchen),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let next = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the missed change arrives after the reconnect")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&next);
    assert!(text.contains("\"accepted\""), "{text}");
}

#[tokio::test]
async fn a_reused_refresh_token_racing_its_rotation_leaves_no_live_session() {
    let app = TestApp::new().await;
    let email = format!("{}@race.foodapp.io", Uuid::new_v4());
    let r = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": email, "name": "Racer", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for round in 0..20 {
        let login = app
            .post(
                "/api/v1/auth/token",
                None,
                json!({"email": email, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.text);
        let refresh = login.body["refresh_token"].as_str().unwrap().to_owned();
        // The owner and a thief present the same token at once.
        let replies = futures::future::join_all((0..4).map(|_| {
            app.post(
                "/api/v1/auth/refresh",
                None,
                json!({"refresh_token": refresh}),
            )
        }))
        .await;
        let won = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        assert_eq!(won, 1, "round {round}: exactly one rotation");
        assert!(replies.iter().all(|r| r.status == StatusCode::OK
            || r.code() == "refresh_token_reused"
            || r.code() == "invalid_refresh_token"));
        if replies.iter().any(|r| r.code() == "refresh_token_reused") {
            // Reuse was seen: the family is gone, the winner's new token too.
            let new = replies
                .iter()
                .find(|r| r.status == StatusCode::OK)
                .unwrap()
                .body["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned();
            let after = app
                .post("/api/v1/auth/refresh", None, json!({"refresh_token": new}))
                .await;
            assert_eq!(
                after.status,
                StatusCode::UNAUTHORIZED,
                "round {round}: {}",
                after.text
            );
        }
    }
}

/// `who` keeps only the customer role, asked with `token`.
async fn demote(app: &TestApp, who: Uuid, token: &str) -> common::Reply {
    app.call(
        Method::PUT,
        &format!("/api/v1/users/{who}/roles"),
        Some(token),
        Some(json!({"roles": ["customer"]})),
    )
    .await
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one() {
    let app = TestApp::new().await;
    for _ in 0..10 {
        sqlx::query("UPDATE users SET roles = '{customer}' WHERE 'admin' = ANY (roles)")
            .execute(&app.db.pool)
            .await
            .unwrap();
        let (a, a_token) = app.user(&[Role::Admin]).await;
        let (b, b_token) = app.user(&[Role::Admin]).await;
        let (x, y) = tokio::join!(demote(&app, b, &a_token), demote(&app, a, &b_token));
        let admins: i64 =
            sqlx::query_scalar("SELECT count(*) FROM users WHERE 'admin' = ANY (roles)")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(
            admins, 1,
            "{} {} / {} {}",
            x.status, x.text, y.status, y.text
        );
        let loser = if x.status == StatusCode::OK { &y } else { &x };
        assert!(loser.is_problem());
        assert!(
            [StatusCode::FORBIDDEN, StatusCode::CONFLICT].contains(&loser.status),
            "{}",
            loser.text
        );
    }
}

#[tokio::test]
async fn a_stale_admin_token_cannot_change_roles_and_admins_keep_their_own() {
    let app = TestApp::new().await;
    sqlx::query("UPDATE users SET roles = '{customer}' WHERE 'admin' = ANY (roles)")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (a, a_token) = app.user(&[Role::Admin]).await;
    // A stale token of a former admin cannot act as one.
    let (b, b_token) = app.user(&[Role::Admin]).await;
    sqlx::query("UPDATE users SET roles = '{customer}' WHERE id = $1")
        .bind(b)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = demote(&app, a, &b_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = demote(&app, a, &a_token).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
}
