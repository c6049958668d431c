//! Test support: each test gets its own freshly migrated database on the
//! server at DATABASE_URL (started by `scripts/test-services`), so tests run
//! in parallel; the database is dropped when the test ends.
#![allow(dead_code)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use foodapp_api::auth::Role;
use foodapp_api::{AppState, Settings};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tower::ServiceExt;
use uuid::Uuid;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run tests through `make test` (scripts/test-services)")
}

fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("DATABASE_URL is a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A fresh database with the schema applied.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let admin_url = server_url();
        let name = format!("foodapp_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .expect("connect to test database");
        foodapp_api::db::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations apply");
        TestDb { name, url, pool }
    }

    /// A second, independent pool on the same database (another replica).
    pub async fn another_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = server_url();
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        })
        .join();
    }
}

pub fn settings() -> Settings {
    Settings {
        jwt_secret: SECRET.to_vec(),
        access_token_ttl: Duration::from_secs(900),
        refresh_token_ttl: Duration::from_secs(3600),
        order_auto_reject_after: Duration::from_secs(300),
        max_body_bytes: 64 * 1024,
        menu_cache_ttl: Duration::ZERO,
        // Tests place many cash orders per customer; the limit has its own test.
        max_unpaid_orders: 0,
        live_streams_per_user: 10,
        live_streams_total: 2000,
    }
}

/// The whole app, driven in process through `tower::ServiceExt::oneshot`.
pub struct TestApp {
    pub db: TestDb,
    pub state: AppState,
    pub router: axum::Router,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The problem `code` of an error reply.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn is_problem(&self) -> bool {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            == Some("application/problem+json")
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with_settings(settings()).await
    }

    pub async fn with_settings(settings: Settings) -> TestApp {
        let db = TestDb::new().await;
        let state = AppState::new(db.pool.clone(), settings);
        let router = foodapp_api::router(state.clone());
        TestApp { db, state, router }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.expect("request builds")).await
    }

    /// `POST /api/v1/orders` with this Idempotency-Key.
    pub async fn order(&self, token: &str, key: &str, body: Value) -> Reply {
        self.call_with(
            Method::POST,
            "/api/v1/orders",
            Some(token),
            Some(body),
            &[("idempotency-key", key)],
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// A user with these roles, created straight in the database, and an
    /// access token for it (no password hashing: fast).
    pub async fn user(&self, roles: &[Role]) -> (Uuid, String) {
        user_in(&self.state, roles).await
    }

    pub async fn category(&self, name: &str) -> Uuid {
        sqlx::query_scalar("INSERT INTO categories (id, name) VALUES ($1, $2) RETURNING id")
            .bind(Uuid::now_v7())
            .bind(name)
            .fetch_one(&self.db.pool)
            .await
            .expect("insert category")
    }

    pub async fn item(
        &self,
        category: Uuid,
        name: &str,
        price_cents: i64,
        stock: Option<i32>,
    ) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO menu_items (id, category_id, name, price_cents, stock) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(category)
        .bind(name)
        .bind(price_cents)
        .bind(stock)
        .fetch_one(&self.db.pool)
        .await
        .expect("insert menu item")
    }

    pub async fn stock(&self, item: Uuid) -> Option<i32> {
        sqlx::query_scalar("SELECT stock FROM menu_items WHERE id = $1")
            .bind(item)
            .fetch_one(&self.db.pool)
            .await
            .expect("read stock")
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }
}

pub async fn user_in(state: &AppState, roles: &[Role]) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let roles_text: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
    sqlx::query("INSERT INTO users (id, email, name, password_hash, roles) VALUES ($1, $2, 'Test', 'x', $3)")
        .bind(id)
        .bind(format!("{id}@test.foodapp.io"))
        .bind(roles_text)
        .execute(&state.pool)
        .await
        .expect("insert user");
    let token = state.keys.issue_access(id, roles).expect("token");
    (id, token)
}

/// A real server on a free loopback port, for tests that need several
/// replicas or real connections. Stops when dropped.
pub struct Server {
    pub base: String,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(pool: PgPool) -> Server {
        Self::start_with(pool, settings()).await
    }

    /// A replica with its background tasks (notifications, auto-reject).
    pub async fn start_with(pool: PgPool, settings: Settings) -> Server {
        let state = AppState::new(pool, settings);
        let background = foodapp_api::start_background(&state);
        let app = foodapp_api::router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .ok();
        });
        Server {
            base: format!("http://{addr}"),
            state,
            stop: Some(tx),
            background,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        for task in &self.background {
            task.abort();
        }
    }
}

pub fn cash() -> Value {
    serde_json::json!({ "method": "cash" })
}
