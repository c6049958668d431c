//! The customer's cart.

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use foodapp_api::auth::Role;
use serde_json::json;

#[tokio::test]
async fn customers_set_remove_and_clear_cart_items() {
    let app = TestApp::new().await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let (_, other) = app.user(&[Role::Customer]).await;
    let cat = app.category("Pizza").await;
    let a = app.item(cat, "Margherita", 950, None).await;
    let b = app.item(cat, "Diavola", 1150, None).await;

    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/cart/items/{a}"),
            Some(&token),
            Some(json!({"quantity": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/cart/items/{b}"),
            Some(&token),
            Some(json!({"quantity": 1})),
        )
        .await;
    assert_eq!(r.body["total_cents"], 2 * 950 + 1150);
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/cart/items/{a}"),
            Some(&token),
            Some(json!({"quantity": 5})),
        )
        .await;
    assert_eq!(
        r.body["items"][0]["quantity"], 5,
        "setting again replaces the quantity"
    );
    assert_eq!(r.body["items"][0]["line_total_cents"], 4750);

    let theirs = app.get("/api/v1/cart", Some(&other)).await;
    assert_eq!(theirs.body["items"], json!([]), "carts are per customer");

    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/cart/items/{a}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/cart/items/{a}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(Method::DELETE, "/api/v1/cart", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get("/api/v1/cart", Some(&token)).await;
    assert_eq!(
        (r.body["items"].clone(), r.body["total_cents"].as_i64()),
        (json!([]), Some(0))
    );
}

#[tokio::test]
async fn bad_cart_changes_are_refused() {
    let app = TestApp::new().await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let (_, courier) = app.user(&[Role::Courier]).await;
    let cat = app.category("Pizza").await;
    let a = app.item(cat, "Margherita", 950, None).await;
    let off = app.item(cat, "Seasonal", 950, None).await;
    sqlx::query("UPDATE menu_items SET available = false WHERE id = $1")
        .bind(off)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let put = |id: String, body| {
        let token = token.clone();
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                &format!("/api/v1/cart/items/{id}"),
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let r = put(a.to_string(), json!({"quantity": 0})).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
    let r = put(a.to_string(), json!({"quantity": 101})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = put(a.to_string(), json!({"qty": 1})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = put(uuid::Uuid::new_v4().to_string(), json!({"quantity": 1})).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    let r = put(off.to_string(), json!({"quantity": 1})).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "item_unavailable")
    );
    let r = put("abc".into(), json!({"quantity": 1})).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let r = app.get("/api/v1/cart", Some(&courier)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_cart_holds_at_most_an_orders_worth_of_lines() {
    let app = TestApp::new().await;
    let (customer_id, customer) = app.user(&[Role::Customer]).await;
    let category = app.category("Many").await;
    let mut items = Vec::new();
    for i in 0..51 {
        items.push(app.item(category, &format!("Dish {i}"), 100, None).await);
    }
    let put = async |item: uuid::Uuid, quantity: i32| {
        app.call(
            Method::PUT,
            &format!("/api/v1/cart/items/{item}"),
            Some(&customer),
            Some(json!({"quantity": quantity})),
        )
        .await
    };
    for item in &items[..50] {
        let r = put(*item, 1).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = put(items[50], 1).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "cart_full"),
        "{}",
        r.text
    );
    let r = put(items[0], 3).await;
    assert_eq!(r.status, StatusCode::OK, "changing a quantity is fine");
    // A cart past the limit (two additions racing) is never ordered.
    sqlx::query("INSERT INTO cart_items (user_id, menu_item_id, quantity) VALUES ($1, $2, 1)")
        .bind(customer_id)
        .bind(items[50])
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = app
        .call_with(
            Method::POST,
            "/api/v1/orders",
            Some(&customer),
            Some(json!({"from_cart": true, "payment": {"method": "cash"}})),
            &[("idempotency-key", "cart-51")],
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        "{}",
        r.text
    );
}
