//! Accounts and tokens: registration, login, rotation with reuse detection,
//! logout, and the 4xx answers for every kind of bad credential.

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use foodapp_api::auth::Role;
use serde_json::json;

async fn register_and_login(app: &TestApp, email: &str) -> (String, String) {
    let r = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": email, "password": "s3cret-pass", "name": "Ada"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let t = app
        .post(
            "/api/v1/auth/token",
            None,
            json!({"email": email, "password": "s3cret-pass"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.text);
    (
        t.body["access_token"].as_str().unwrap().to_owned(),
        t.body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn register_login_and_read_own_profile() {
    let app = TestApp::new().await;
    let (access, _) = register_and_login(&app, "Ada@Example.com").await;
    let me = app.get("/api/v1/users/me", Some(&access)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email"], "ada@example.com");
    assert_eq!(me.body["roles"], json!(["customer"]));
    assert!(me.body.get("password_hash").is_none());
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"));

    let dup = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "ADA@example.com", "password": "another-pass", "name": "Ada 2"}),
        )
        .await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::CONFLICT, "email_taken")
    );
}

#[tokio::test]
async fn invalid_registrations_are_refused_with_422() {
    let app = TestApp::new().await;
    for body in [
        json!({"email": "not-an-email", "password": "long-enough", "name": "A"}),
        json!({"email": "a@b.io", "password": "short", "name": "A"}),
        json!({"email": "a@b.io", "password": "long-enough", "name": " "}),
        json!({"email": "a@b.io", "password": "long-enough"}),
        json!({"email": "a@b.io", "password": "long-enough", "name": "A", "roles": ["admin"]}),
    ] {
        let r = app.post("/api/v1/auth/register", None, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{body}"
        );
    }
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let app = TestApp::new().await;
    register_and_login(&app, "bob@example.com").await;
    let wrong = app
        .post(
            "/api/v1/auth/token",
            None,
            json!({"email": "bob@example.com", "password": "wrong-pass"}),
        )
        .await;
    let unknown = app
        .post(
            "/api/v1/auth/token",
            None,
            json!({"email": "eve@example.com", "password": "wrong-pass"}),
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    assert_eq!(wrong.body["detail"], unknown.body["detail"]);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_tampered_missing_and_malformed_tokens_get_401() {
    let app = TestApp::new().await;
    let (id, good) = app.user(&[Role::Customer]).await;
    let expired = app
        .state
        .keys
        .issue_access_at(id, &[Role::Customer], chrono::Utc::now().timestamp() - 3600)
        .unwrap();
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let foreign = foodapp_api::auth::tokens::JwtKeys::new(
        b"some-other-secret-some-other-secret",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    )
    .issue_access(id, &[Role::Admin])
    .unwrap();
    for token in [
        expired.as_str(),
        tampered.as_str(),
        foreign.as_str(),
        "garbage",
    ] {
        let r = app.get("/api/v1/users/me", Some(token)).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{token}"
        );
        assert!(r.is_problem());
    }
    let r = app.get("/api/v1/users/me", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .call_with(
            Method::GET,
            "/api/v1/users/me",
            None,
            None,
            &[("authorization", "Basic dXNlcjpwYXNz")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let ok = app.get("/api/v1/users/me", Some(&good)).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = TestApp::new().await;
    let (_, first) = register_and_login(&app, "carol@example.com").await;
    let r = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": first}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let second = r.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let me = app
        .get("/api/v1/users/me", r.body["access_token"].as_str())
        .await;
    assert_eq!(me.status, StatusCode::OK);

    // The first token, already rotated, is presented again: theft suspected.
    let reuse = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": first}),
        )
        .await;
    assert_eq!(
        (reuse.status, reuse.code()),
        (StatusCode::UNAUTHORIZED, "refresh_token_reused")
    );
    // ...so the legitimate newest token no longer works either.
    let after = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": second}),
        )
        .await;
    assert_eq!(
        (after.status, after.code()),
        (StatusCode::UNAUTHORIZED, "invalid_refresh_token")
    );

    let unknown = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": "made-up"}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::UNAUTHORIZED, "invalid_refresh_token")
    );
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = TestApp::new().await;
    let (_, refresh) = register_and_login(&app, "dan@example.com").await;
    let r = app
        .post(
            "/api/v1/auth/logout",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let again = app
        .post(
            "/api/v1/auth/logout",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "logout is idempotent");
}

#[tokio::test]
async fn admin_bootstrap_creates_the_first_admin_once() {
    let app = TestApp::new().await;
    assert!(
        foodapp_api::auth::bootstrap_admin(&app.db.pool, "root@example.com", "admin-password")
            .await
            .unwrap()
    );
    assert!(
        !foodapp_api::auth::bootstrap_admin(&app.db.pool, "root@example.com", "other-password")
            .await
            .unwrap()
    );
    let t = app
        .post(
            "/api/v1/auth/token",
            None,
            json!({"email": "root@example.com", "password": "admin-password"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::OK);
    let me = app
        .get("/api/v1/users/me", t.body["access_token"].as_str())
        .await;
    assert_eq!(me.body["roles"], json!(["manager", "admin"]));
}

#[tokio::test]
async fn managers_list_users_and_only_admins_grant_privileged_roles() {
    let app = TestApp::new().await;
    let (_, customer) = app.user(&[Role::Customer]).await;
    let (_, manager) = app.user(&[Role::Manager]).await;
    let (admin_id, admin) = app.user(&[Role::Admin]).await;
    let (staff_id, _) = app.user(&[Role::Customer]).await;

    let r = app.get("/api/v1/users", Some(&customer)).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = app.get("/api/v1/users?limit=2", Some(&manager)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let next = app
        .get(
            &format!(
                "/api/v1/users?limit=2&cursor={}",
                r.body["next_cursor"].as_str().unwrap()
            ),
            Some(&manager),
        )
        .await;
    assert_eq!(next.body["items"].as_array().unwrap().len(), 2);
    let admins = app.get("/api/v1/users?role=admin", Some(&manager)).await;
    assert_eq!(admins.body["items"][0]["id"], admin_id.to_string());

    let path = format!("/api/v1/users/{staff_id}/roles");
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(&manager),
            Some(json!({"roles": ["kitchen", "customer"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["roles"], json!(["customer", "kitchen"]));
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(&manager),
            Some(json!({"roles": ["manager"]})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"roles": ["manager"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .call(Method::PUT, &path, Some(&admin), Some(json!({"roles": []})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"roles": ["chef"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/users/{admin_id}/roles"),
            Some(&admin),
            Some(json!({"roles": ["customer"]})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/users/{}/roles", uuid::Uuid::new_v4()),
            Some(&admin),
            Some(json!({"roles": ["customer"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
