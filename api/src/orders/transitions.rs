//! Moving an order along: the action endpoints and the persistence every
//! transition shares (status, history, stock returned and refund created for
//! rejected or cancelled orders, a notification for live followers), all in
//! one transaction with the order row locked.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{PgConnection, Postgres, Transaction};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::OrderError;
use super::fsm::{self, Action, TransitionError, Visibility};
use super::model::{Order, OrderStatus, load_order};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Json, Path};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(accept))
        .routes(routes!(reject))
        .routes(routes!(ready))
        .routes(routes!(assign))
        .routes(routes!(pickup))
        .routes(routes!(deliver))
        .routes(routes!(cancel))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Why the order is rejected; the customer sees it. 1 to 500 characters.
    #[schema(
        max_length = 500,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$"
    )]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// A user with the courier role.
    pub courier_id: Uuid,
}

/// The part of an order a transition needs, read under lock.
#[derive(sqlx::FromRow)]
struct Locked {
    status: String,
    customer_id: Uuid,
    courier_id: Option<Uuid>,
}

/// One status change to persist.
pub struct Change {
    pub order_id: Uuid,
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub actor_id: Option<Uuid>,
    pub reason: Option<String>,
    pub courier_id: Option<Uuid>,
}

/// Persists a transition inside the caller's transaction.
pub async fn persist(tx: &mut PgConnection, change: &Change) -> Result<(), sqlx::Error> {
    let at: DateTime<Utc> = Utc::now();
    sqlx::query!(
        "WITH moved AS (
            UPDATE orders SET status = $2, updated_at = $5, courier_id = COALESCE($6, courier_id)
            WHERE id = $1 RETURNING id
         ), event AS (
            INSERT INTO order_events (order_id, from_status, to_status, actor_id, reason, at)
            SELECT $1, $3, $2, $4, $7, $5 FROM moved RETURNING id
         )
         SELECT count(*) AS notified FROM event, pg_notify('order_events', json_build_object(
            'order_id', $1, 'event_id', event.id, 'from_status', $3, 'to_status', $2,
            'actor_id', $4, 'reason', $7, 'at', $5)::text)",
        change.order_id,
        change.to.as_str(),
        change.from.as_str(),
        change.actor_id,
        at,
        change.courier_id,
        change.reason.as_deref()
    )
    .fetch_one(&mut *tx)
    .await?;
    if matches!(change.to, OrderStatus::Rejected | OrderStatus::Cancelled) {
        // Put the stock back and refund the captured payment, exactly once:
        // the state machine allows one such transition per order. Items are
        // locked in id order first, as placement locks them, so the two
        // cannot deadlock; stock saturates instead of overflowing.
        lock_items(tx, &[change.order_id]).await?;
        sqlx::query!(
        "UPDATE menu_items m SET stock = LEAST(m.stock::int8 + i.quantity, 2147483647)::int4
             FROM order_items i WHERE i.order_id = $1 AND m.id = i.menu_item_id AND m.stock IS NOT NULL",
        change.order_id
    )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO refunds (id, order_id, payment_id, amount_cents, reason, created_at)
             SELECT $2, id, payment_id, total_cents, $3, $4 FROM orders
             WHERE id = $1 AND payment_status = 'captured'
             ON CONFLICT (order_id) DO NOTHING",
            change.order_id,
            Uuid::now_v7(),
            change.to.as_str(),
            at
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Locks the stocked menu items of these orders, in id order: the order
/// every transaction that changes stock takes its item locks in.
pub async fn lock_items(tx: &mut PgConnection, orders: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT m.id FROM menu_items m
         WHERE m.id IN (SELECT i.menu_item_id FROM order_items i WHERE i.order_id = ANY($1))
           AND m.stock IS NOT NULL
         ORDER BY m.id FOR UPDATE",
        orders
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(())
}

async fn act(
    state: &AppState,
    user: &AuthUser,
    order_id: Uuid,
    action: Action,
    reason: Option<String>,
    courier_id: Option<Uuid>,
) -> Result<Order, OrderError> {
    let mut tx: Transaction<'_, Postgres> = state.pool.begin().await?;
    let locked: Locked = sqlx::query_as!(
        Locked,
        "SELECT status, customer_id, courier_id FROM orders WHERE id = $1 FOR UPDATE",
        order_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(OrderError::NotFound)?;
    let from = OrderStatus::parse(&locked.status)
        .ok_or_else(|| OrderError::Internal(format!("unknown status {}", locked.status)))?;
    // Someone with no part in the order does not learn that it exists.
    let actor = Visibility::of(user)
        .actor(action, locked.customer_id, locked.courier_id)
        .ok_or(OrderError::NotFound)?;
    let to = fsm::transition(from, action, actor).map_err(|e| match e {
        TransitionError::Forbidden { action, .. } => OrderError::Forbidden(action),
        TransitionError::Invalid { from, action } => OrderError::InvalidTransition { from, action },
    })?;
    if let Some(courier) = courier_id {
        let is_courier: Option<bool> = sqlx::query_scalar!(
            r#"SELECT 'courier' = ANY (roles) AS "is_courier!" FROM users WHERE id = $1"#,
            courier
        )
        .fetch_optional(&mut *tx)
        .await?;
        if is_courier != Some(true) {
            return Err(OrderError::NotACourier { courier });
        }
    }
    let change = Change {
        order_id,
        from,
        to,
        actor_id: Some(user.id),
        reason,
        courier_id,
    };
    persist(&mut tx, &change).await?;
    tx.commit().await?;
    state.metrics.transition(from.as_str(), to.as_str(), 1);
    load_order(&state.pool, order_id)
        .await?
        .ok_or(OrderError::NotFound)
}

/// Kitchen accepts a placed order.
#[utoipa::path(post, path = "/orders/{id}/accept", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, description = "invalid_transition", body = crate::error::Problem)))]
async fn accept(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    act(&state, &user, id, Action::Accept, None, None)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

/// Kitchen rejects a placed order: stock goes back and a refund is created.
#[utoipa::path(post, path = "/orders/{id}/reject", tag = "orders", params(("id" = Uuid, Path)), request_body = RejectRequest,
    security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 409, description = "invalid_transition", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn reject(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(req): Json<RejectRequest>,
) -> ApiResult<Json<Order>> {
    let reason = crate::text::trim(&req.reason);
    if reason.is_empty() || req.reason.chars().count() > 500 {
        return Err(OrderError::Invalid("reason must be 1 to 500 characters long".into()).into());
    }
    act(
        &state,
        &user,
        id,
        Action::Reject,
        Some(reason.to_owned()),
        None,
    )
    .await
    .map(Json)
    .map_err(ApiError::from)
}

/// Kitchen marks an accepted order ready for pickup.
#[utoipa::path(post, path = "/orders/{id}/ready", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 409, description = "invalid_transition", body = crate::error::Problem)))]
async fn ready(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    act(&state, &user, id, Action::Ready, None, None)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

/// Assign (or reassign) a courier to an accepted or ready order.
#[utoipa::path(post, path = "/orders/{id}/assign", tag = "orders", params(("id" = Uuid, Path)), request_body = AssignRequest,
    security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 409, description = "invalid_transition", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn assign(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(req): Json<AssignRequest>,
) -> ApiResult<Json<Order>> {
    let reason = Some(format!("courier {} assigned", req.courier_id));
    act(
        &state,
        &user,
        id,
        Action::Assign,
        reason,
        Some(req.courier_id),
    )
    .await
    .map(Json)
    .map_err(ApiError::from)
}

/// The assigned courier picks a ready order up.
#[utoipa::path(post, path = "/orders/{id}/pickup", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 404, body = crate::error::Problem),
              (status = 409, description = "invalid_transition", body = crate::error::Problem)))]
async fn pickup(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    act(&state, &user, id, Action::Pickup, None, None)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

/// The assigned courier delivers the order.
#[utoipa::path(post, path = "/orders/{id}/deliver", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 404, body = crate::error::Problem),
              (status = 409, description = "invalid_transition", body = crate::error::Problem)))]
async fn deliver(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    act(&state, &user, id, Action::Deliver, None, None)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

/// The customer cancels their order while it is still placed: stock goes back
/// and a refund is created.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 404, body = crate::error::Problem),
              (status = 409, description = "invalid_transition", body = crate::error::Problem)))]
async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    act(&state, &user, id, Action::Cancel, None, None)
        .await
        .map(Json)
        .map_err(ApiError::from)
}
