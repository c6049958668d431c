//! Orders: placing them (`place`), moving them along (`fsm`, `transitions`,
//! `sweeper`), following them live (`live`), and reading them back scoped by
//! role — customers their own, kitchen staff and managers all, couriers those
//! assigned to them.

pub mod error;
pub mod fsm;
pub mod live;
pub mod model;
pub mod place;
pub mod sweeper;
pub mod transitions;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::pagination::{self, Page, TimeCursor};
use model::{Order, OrderStatus, OrderSummary};
use place::PlaceOrder;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one))
        .merge(transitions::router())
        .merge(live::router())
}

/// Place an order from explicit items or from the cart. Send a unique
/// `Idempotency-Key` per order: retries with the same key and body return the
/// same order (header `Idempotent-Replayed: true`) and charge nothing twice.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = PlaceOrder, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, pattern = r"^[!-~]{1,200}$", description = "Unique per order, 1 to 200 visible ASCII characters")),
    responses(
        (status = 201, body = Order),
        (status = 400, description = "missing_idempotency_key", body = crate::error::Problem),
        (status = 402, description = "payment_declined", body = crate::error::Problem),
        (status = 403, description = "forbidden: only customers order", body = crate::error::Problem),
        (status = 409, description = "insufficient_stock, item_unavailable, unknown_item, cart_empty, cart_full or too_many_unpaid_orders", body = crate::error::Problem),
        (status = 422, description = "validation_failed or idempotency_key_reused", body = crate::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    Json(req): Json<PlaceOrder>,
) -> ApiResult<Response> {
    user.require_any(&[Role::Customer])?;
    let key = place::check_key(headers.get("idempotency-key").and_then(|v| v.to_str().ok()))?;
    let placed = place::place(&state, user.id, key, req).await?;
    let location = format!("/api/v1/orders/{}", placed.order_id);
    let mut response = (StatusCode::CREATED, placed.body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, location);
    }
    if placed.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only orders in this state.
    status: Option<OrderStatus>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List the orders the caller may see, newest first.
#[utoipa::path(get, path = "/orders", tag = "orders", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<OrderSummary>), (status = 401, body = crate::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<OrderSummary>>> {
    let (limit, after): (i64, Option<TimeCursor>) =
        pagination::start(q.limit, q.cursor.as_deref())?;
    // The same rule as `can_see`, as SQL parameters.
    let visible = fsm::Visibility::of(&user);
    let rows: Vec<OrderSummary> = sqlx::query_as!(
        OrderSummary,
        r#"SELECT o.id, o.customer_id, o.status, o.total_cents, o.courier_id, o.created_at, o.updated_at,
                (SELECT COALESCE(sum(quantity), 0)::int8 FROM order_items i WHERE i.order_id = o.id) AS "item_count!"
         FROM orders o
         WHERE ($1 OR o.customer_id = $2 OR ($7 AND o.courier_id = $2))
           AND ($3::text IS NULL OR o.status = $3)
           AND ($4::timestamptz IS NULL OR (o.created_at, o.id) < ($4, $5))
         ORDER BY o.created_at DESC, o.id DESC LIMIT $6"#,
        visible.all,
        visible.user,
        q.status.map(OrderStatus::as_str),
        after.as_ref().map(|c| c.t),
        after.as_ref().map(|c| c.id),
        limit + 1,
        visible.as_courier
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |o| TimeCursor::after(o.created_at, o.id),
        |o| o,
    )))
}

/// Whether the caller may see this order (see [`fsm::Visibility`]).
/// Others get 404, so order ids reveal nothing.
pub fn can_see(user: &AuthUser, order: &Order) -> bool {
    fsm::Visibility::of(user).sees(order.customer_id, order.courier_id)
}

/// One order with its lines, payment and history.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 404, body = crate::error::Problem)))]
async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    match model::load_order(&state.pool, id).await? {
        Some(order) if can_see(&user, &order) => Ok(Json(order)),
        _ => Err(ApiError::not_found("order")),
    }
}
