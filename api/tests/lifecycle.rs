//! After placement: the state machine through HTTP with every role, races
//! between staff, auto-rejection by several replicas, refunds, and live
//! tracking across replicas.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{Server, TestApp, cash};
use foodapp_api::auth::Role;
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

struct Cast {
    customer: (Uuid, String),
    other_customer: String,
    kitchen: String,
    manager: String,
    courier: (Uuid, String),
    other_courier: (Uuid, String),
}

async fn cast(app: &TestApp) -> Cast {
    Cast {
        customer: app.user(&[Role::Customer]).await,
        other_customer: app.user(&[Role::Customer]).await.1,
        kitchen: app.user(&[Role::Kitchen]).await.1,
        manager: app.user(&[Role::Manager]).await.1,
        courier: app.user(&[Role::Courier]).await,
        other_courier: app.user(&[Role::Courier]).await,
    }
}

async fn place(app: &TestApp, token: &str, item: Uuid, quantity: i32) -> String {
    let r = app
        .call_with(
            Method::POST,
            "/api/v1/orders",
            Some(token),
            Some(
                json!({"items": [{"menu_item_id": item, "quantity": quantity}], "payment": cash()}),
            ),
            &[("idempotency-key", &Uuid::new_v4().to_string())],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn act(
    app: &TestApp,
    token: &str,
    order: &str,
    action: &str,
    body: Option<Value>,
) -> common::Reply {
    app.call(
        Method::POST,
        &format!("/api/v1/orders/{order}/{action}"),
        Some(token),
        body,
    )
    .await
}

#[tokio::test]
async fn each_action_answers_each_role_as_specified() {
    let app = TestApp::new().await;
    let c = cast(&app).await;
    let cat = app.category("Pizza").await;
    let pizza = app.item(cat, "Margherita", 950, None).await;
    let order = place(&app, &c.customer.1, pizza, 1).await;
    let courier_body = || Some(json!({"courier_id": c.courier.0}));

    // (token, action, body, expected status, expected code)
    let steps: Vec<(&str, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            &c.customer.1,
            "accept",
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        // A courier with no part in the order (yet) does not see it.
        (
            &c.courier.1,
            "accept",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            &c.other_customer,
            "cancel",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            &c.kitchen,
            "cancel",
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            &c.kitchen,
            "ready",
            None,
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
        (
            &c.courier.1,
            "pickup",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            &c.kitchen,
            "reject",
            Some(json!({"reason": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (&c.kitchen, "accept", None, StatusCode::OK, ""),
        (
            &c.kitchen,
            "accept",
            None,
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
        (
            &c.customer.1,
            "cancel",
            None,
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
        (
            &c.manager,
            "assign",
            Some(json!({"courier_id": c.customer.0})),
            StatusCode::CONFLICT,
            "not_a_courier",
        ),
        (
            &c.manager,
            "assign",
            Some(json!({"courier_id": c.other_courier.0})),
            StatusCode::OK,
            "",
        ),
        (&c.manager, "assign", courier_body(), StatusCode::OK, ""),
        (
            &c.courier.1,
            "pickup",
            None,
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
        (&c.kitchen, "ready", None, StatusCode::OK, ""),
        (
            &c.other_courier.1,
            "pickup",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            &c.kitchen,
            "pickup",
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            &c.courier.1,
            "deliver",
            None,
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
        (&c.courier.1, "pickup", None, StatusCode::OK, ""),
        (
            &c.manager,
            "assign",
            courier_body(),
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
        (&c.courier.1, "deliver", None, StatusCode::OK, ""),
        (
            &c.courier.1,
            "deliver",
            None,
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
        (
            &c.manager,
            "reject",
            Some(json!({"reason": "late"})),
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
    ];
    for (i, (token, action, body, status, code)) in steps.into_iter().enumerate() {
        let r = act(&app, token, &order, action, body).await;
        assert_eq!(r.status, status, "step {i} {action}: {}", r.text);
        if !code.is_empty() {
            assert_eq!(r.code(), code, "step {i} {action}");
        }
    }
    let r = app
        .get(&format!("/api/v1/orders/{order}"), Some(&c.customer.1))
        .await;
    assert_eq!(r.body["status"], "delivered");
    let history: Vec<&str> = r.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_status"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        [
            "placed",
            "accepted",
            "accepted",
            "accepted",
            "ready",
            "out_for_delivery",
            "delivered"
        ]
    );
    assert!(
        r.body["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["at"].is_null())
    );
    let refused = act(&app, &c.kitchen, &order, "accept", None).await;
    assert_eq!(
        refused.body["allowed_actions"],
        json!(null),
        "extra facts are nested"
    );
    assert_eq!(refused.body["extra"]["allowed_actions"], json!([]));
    assert_eq!(refused.body["extra"]["status"], "delivered");
}

#[tokio::test]
async fn cancelling_returns_stock_and_creates_one_refund() {
    let app = TestApp::new().await;
    let c = cast(&app).await;
    let cat = app.category("Cakes").await;
    let cake = app.item(cat, "Cheesecake", 600, Some(5)).await;
    let order = place(&app, &c.customer.1, cake, 2).await;
    assert_eq!(app.stock(cake).await, Some(3));
    let r = act(&app, &c.customer.1, &order, "cancel", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(app.stock(cake).await, Some(5));
    let refunds = app
        .get("/api/v1/refunds?status=pending", Some(&c.manager))
        .await;
    let items = refunds.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (
            items[0]["amount_cents"].as_i64(),
            items[0]["reason"].as_str()
        ),
        (Some(1200), Some("cancelled"))
    );
    let r = app.get("/api/v1/refunds", Some(&c.kitchen)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn accept_and_reject_racing_have_exactly_one_winner() {
    let app = TestApp::new().await;
    let c = cast(&app).await;
    let cat = app.category("Soup").await;
    let soup = app.item(cat, "Minestrone", 700, Some(1000)).await;
    let a = Server::start(app.db.pool.clone()).await;
    let b = Server::start(app.db.another_pool().await).await;
    let client = reqwest::Client::new();
    let mut rejected = 0;
    for _ in 0..15 {
        let order = place(&app, &c.customer.1, soup, 3).await;
        let accept = client
            .post(format!("{}/api/v1/orders/{order}/accept", a.base))
            .bearer_auth(&c.kitchen)
            .send();
        let reject = client
            .post(format!("{}/api/v1/orders/{order}/reject", b.base))
            .bearer_auth(&c.manager)
            .json(&json!({"reason": "kitchen closed"}))
            .send();
        let (x, y) = tokio::join!(accept, reject);
        let mut codes = [x.unwrap().status().as_u16(), y.unwrap().status().as_u16()];
        codes.sort();
        assert_eq!(codes, [200, 409], "exactly one wins");
        let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1::uuid")
            .bind(&order)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        rejected += i64::from(status == "rejected");
    }
    // Every rejected order gave its 3 units back and got one refund; accepted ones kept theirs.
    assert_eq!(
        app.stock(soup).await,
        Some(1000 - 3 * (15 - rejected as i32))
    );
    assert_eq!(app.count("refunds").await, rejected);
    assert_eq!(app.count("order_events").await, 15);
}

#[tokio::test]
async fn orders_not_accepted_in_time_are_rejected_once_even_with_two_sweepers() {
    let app = TestApp::new().await;
    let c = cast(&app).await;
    let cat = app.category("Bread").await;
    let bread = app.item(cat, "Focaccia", 400, Some(50)).await;
    let orders: Vec<String> =
        futures::future::join_all((0..10).map(|_| place(&app, &c.customer.1, bread, 2))).await;
    let kept = &orders[0];
    assert_eq!(
        act(&app, &c.kitchen, kept, "accept", None).await.status,
        StatusCode::OK
    );
    assert_eq!(app.stock(bread).await, Some(30));

    let fast = foodapp_api::Settings {
        order_auto_reject_after: Duration::from_secs(1),
        ..common::settings()
    };
    let a = Server::start_with(app.db.pool.clone(), fast.clone()).await;
    let b = Server::start_with(app.db.another_pool().await, fast).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let rejected: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, (SELECT reason FROM order_events e WHERE e.order_id = o.id) FROM orders o WHERE status <> 'accepted'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rejected.len(), 9);
    assert!(
        rejected
            .iter()
            .all(|(s, r)| s == "rejected" && r.as_deref() == Some("timeout"))
    );
    assert_eq!(
        app.count("order_events").await,
        10,
        "one accept + nine rejections, none twice"
    );
    assert_eq!(app.count("refunds").await, 9);
    assert_eq!(
        app.stock(bread).await,
        Some(48),
        "stock returned exactly once per rejected order"
    );
    let auto: u64 = a.state.metrics.auto_rejections.get() + b.state.metrics.auto_rejections.get();
    assert_eq!(auto, 9);
}

/// Reads `event: status` data lines until `n` arrived.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<Value> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                events.push(serde_json::from_str(data).unwrap());
            }
        }
    }
    // After the final state the server ends the stream.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .is_none()
    );
    events
}

#[tokio::test]
async fn a_follower_on_one_replica_sees_changes_made_through_another_in_order() {
    let app = TestApp::new().await;
    let c = cast(&app).await;
    let cat = app.category("Pasta").await;
    let pasta = app.item(cat, "Carbonara", 1200, None).await;
    let order = place(&app, &c.customer.1, pasta, 1).await;
    let a = Server::start(app.db.pool.clone()).await;
    let b = Server::start(app.db.another_pool().await).await;
    let client = reqwest::Client::new();

    let follow = client
        .get(format!("{}/api/v1/orders/{order}/events", b.base))
        .bearer_auth(&c.customer.1)
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    assert_eq!(follow.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(read_events(follow, 6));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let post = |path: String, token: String, body: Option<Value>| {
        let client = client.clone();
        let base = a.base.clone();
        async move {
            let mut req = client.post(format!("{base}{path}")).bearer_auth(token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            assert_eq!(req.send().await.unwrap().status(), 200);
        }
    };
    post(
        format!("/api/v1/orders/{order}/accept"),
        c.kitchen.clone(),
        None,
    )
    .await;
    post(
        format!("/api/v1/orders/{order}/ready"),
        c.kitchen.clone(),
        None,
    )
    .await;
    post(
        format!("/api/v1/orders/{order}/assign"),
        c.manager.clone(),
        Some(json!({"courier_id": c.courier.0})),
    )
    .await;
    post(
        format!("/api/v1/orders/{order}/pickup"),
        c.courier.1.clone(),
        None,
    )
    .await;
    post(
        format!("/api/v1/orders/{order}/deliver"),
        c.courier.1.clone(),
        None,
    )
    .await;

    let events = reader.await.unwrap();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["to_status"].as_str().unwrap())
        .collect();
    // The history so far (placed), then live; assigning a courier keeps `ready`.
    assert_eq!(
        statuses,
        [
            "placed",
            "accepted",
            "ready",
            "ready",
            "out_for_delivery",
            "delivered"
        ]
    );
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["event_id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // A reconnecting client resumes after the last id it saw, to the end.
    let resumed = client
        .get(format!("{}/api/v1/orders/{order}/events", a.base))
        .bearer_auth(&c.customer.1)
        .header("last-event-id", ids[4].to_string())
        .send()
        .await
        .unwrap();
    let rest = read_events(resumed, 1).await;
    assert_eq!(rest[0]["to_status"], "delivered");

    let stranger = client
        .get(format!("{}/api/v1/orders/{order}/events", a.base))
        .bearer_auth(&c.other_customer)
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 404);
}

#[tokio::test]
async fn a_day_in_the_life() {
    let app = TestApp::new().await;
    let c = cast(&app).await;
    let cat = app.category("Mains").await;
    let burger = app.item(cat, "Burger", 1090, Some(10)).await;

    // Order one goes all the way.
    let first = place(&app, &c.customer.1, burger, 2).await;
    for (token, action, body) in [
        (&c.kitchen, "accept", None),
        (&c.kitchen, "ready", None),
        (
            &c.manager,
            "assign",
            Some(json!({"courier_id": c.courier.0})),
        ),
        (&c.courier.1, "pickup", None),
        (&c.courier.1, "deliver", None),
    ] {
        let r = act(&app, token, &first, action, body).await;
        assert_eq!(r.status, StatusCode::OK, "{action}: {}", r.text);
    }
    let courier_view = app
        .get("/api/v1/orders?status=delivered", Some(&c.courier.1))
        .await;
    assert_eq!(courier_view.body["items"][0]["id"], first.as_str());

    // Order two is rejected and refunded.
    let second = place(&app, &c.customer.1, burger, 1).await;
    let r = act(
        &app,
        &c.kitchen,
        &second,
        "reject",
        Some(json!({"reason": "out of buns"})),
    )
    .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("rejected"))
    );
    assert_eq!(r.body["history"][1]["reason"], "out of buns");
    assert_eq!(app.stock(burger).await, Some(8));
    let refunds = app
        .get("/api/v1/refunds?status=pending", Some(&c.manager))
        .await;
    let refund = refunds.body["items"][0].clone();
    assert_eq!(refund["order_id"], second.as_str());
    let path = format!(
        "/api/v1/refunds/{}/complete",
        refund["id"].as_str().unwrap()
    );
    let done = app.call(Method::POST, &path, Some(&c.manager), None).await;
    assert_eq!(
        (done.status, done.body["status"].as_str()),
        (StatusCode::OK, Some("completed"))
    );
    let again = app.call(Method::POST, &path, Some(&c.manager), None).await;
    assert_eq!(again.body, done.body, "completing twice changes nothing");
    let none = app
        .call(
            Method::POST,
            &format!("/api/v1/refunds/{}/complete", Uuid::new_v4()),
            Some(&c.manager),
            None,
        )
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/v1/refunds?status=pending", Some(&c.manager))
            .await
            .body["items"],
        json!([])
    );

    // The gauges are refreshed in the background; here, at once.
    app.state
        .metrics
        .refresh_gauges(&app.db.pool)
        .await
        .unwrap();
    let m = app.get("/metrics", None).await;
    for needle in [
        "foodapp_order_transitions_total{from=\"placed\",to=\"accepted\"} 1",
        "foodapp_order_transitions_total{from=\"placed\",to=\"rejected\"} 1",
        "foodapp_open_orders{status=\"placed\"} 0",
        "foodapp_refunds_pending 0",
        "foodapp_order_auto_rejections_total 0",
    ] {
        assert!(m.text.contains(needle), "{needle} missing:\n{}", m.text);
    }
}
