//! Operations endpoints, the OpenAPI document and the generic error paths:
//! nothing a client sends yields a 5xx.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::TestApp;
use foodapp_api::auth::Role;
use serde_json::json;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = TestApp::new().await;
    let r = app.get("/healthz", None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["schema_version"],
        foodapp_api::db::expected_version()
    );

    app.get("/api/v1/menu-items", None).await;
    let m = app.get("/metrics", None).await;
    assert_eq!(m.status, StatusCode::OK);
    for needle in [
        "foodapp_http_requests_total{method=\"GET\",route=\"/api/v1/menu-items\",status=\"200\"} 1",
        "foodapp_http_request_duration_seconds_bucket",
        "foodapp_orders_created_total",
        "foodapp_stock_conflicts_total",
        "foodapp_db_pool_connections",
    ] {
        assert!(
            m.text.contains(needle),
            "metrics lack {needle}:\n{}",
            m.text
        );
    }
}

#[tokio::test]
async fn a_scrape_reads_memory_only_and_the_gauges_are_refreshed_apart() {
    let app = TestApp::new().await;
    let (_, token) = app.user(&[foodapp_api::auth::Role::Customer]).await;
    let cat = app.category("Gauges").await;
    let item = app.item(cat, "Counted", 100, None).await;
    let r = app
        .call_with(
            axum::http::Method::POST,
            "/api/v1/orders",
            Some(&token),
            Some(json!({"items": [{"menu_item_id": item, "quantity": 1}], "payment": {"method": "cash"}})),
            &[("idempotency-key", "gauge")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    app.state
        .metrics
        .refresh_gauges(&app.db.pool)
        .await
        .unwrap();
    // With the database gone, a scrape still answers at once: it reads nothing.
    app.db.pool.close().await;
    let m = app.get("/metrics", None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.text.contains("foodapp_open_orders{status=\"placed\"} 1"),
        "{}",
        m.text
    );
}

#[tokio::test]
async fn readiness_fails_while_the_schema_is_behind() {
    let app = TestApp::new().await;
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let r = app.get("/readyz", None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("foodapp-api migrate")
    );
}

#[tokio::test]
async fn readiness_holds_while_the_schema_is_ahead_during_a_rollout() {
    let app = TestApp::new().await;
    // The next release's migration Job ran: old pods must keep serving.
    let next = foodapp_api::db::expected_version() + 1;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer release', true, '\\x00', 1)",
    )
    .bind(next)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["schema_version"], next);
    assert!(foodapp_api::db::check_schema(&app.db.pool).await.is_ok());
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = TestApp::new().await;
    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = r.body["paths"].as_object().unwrap();
    let expected: &[(&str, &[&str])] = &[
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/api/v1/auth/register", &["post"]),
        ("/api/v1/auth/token", &["post"]),
        ("/api/v1/auth/refresh", &["post"]),
        ("/api/v1/auth/logout", &["post"]),
        ("/api/v1/users/me", &["get"]),
        ("/api/v1/users", &["get"]),
        ("/api/v1/users/{id}/roles", &["put"]),
        ("/api/v1/categories", &["get", "post"]),
        ("/api/v1/categories/{id}", &["get", "patch", "delete"]),
        ("/api/v1/menu-items", &["get", "post"]),
        ("/api/v1/menu-items/{id}", &["get", "patch", "delete"]),
        ("/api/v1/cart", &["get", "delete"]),
        ("/api/v1/cart/items/{menu_item_id}", &["put", "delete"]),
        ("/api/v1/orders", &["get", "post"]),
        ("/api/v1/orders/{id}", &["get"]),
        ("/api/v1/orders/{id}/accept", &["post"]),
        ("/api/v1/orders/{id}/reject", &["post"]),
        ("/api/v1/orders/{id}/ready", &["post"]),
        ("/api/v1/orders/{id}/assign", &["post"]),
        ("/api/v1/orders/{id}/pickup", &["post"]),
        ("/api/v1/orders/{id}/deliver", &["post"]),
        ("/api/v1/orders/{id}/cancel", &["post"]),
        ("/api/v1/orders/{id}/events", &["get"]),
        ("/api/v1/refunds", &["get"]),
        ("/api/v1/refunds/{id}/complete", &["post"]),
    ];
    for (path, methods) in expected {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing");
        }
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    let listed: usize = expected.iter().map(|(_, m)| m.len()).sum();
    assert_eq!(
        documented, listed,
        "a route is served but not in this test's list"
    );
    // Each documented route really answers (not the 404 fallback).
    for (path, _) in expected {
        let concrete = path
            .replace("{id}", &uuid::Uuid::nil().to_string())
            .replace("{menu_item_id}", &uuid::Uuid::nil().to_string());
        let r = app.get(&concrete, None).await;
        assert!(
            !(r.status == StatusCode::NOT_FOUND && r.body["detail"] == "route not found"),
            "{path} is not routed"
        );
    }
}

