//! FoodApp's ordering API: customers order, kitchen staff and couriers move
//! orders along, managers run the menu. `router()` builds the whole app.

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod config;
pub mod db;
pub mod error;
pub mod json;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod pagination;
pub mod refunds;
pub mod retry;
pub mod seed;
pub mod telemetry;
pub mod text;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::tokens::JwtKeys;
use crate::error::ApiError;
use crate::telemetry::Metrics;

/// Settings the request handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jwt_secret: Vec<u8>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub order_auto_reject_after: Duration,
    pub max_body_bytes: usize,
    /// How long a menu listing may be served from memory.
    pub menu_cache_ttl: Duration,
    /// Open cash orders a customer may hold; 0: no limit.
    pub max_unpaid_orders: u32,
    /// Live order streams one user may hold open at once.
    pub live_streams_per_user: usize,
    /// Live order streams this replica holds open at once.
    pub live_streams_total: usize,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: sqlx::PgPool,
    /// One connection of its own for `/readyz`: readiness must not depend on
    /// winning a pooled connection under load (every replica would go
    /// unready together), only on the database answering.
    pub probe: sqlx::PgPool,
    pub keys: Arc<JwtKeys>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub menu_cache: Arc<catalog::cache::MenuCache>,
    /// Live order streams, fed with every replica's status changes by
    /// `start_background`.
    pub followers: Arc<orders::live::Followers>,
}

impl AppState {
    pub fn new(pool: sqlx::PgPool, settings: Settings) -> Self {
        let keys = JwtKeys::new(
            &settings.jwt_secret,
            settings.access_token_ttl,
            settings.refresh_token_ttl,
        );
        let probe = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect_lazy_with((*pool.connect_options()).clone());
        AppState {
            pool,
            probe,
            keys: Arc::new(keys),
            metrics: Metrics::new(),
            menu_cache: Arc::new(catalog::cache::MenuCache::new(settings.menu_cache_ttl)),
            followers: orders::live::Followers::new(
                settings.live_streams_per_user,
                settings.live_streams_total,
            ),
            settings: Arc::new(settings),
        }
    }
}

/// Starts what runs beside the request handlers in every replica: the
/// LISTEN task feeding live order tracking, the auto-reject sweeper and the
/// refresh of the business gauges.
/// Both stop when the returned handles are aborted or the runtime ends.
pub fn start_background(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(orders::live::listen(
            state.pool.clone(),
            state.followers.clone(),
        )),
        tokio::spawn(orders::sweeper::run(state.clone())),
        tokio::spawn(state.metrics.clone().refresh_forever(state.pool.clone())),
    ]
}

/// Every route with its OpenAPI description; the document is built from the
/// same list the router serves, so the two cannot drift apart.
pub fn api_routes() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(auth::router())
        .merge(users::router())
        .merge(catalog::router())
        .merge(cart::router())
        .merge(orders::router())
        .merge(refunds::router());
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::router())
        .nest("/api/v1", v1)
}

/// The OpenAPI document `/openapi.json` serves.
pub fn openapi() -> serde_json::Value {
    openapi::refine(api_routes().split_for_parts().1)
}

pub fn router(state: AppState) -> Router {
    let (routes, document) = api_routes().split_for_parts();
    let document = openapi::refine(document);
    let max_body = state.settings.max_body_bytes;
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            telemetry::track,
        ))
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed here",
            )
        })
        .with_state(state)
        .layer(retry::ReadRetryLayer)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| -> Response {
            axum::response::IntoResponse::into_response(ApiError::Internal(
                "handler panicked".into(),
            ))
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| telemetry::request_span(req)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
