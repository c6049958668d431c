//! Placing and reading orders against a real PostgreSQL: stock never
//! oversold, idempotent retries, role-scoped reads.

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::{Server, TestApp, cash, user_in};
use foodapp_api::auth::Role;
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn placing_an_order_snapshots_prices_decrements_stock_and_records_payment() {
    let app = TestApp::new().await;
    let (customer, token) = app.user(&[Role::Customer]).await;
    let cat = app.category("Pizza").await;
    let pizza = app.item(cat, "Margherita", 950, Some(5)).await;
    let water = app.item(cat, "Water", 250, None).await;

    let r = app.order(&token,
        "k1",
        json!({"items": [{"menu_item_id": pizza, "quantity": 2}, {"menu_item_id": water, "quantity": 1}],
               "payment": {"method": "card", "token": "tok_visa"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["status"], "placed");
    assert_eq!(r.body["customer_id"], customer.to_string());
    assert_eq!(r.body["total_cents"], 2 * 950 + 250);
    assert_eq!(r.body["payment"]["status"], "captured");
    assert_eq!(r.body["payment"]["amount_cents"], 2150);
    assert_eq!(r.body["history"][0]["to_status"], "placed");
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.headers["location"],
        format!("/api/v1/orders/{id}").as_str()
    );
    assert_eq!(app.stock(pizza).await, Some(3));
    assert_eq!(app.stock(water).await, None);

    // A later price change does not touch the placed order.
    sqlx::query("UPDATE menu_items SET price_cents = 9999 WHERE id = $1")
        .bind(pizza)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let got = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["total_cents"], 2150);
    assert_eq!(got.body, r.body, "GET shows what POST answered");
}

#[tokio::test]
async fn ordering_from_the_cart_empties_it() {
    let app = TestApp::new().await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let cat = app.category("Burgers").await;
    let burger = app.item(cat, "Classic", 1090, Some(10)).await;
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/cart/items/{burger}"),
            Some(&token),
            Some(json!({"quantity": 3})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let r = app
        .order(
            &token,
            "cart-1",
            json!({"from_cart": true, "payment": cash()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["items"][0]["quantity"], 3);
    assert_eq!(r.body["total_cents"], 3270);
    assert_eq!(app.stock(burger).await, Some(7));
    let cart = app.get("/api/v1/cart", Some(&token)).await;
    assert_eq!(cart.body["items"], json!([]));

    // Retrying after the cart was emptied still returns the same order.
    let again = app
        .order(
            &token,
            "cart-1",
            json!({"from_cart": true, "payment": cash()}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.text, r.text);
    // A new order from the now empty cart is refused.
    let empty = app
        .order(
            &token,
            "cart-2",
            json!({"from_cart": true, "payment": cash()}),
        )
        .await;
    assert_eq!(empty.status, StatusCode::CONFLICT);
    assert_eq!(empty.code(), "cart_empty");
}

#[tokio::test]
async fn oversell_is_impossible_under_concurrent_orders_across_two_replicas() {
    let app = TestApp::new().await;
    let cat = app.category("Desserts").await;
    let cake = app.item(cat, "Last cakes", 600, Some(10)).await;
    let a = Server::start(app.db.pool.clone()).await;
    let b = Server::start(app.db.another_pool().await).await;
    let client = reqwest::Client::new();

    let mut buyers = Vec::new();
    for i in 0..50 {
        let (_, token) = user_in(&app.state, &[Role::Customer]).await;
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let client = client.clone();
        buyers.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/api/v1/orders"))
                .bearer_auth(token)
                .header("idempotency-key", Uuid::new_v4().to_string())
                .json(&json!({"items": [{"menu_item_id": cake, "quantity": 1}], "payment": {"method": "cash"}}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut created = 0;
    let mut sold_out = 0;
    for b in buyers {
        let (status, body) = b.await.unwrap();
        match status.as_u16() {
            201 => created += 1,
            409 => {
                assert_eq!(body["code"], "insufficient_stock");
                sold_out += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created, sold_out), (10, 40));
    assert_eq!(app.stock(cake).await, Some(0));
    assert_eq!(app.count("orders").await, 10);
    assert_eq!(
        app.count("orders WHERE payment_status = 'captured'").await,
        10
    );
}

#[tokio::test]
async fn the_same_idempotency_key_sent_50_times_concurrently_makes_one_order() {
    let app = Arc::new(TestApp::new().await);
    let (_, token) = app.user(&[Role::Customer]).await;
    let cat = app.category("Drinks").await;
    let lemonade = app.item(cat, "Lemonade", 350, Some(100)).await;
    let body = json!({"items": [{"menu_item_id": lemonade, "quantity": 2}], "payment": {"method": "wallet", "token": "tok_w"}});

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, token, body) = (app.clone(), token.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            app.order(&token, "same-key", body).await
        }));
    }
    let mut texts = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        texts.push(r.text);
    }
    assert!(
        texts.iter().all(|t| *t == texts[0]),
        "every reply has the same bytes"
    );
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(
        app.count("orders WHERE payment_status = 'captured'").await,
        1
    );
    assert_eq!(app.stock(lemonade).await, Some(98));

    let replay = app.order(&token, "same-key", body).await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.text, texts[0]);

    let different = app.order(&token,
        "same-key",
        json!({"items": [{"menu_item_id": lemonade, "quantity": 3}], "payment": {"method": "wallet", "token": "tok_w"}}),
    )
    .await;
    assert_eq!(different.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(different.code(), "idempotency_key_reused");
    assert_eq!(app.count("orders").await, 1);
}

#[tokio::test]
async fn idempotency_keys_belong_to_one_customer() {
    let app = TestApp::new().await;
    let (_, alice) = app.user(&[Role::Customer]).await;
    let (_, bob) = app.user(&[Role::Customer]).await;
    let cat = app.category("Salads").await;
    let salad = app.item(cat, "Greek", 850, None).await;
    let body = json!({"items": [{"menu_item_id": salad, "quantity": 1}], "payment": cash()});
    let a = app.order(&alice, "shared", body.clone()).await;
    let b = app.order(&bob, "shared", body).await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_ne!(a.body["id"], b.body["id"]);
}

#[tokio::test]
async fn bad_orders_get_precise_4xx_and_change_nothing() {
    let app = TestApp::new().await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let (_, kitchen) = app.user(&[Role::Kitchen]).await;
    let cat = app.category("Pizza").await;
    let pizza = app.item(cat, "Margherita", 950, Some(2)).await;
    let off = app.item(cat, "Seasonal", 1200, None).await;
    sqlx::query("UPDATE menu_items SET available = false WHERE id = $1")
        .bind(off)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let line = |id: Uuid, q: i64| json!({"items": [{"menu_item_id": id, "quantity": q}], "payment": cash()});

    let cases: Vec<(Value, Option<&str>, StatusCode, &str)> = vec![
        (
            line(pizza, 3),
            Some("a"),
            StatusCode::CONFLICT,
            "insufficient_stock",
        ),
        (
            line(off, 1),
            Some("b"),
            StatusCode::CONFLICT,
            "item_unavailable",
        ),
        (
            line(Uuid::new_v4(), 1),
            Some("c"),
            StatusCode::CONFLICT,
            "unknown_item",
        ),
        (
            line(pizza, 0),
            Some("d"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            line(pizza, 101),
            Some("e"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            line(pizza, 1),
            None,
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
        ),
        (
            json!({"payment": cash()}),
            Some("f"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"items": [{"menu_item_id": pizza, "quantity": 1}]}),
            Some("g"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"items": [{"menu_item_id": pizza, "quantity": 1}], "payment": {"method": "bitcoin"}}),
            Some("h"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"items": [{"menu_item_id": "nope", "quantity": 1}], "payment": cash()}),
            Some("i"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"items": [{"menu_item_id": pizza, "quantity": 1}], "payment": {"method": "card", "token": "tok_declined"}}),
            Some("j"),
            StatusCode::PAYMENT_REQUIRED,
            "payment_declined",
        ),
        (
            json!({"items": [{"menu_item_id": pizza, "quantity": 1}], "payment": cash(), "coupon": "FREE"}),
            Some("k"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (body, key, status, code) in cases {
        let headers: Vec<(&str, &str)> = key
            .map(|k| vec![("idempotency-key", k)])
            .unwrap_or_default();
        let r = app
            .call_with(
                Method::POST,
                "/api/v1/orders",
                Some(&token),
                Some(body.clone()),
                &headers,
            )
            .await;
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.text);
        assert!(r.is_problem());
    }
    let r = app.order(&kitchen, "staff", line(pizza, 1)).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = app.post("/api/v1/orders", None, line(pizza, 1)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(app.count("orders").await, 0);
    assert_eq!(app.stock(pizza).await, Some(2));
}

#[tokio::test]
async fn orders_are_visible_by_role_and_listed_newest_first() {
    let app = TestApp::new().await;
    let (alice_id, alice) = app.user(&[Role::Customer]).await;
    let (_, bob) = app.user(&[Role::Customer]).await;
    let (_, kitchen) = app.user(&[Role::Kitchen]).await;
    let (courier_id, courier) = app.user(&[Role::Courier]).await;
    let cat = app.category("Pizza").await;
    let pizza = app.item(cat, "Margherita", 950, None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = app
            .order(
                &alice,
                &format!("a{i}"),
                json!({"items": [{"menu_item_id": pizza, "quantity": 1}], "payment": cash()}),
            )
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let bobs = app
        .order(
            &bob,
            "b",
            json!({"items": [{"menu_item_id": pizza, "quantity": 1}], "payment": cash()}),
        )
        .await;
    let bob_order = bobs.body["id"].as_str().unwrap().to_owned();

    let r = app
        .get(&format!("/api/v1/orders/{bob_order}"), Some(&alice))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found"),
        "another customer's order is hidden"
    );
    let r = app
        .get(&format!("/api/v1/orders/{bob_order}"), Some(&kitchen))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .get(&format!("/api/v1/orders/{bob_order}"), Some(&courier))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "not assigned to this courier"
    );
    sqlx::query("UPDATE orders SET courier_id = $1 WHERE id = $2")
        .bind(courier_id)
        .bind(Uuid::parse_str(&bob_order).unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = app
        .get(&format!("/api/v1/orders/{bob_order}"), Some(&courier))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.get("/api/v1/orders", Some(&courier)).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);

    // Alice pages through her own orders, newest first.
    let first = app.get("/api/v1/orders?limit=2", Some(&alice)).await;
    assert_eq!(first.status, StatusCode::OK);
    let page1: Vec<&str> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(page1, vec![ids[2].as_str(), ids[1].as_str()]);
    assert!(
        first.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["customer_id"] == alice_id.to_string())
    );
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app
        .get(
            &format!("/api/v1/orders?limit=2&cursor={cursor}"),
            Some(&alice),
        )
        .await;
    assert_eq!(second.body["items"][0]["id"], ids[0].as_str());
    assert!(second.body.get("next_cursor").is_none());

    let staff = app
        .get("/api/v1/orders?status=placed&limit=100", Some(&kitchen))
        .await;
    assert_eq!(staff.body["items"].as_array().unwrap().len(), 4);
    let none = app
        .get("/api/v1/orders?status=delivered", Some(&kitchen))
        .await;
    assert_eq!(none.body["items"], json!([]));
    let bad = app.get("/api/v1/orders?status=lost", Some(&kitchen)).await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let bad = app.get("/api/v1/orders?cursor=zzz", Some(&kitchen)).await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid_cursor")
    );
    let bad = app.get("/api/v1/orders/not-a-uuid", Some(&kitchen)).await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
}