#[tokio::test]
async fn the_docs_page_is_served_offline() {
    let app = TestApp::new().await;
    let r = app.get("/docs/", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("swagger-ui"),
        "{}",
        &r.text[..r.text.len().min(300)]
    );
    let r = app.get("/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "assets are embedded, not fetched from a CDN"
    );
}

#[tokio::test]
async fn malformed_requests_get_problem_documents_never_5xx() {
    let app = TestApp::new().await;
    let (_, manager) = app.user(&[Role::Manager]).await;
    let send = |method: Method, uri: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {manager}"));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.body(Body::from(body)).unwrap()
    };
    let cases = vec![
        (
            send(
                Method::POST,
                "/api/v1/categories",
                Some("application/json"),
                b"{not json".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            send(
                Method::POST,
                "/api/v1/categories",
                Some("text/plain"),
                b"{}".to_vec(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            send(Method::POST, "/api/v1/categories", None, vec![]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            send(
                Method::POST,
                "/api/v1/categories",
                Some("application/json"),
                b"[1,2]".to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            send(
                Method::POST,
                "/api/v1/categories",
                Some("application/json"),
                format!("{{\"name\":\"{}\"}}", "x".repeat(100_000)).into_bytes(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            send(Method::GET, "/api/v1/nothing-here", None, vec![]),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            send(Method::DELETE, "/api/v1/users/me", None, vec![]),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            send(Method::GET, "/api/v1/menu-items/%FF", None, vec![]),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            send(
                Method::PATCH,
                "/api/v1/menu-items/00000000-0000-0000-0000-000000000000",
                Some("application/json"),
                b"{\"price_cents\": 1e99}".to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let r = app.send(req).await;
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.text);
        assert!(r.is_problem(), "{what}");
        assert_eq!(r.body["status"], status.as_u16());
        assert!(r.body["type"].as_str().unwrap().ends_with(code));
    }
    let r = app
        .post(
            "/api/v1/auth/token",
            None,
            json!({"email": 5, "password": null}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn request_ids_are_generated_or_passed_through() {
    let app = TestApp::new().await;
    let r = app.get("/healthz", None).await;
    assert!(!r.headers["x-request-id"].is_empty());
    let r = app
        .call_with(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn a_nul_character_in_any_text_is_a_4xx_not_a_500() {
    let app = TestApp::new().await;
    let r = app.get("/api/v1/menu-items?q=%00", None).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text);
    for (path, body) in [
        (
            "/api/v1/auth/token",
            json!({"email": "a\u{0}@b.io", "password": "a-good-password"}),
        ),
        (
            "/api/v1/auth/register",
            json!({"email": "nul@b.io", "password": "a-good-password", "name": "N\u{0}L"}),
        ),
    ] {
        let r = app.post(path, None, body).await;
        assert!(
            r.status.is_client_error(),
            "{path}: {} {}",
            r.status,
            r.text
        );
        assert_eq!(
            r.body["type"]
                .as_str()
                .map(|t| t.starts_with("https://foodapp.io/problems/")),
            Some(true)
        );
    }
    let (_, manager) = app.user(&[Role::Manager]).await;
    let r = app
        .post(
            "/api/v1/categories",
            Some(&manager),
            json!({"name": "Soups\u{0}"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.code(), "validation_failed");
}

#[tokio::test]
async fn readiness_does_not_wait_for_a_pooled_connection_under_load() {
    let app = TestApp::new().await;
    // Every connection of the request pool busy, as under a burst of orders.
    let mut held = Vec::new();
    while let Ok(Ok(c)) = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        app.state.pool.acquire(),
    )
    .await
    {
        held.push(c);
    }
    assert!(!held.is_empty());
    let started = std::time::Instant::now();
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

/// The switch of a restore makes the database read-only for seconds: reads
/// go on, writes are `503 restoring` with `Retry-After`, and the pool's
/// sessions ended by the switch reconnect on their own.
#[tokio::test]
async fn a_read_only_database_serves_reads_and_answers_writes_503_restoring() {
    let app = TestApp::new().await;
    let category = app.category("Mains").await;
    let item = app.item(category, "Soup", 500, None).await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let order =
        json!({"items": [{"menu_item_id": item, "quantity": 1}], "payment": common::cash()});
    assert_eq!(
        app.order(&token, "before", order.clone()).await.status,
        StatusCode::CREATED
    );

    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url)
        .await
        .unwrap();
    let read_only = |on: bool| {
        format!(
            "ALTER DATABASE {} {}",
            app.db.name,
            if on {
                "SET default_transaction_read_only = on"
            } else {
                "RESET default_transaction_read_only"
            }
        )
    };
    let end_sessions = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                        WHERE datname = current_database() AND pid <> pg_backend_pid()";
    sqlx::query(sqlx::AssertSqlSafe(read_only(true)))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(end_sessions).execute(&mut admin).await.unwrap();

    let menu = app.get("/api/v1/menu-items", None).await;
    assert_eq!(menu.status, StatusCode::OK, "{}", menu.text);
    assert_eq!(
        app.get("/api/v1/orders", Some(&token)).await.status,
        StatusCode::OK
    );
    let refused = app.order(&token, "during", order.clone()).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert_eq!(refused.code(), "restoring");
    assert!(refused.is_problem());
    assert_eq!(refused.headers[header::RETRY_AFTER], "2");

    sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(read_only(false)))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(end_sessions).execute(&mut admin).await.unwrap();
    let retried = app.order(&token, "during", order).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text);
}

/// The server ends every session at once, some in the middle of a query
/// (a restart, a restore's switch): no read fails for it, and the next order
/// goes through.
#[tokio::test]
async fn sessions_ended_by_the_server_fail_no_read() {
    let app = std::sync::Arc::new(TestApp::new().await);
    let category = app.category("Mains").await;
    let item = app.item(category, "Soup", 500, None).await;
    let (_, token) = app.user(&[Role::Customer]).await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url)
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers of what is read from the database every time (the menu is cached).
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (app, token, stop) = (app.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = app.get("/api/v1/orders", Some(&token)).await;
                    if r.status != StatusCode::OK {
                        failed.push(r.text);
                    }
                }
                failed
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut ended = 0;
    for _ in 0..3 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        ended += n;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut failed = Vec::new();
    for r in readers {
        failed.extend(r.await.unwrap());
    }
    assert!(ended >= 3, "sessions were ended: {ended}");
    assert!(
        failed.is_empty(),
        "{} reads failed: {:?}",
        failed.len(),
        failed.first()
    );
    let order =
        json!({"items": [{"menu_item_id": item, "quantity": 1}], "payment": common::cash()});
    let placed = app.order(&token, "after-the-end", order).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
}
