//! Each customer's cart: set a quantity, remove an item, clear it. Ordering
//! with `from_cart` turns it into an order and empties it.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::orders::place::MAX_LINES;

pub const MAX_QUANTITY: i32 = 100;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CartLine {
    pub menu_item_id: Uuid,
    pub name: String,
    /// Current price; the order snapshots it when placed.
    pub unit_price_cents: i64,
    pub quantity: i32,
    pub line_total_cents: i64,
    /// False when the item was made unavailable after it was added.
    pub available: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cart {
    pub items: Vec<CartLine>,
    pub total_cents: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    /// 1 to 100.
    #[serde(deserialize_with = "crate::json::int")]
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i32,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart, clear))
        .routes(routes!(set_item, remove_item))
}

async fn load(pool: &sqlx::PgPool, user: Uuid) -> Result<Cart, sqlx::Error> {
    let items: Vec<CartLine> = sqlx::query_as!(
        CartLine,
        r#"SELECT c.menu_item_id, m.name, m.price_cents AS unit_price_cents, c.quantity,
                m.price_cents * c.quantity AS "line_total_cents!", m.available
         FROM cart_items c JOIN menu_items m ON m.id = c.menu_item_id
         WHERE c.user_id = $1 ORDER BY c.added_at, c.menu_item_id"#,
        user
    )
    .fetch_all(pool)
    .await?;
    let total_cents = items.iter().map(|i| i.line_total_cents).sum();
    Ok(Cart { items, total_cents })
}

/// The caller's cart.
#[utoipa::path(get, path = "/cart", tag = "cart", security(("bearer" = [])),
    responses((status = 200, body = Cart), (status = 403, body = crate::error::Problem)))]
async fn get_cart(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Cart>> {
    user.require_any(&[Role::Customer])?;
    Ok(Json(load(&state.pool, user.id).await?))
}

/// Set the quantity of one item in the cart (adds it when absent).
#[utoipa::path(put, path = "/cart/items/{menu_item_id}", tag = "cart", request_body = SetQuantity,
    params(("menu_item_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Cart), (status = 404, body = crate::error::Problem),
              (status = 409, description = "item_unavailable, or cart_full (50 items)", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn set_item(
    State(state): State<AppState>,
    user: AuthUser,
    Path(item): Path<Uuid>,
    Json(req): Json<SetQuantity>,
) -> ApiResult<Json<Cart>> {
    user.require_any(&[Role::Customer])?;
    if !(1..=MAX_QUANTITY).contains(&req.quantity) {
        return Err(ApiError::validation(format!(
            "quantity must be between 1 and {MAX_QUANTITY}; remove the item to drop it"
        )));
    }
    let available: Option<bool> = sqlx::query_scalar!(
        "SELECT available FROM menu_items WHERE id = $1 AND deleted_at IS NULL",
        item
    )
    .fetch_optional(&state.pool)
    .await?;
    match available {
        None => return Err(ApiError::not_found("menu item")),
        Some(false) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "item_unavailable",
                "this menu item is not available now",
            )
            .with_extra(serde_json::json!({ "menu_item_id": item })));
        }
        Some(true) => {}
    }
    let written = sqlx::query!(
        "INSERT INTO cart_items (user_id, menu_item_id, quantity)
         SELECT $1, $2, $3
          WHERE EXISTS (SELECT 1 FROM cart_items WHERE user_id = $1 AND menu_item_id = $2)
             OR (SELECT count(*) FROM cart_items WHERE user_id = $1) < $4
         ON CONFLICT (user_id, menu_item_id) DO UPDATE SET quantity = EXCLUDED.quantity",
        user.id,
        item,
        req.quantity,
        MAX_LINES as i64
    )
    .execute(&state.pool)
    .await?;
    if written.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cart_full",
            format!(
                "a cart has at most {MAX_LINES} items, as an order does: order or remove some first"
            ),
        ));
    }
    Ok(Json(load(&state.pool, user.id).await?))
}

/// Remove one item from the cart.
#[utoipa::path(delete, path = "/cart/items/{menu_item_id}", tag = "cart",
    params(("menu_item_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Cart), (status = 404, body = crate::error::Problem)))]
async fn remove_item(
    State(state): State<AppState>,
    user: AuthUser,
    Path(item): Path<Uuid>,
) -> ApiResult<Json<Cart>> {
    user.require_any(&[Role::Customer])?;
    let done = sqlx::query!(
        "DELETE FROM cart_items WHERE user_id = $1 AND menu_item_id = $2",
        user.id,
        item
    )
    .execute(&state.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("cart item"));
    }
    Ok(Json(load(&state.pool, user.id).await?))
}

/// Empty the cart.
#[utoipa::path(delete, path = "/cart", tag = "cart", security(("bearer" = [])), responses((status = 204)))]
async fn clear(State(state): State<AppState>, user: AuthUser) -> ApiResult<StatusCode> {
    user.require_any(&[Role::Customer])?;
    sqlx::query!("DELETE FROM cart_items WHERE user_id = $1", user.id)
        .execute(&state.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
