//! The menu: manager-only writes, filters, search, sorting and keyset pages.

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use foodapp_api::auth::Role;
use serde_json::{Value, json};

fn names(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn managers_write_categories_and_everyone_reads_them() {
    let app = TestApp::new().await;
    let (_, manager) = app.user(&[Role::Manager]).await;
    let (_, customer) = app.user(&[Role::Customer]).await;

    let r = app
        .post(
            "/api/v1/categories",
            Some(&customer),
            json!({"name": "Soups"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = app
        .post("/api/v1/categories", None, json!({"name": "Soups"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let soups = app
        .post(
            "/api/v1/categories",
            Some(&manager),
            json!({"name": "Soups", "position": 2}),
        )
        .await;
    assert_eq!(soups.status, StatusCode::CREATED, "{}", soups.text);
    let mains = app
        .post(
            "/api/v1/categories",
            Some(&manager),
            json!({"name": "Mains", "position": 1}),
        )
        .await;
    let dup = app
        .post(
            "/api/v1/categories",
            Some(&manager),
            json!({"name": "soups"}),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (StatusCode::CONFLICT, "conflict"));
    let bad = app
        .post("/api/v1/categories", Some(&manager), json!({"name": ""}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    let list = app.get("/api/v1/categories", None).await;
    assert_eq!(names(&list.body), vec!["Mains", "Soups"]);
    let page = app.get("/api/v1/categories?limit=1", None).await;
    assert_eq!(names(&page.body), vec!["Mains"]);
    let page2 = app
        .get(
            &format!(
                "/api/v1/categories?limit=1&cursor={}",
                page.body["next_cursor"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(names(&page2.body), vec!["Soups"]);

    let id = soups.body["id"].as_str().unwrap();
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/categories/{id}"),
            Some(&manager),
            Some(json!({"description": "Hot"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["name"].as_str(), r.body["description"].as_str()),
        (Some("Soups"), Some("Hot"))
    );
    let one = app.get(&format!("/api/v1/categories/{id}"), None).await;
    assert_eq!(one.body["description"], "Hot");

    // A category with items cannot be deleted; an empty one can.
    let mains_id: uuid::Uuid = mains.body["id"].as_str().unwrap().parse().unwrap();
    app.item(mains_id, "Steak", 2500, None).await;
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/categories/{mains_id}"),
            Some(&manager),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/categories/{id}"),
            Some(&manager),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get(&format!("/api/v1/categories/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn menu_items_filter_search_sort_and_paginate() {
    let app = TestApp::new().await;
    let pizza = app.category("Pizza").await;
    let drinks = app.category("Drinks").await;
    app.item(pizza, "Margherita", 950, None).await;
    app.item(pizza, "Diavola", 1150, Some(3)).await;
    app.item(pizza, "Funghi", 1050, None).await;
    app.item(drinks, "Lemonade", 350, None).await;
    let water = app.item(drinks, "Water 100%", 250, None).await;
    sqlx::query("UPDATE menu_items SET available = false WHERE id = $1")
        .bind(water)
        .execute(&app.db.pool)
        .await
        .unwrap();

    let all = app.get("/api/v1/menu-items", None).await;
    assert_eq!(
        names(&all.body),
        vec!["Diavola", "Funghi", "Lemonade", "Margherita", "Water 100%"]
    );
    let by_cat = app
        .get(&format!("/api/v1/menu-items?category={drinks}"), None)
        .await;
    assert_eq!(names(&by_cat.body), vec!["Lemonade", "Water 100%"]);
    let avail = app
        .get(
            &format!("/api/v1/menu-items?category={drinks}&available=true"),
            None,
        )
        .await;
    assert_eq!(names(&avail.body), vec!["Lemonade"]);
    let search = app.get("/api/v1/menu-items?q=MARG", None).await;
    assert_eq!(names(&search.body), vec!["Margherita"]);
    let literal = app.get("/api/v1/menu-items?q=100%25", None).await;
    assert_eq!(
        names(&literal.body),
        vec!["Water 100%"],
        "% is matched literally"
    );
    let cheap = app.get("/api/v1/menu-items?sort=price", None).await;
    assert_eq!(
        names(&cheap.body),
        vec!["Water 100%", "Lemonade", "Margherita", "Funghi", "Diavola"]
    );
    let dear = app.get("/api/v1/menu-items?sort=-price", None).await;
    assert_eq!(
        names(&dear.body),
        vec!["Diavola", "Funghi", "Margherita", "Lemonade", "Water 100%"]
    );

    // Walk every page of the price-descending list two at a time.
    let mut seen = Vec::new();
    let mut url = "/api/v1/menu-items?sort=-price&limit=2".to_owned();
    loop {
        let page = app.get(&url, None).await;
        assert_eq!(page.status, StatusCode::OK);
        seen.extend(names(&page.body));
        match page.body["next_cursor"].as_str() {
            Some(c) => url = format!("/api/v1/menu-items?sort=-price&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, names(&dear.body));

    let first = app.get("/api/v1/menu-items?sort=price&limit=1", None).await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let mixed = app
        .get(
            &format!("/api/v1/menu-items?sort=name&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(
        (mixed.status, mixed.code()),
        (StatusCode::BAD_REQUEST, "invalid_cursor")
    );
    for bad in [
        "sort=cheapest",
        "available=maybe",
        "category=12",
        "limit=0",
        "limit=1000",
        "colour=red",
    ] {
        let r = app.get(&format!("/api/v1/menu-items?{bad}"), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.is_problem());
    }
}

#[tokio::test]
async fn managers_create_update_and_delete_menu_items() {
    let app = TestApp::new().await;
    let (_, manager) = app.user(&[Role::Manager]).await;
    let (_, kitchen) = app.user(&[Role::Kitchen]).await;
    let cat = app.category("Burgers").await;

    let body = json!({"category_id": cat, "name": "Cheeseburger", "price_cents": 1090, "stock": 5});
    let r = app
        .post("/api/v1/menu-items", Some(&kitchen), body.clone())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.post("/api/v1/menu-items", Some(&manager), body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        (r.body["stock"].as_i64(), r.body["available"].as_bool()),
        (Some(5), Some(true))
    );
    let id = r.body["id"].as_str().unwrap().to_owned();

    for bad in [
        json!({"category_id": cat, "name": "X", "price_cents": -1}),
        json!({"category_id": cat, "name": "X", "price_cents": 100, "stock": -2}),
        json!({"category_id": cat, "name": "X", "price_cents": "ten"}),
        json!({"category_id": cat, "name": "X", "price_cents": 1.5}),
        json!({"category_id": cat, "price_cents": 100}),
        json!([cat, "X", 100]),
    ] {
        let r = app
            .post("/api/v1/menu-items", Some(&manager), bad.clone())
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{bad}"
        );
    }
    // A category that does not exist (any more) conflicts with the menu.
    let r = app
        .post(
            "/api/v1/menu-items",
            Some(&manager),
            json!({"category_id": uuid::Uuid::new_v4(), "name": "X", "price_cents": 100}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "unknown_category")
    );
    // Integers written as whole decimals are integers.
    let r = app
        .post(
            "/api/v1/menu-items",
            Some(&manager),
            json!({"category_id": cat, "name": "Y", "price_cents": 250.0, "stock": 3.0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["price_cents"], 250);

    let path = format!("/api/v1/menu-items/{id}");
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(&manager),
            Some(json!({"price_cents": 1190})),
        )
        .await;
    assert_eq!(
        (r.body["price_cents"].as_i64(), r.body["stock"].as_i64()),
        (Some(1190), Some(5)),
        "absent stock unchanged"
    );
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(&manager),
            Some(json!({"stock": null})),
        )
        .await;
    assert!(r.body["stock"].is_null(), "null makes stock unlimited");
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(&manager),
            Some(json!({"stock": 7, "available": false})),
        )
        .await;
    assert_eq!(
        (r.body["stock"].as_i64(), r.body["available"].as_bool()),
        (Some(7), Some(false))
    );
    let one = app.get(&path, None).await;
    assert_eq!(one.body["price_cents"], 1190);

    let r = app.call(Method::DELETE, &path, Some(&manager), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&manager), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(&manager),
            Some(json!({"price_cents": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cached_menu_listings_reflect_writes_on_the_same_replica_at_once() {
    let app = TestApp::with_settings(foodapp_api::Settings {
        menu_cache_ttl: std::time::Duration::from_secs(3600),
        ..common::settings()
    })
    .await;
    let (_, manager) = app.user(&[Role::Manager]).await;
    let cat = app.category("Pizza").await;
    let pizza = app.item(cat, "Margherita", 950, None).await;
    let first = app.get("/api/v1/menu-items", None).await;
    assert_eq!(first.body["items"][0]["price_cents"], 950);
    assert_eq!(first.headers["content-type"], "application/json");

    // Written behind the API's back: the cached page is served.
    sqlx::query("UPDATE menu_items SET price_cents = 1 WHERE id = $1")
        .bind(pizza)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let cached = app.get("/api/v1/menu-items", None).await;
    assert_eq!(cached.body["items"][0]["price_cents"], 950);

    // A write through the API clears the cache.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/menu-items/{pizza}"),
            Some(&manager),
            Some(json!({"price_cents": 990})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let fresh = app.get("/api/v1/menu-items", None).await;
    assert_eq!(fresh.body["items"][0]["price_cents"], 990);
}
