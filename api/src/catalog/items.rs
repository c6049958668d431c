//! Menu items: price in cents, optional stock (null = unlimited), an
//! availability flag; filtered, searched, sorted and paginated by keyset.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{CatalogError, check_text};
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::error::{ApiResult, Json, Path, Query, foreign_key_violation};
use crate::pagination::{self, Page};

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct MenuItem {
    pub id: Uuid,
    pub category_id: Uuid,
    pub name: String,
    pub description: String,
    /// Price in minor units (cents).
    pub price_cents: i64,
    /// Units left; null means unlimited.
    pub stock: Option<i32>,
    /// Whether the item can be ordered now.
    pub available: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, category_id, name, description, price_cents, stock, available, created_at, updated_at";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Sort {
    /// Cheapest first.
    #[serde(rename = "price")]
    Price,
    /// Most expensive first.
    #[serde(rename = "-price")]
    PriceDesc,
    /// Alphabetical (the default).
    #[default]
    #[serde(rename = "name")]
    Name,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only items of this category.
    category: Option<Uuid>,
    /// Case-insensitive text search in name and description, up to 100 characters.
    #[param(max_length = 100, pattern = r"^[^\x00]*$")]
    q: Option<String>,
    /// Only items whose availability is this.
    available: Option<bool>,
    /// `price`, `-price` or `name` (default).
    sort: Option<Sort>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    sort: Sort,
    price: i64,
    name: String,
    id: Uuid,
}

fn escape_like(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// List menu items.
#[utoipa::path(get, path = "/menu-items", tag = "catalog", params(ListQuery),
    responses((status = 200, body = Page<MenuItem>), (status = 400, body = crate::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let key = raw.unwrap_or_default();
    let body = match state.menu_cache.get(&key) {
        Some(body) => body,
        None => {
            let page = list_page(&state, q).await?;
            let body =
                serde_json::to_vec(&page).map_err(|e| CatalogError::Internal(e.to_string()))?;
            let body = axum::body::Bytes::from(body);
            state.menu_cache.put(key, body.clone());
            body
        }
    };
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn list_page(state: &AppState, q: ListQuery) -> ApiResult<Page<MenuItem>> {
    let (limit, after): (i64, Option<Cursor>) = pagination::start(q.limit, q.cursor.as_deref())?;
    let sort = q.sort.unwrap_or_default();
    if after.as_ref().is_some_and(|c| c.sort != sort) {
        return Err(CatalogError::CursorOfAnotherSort.into());
    }
    if let Some(text) = &q.q {
        check_text("q", text, 100, false)?;
    }

    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM menu_items WHERE deleted_at IS NULL"
    ));
    if let Some(category) = q.category {
        sql.push(" AND category_id = ").push_bind(category);
    }
    if let Some(available) = q.available {
        sql.push(" AND available = ").push_bind(available);
    }
    if let Some(text) =
        q.q.as_deref()
            .map(crate::text::trim)
            .filter(|t| !t.is_empty())
    {
        let pattern = escape_like(text);
        sql.push(" AND (name ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR description ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(c) = &after {
        match sort {
            Sort::Price => sql.push(" AND (price_cents, id) > (").push_bind(c.price),
            Sort::PriceDesc => sql.push(" AND (price_cents, id) < (").push_bind(c.price),
            Sort::Name => sql.push(" AND (name, id) > (").push_bind(c.name.clone()),
        };
        sql.push(", ").push_bind(c.id).push(")");
    }
    sql.push(match sort {
        Sort::Price => " ORDER BY price_cents, id",
        Sort::PriceDesc => " ORDER BY price_cents DESC, id DESC",
        Sort::Name => " ORDER BY name, id",
    });
    sql.push(" LIMIT ").push_bind(limit + 1);

    let rows: Vec<MenuItem> = sql.build_query_as().fetch_all(&state.pool).await?;
    Ok(pagination::page(
        rows,
        limit,
        |m| {
            pagination::encode(&Cursor {
                sort,
                price: m.price_cents,
                name: m.name.clone(),
                id: m.id,
            })
        },
        |m| m,
    ))
}

/// One menu item.
#[utoipa::path(get, path = "/menu-items/{id}", tag = "catalog", params(("id" = Uuid, Path)),
    responses((status = 200, body = MenuItem), (status = 404, body = crate::error::Problem)))]
async fn get_one(State(state): State<AppState>, Path(id): Path<Uuid>) -> ApiResult<Json<MenuItem>> {
    let sql = format!("SELECT {COLUMNS} FROM menu_items WHERE id = $1 AND deleted_at IS NULL");
    sqlx::query_as::<_, MenuItem>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .map(Json)
        .ok_or_else(|| CatalogError::ItemNotFound.into())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMenuItem {
    pub category_id: Uuid,
    /// 1 to 100 characters, not only spaces.
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$"
    )]
    pub name: String,
    /// Up to 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: String,
    /// 0 to 100,000,000.
    #[serde(deserialize_with = "crate::json::int")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    pub price_cents: i64,
    /// Units in stock, 0 to 1,000,000,000; leave out or null for unlimited.
    #[serde(default, deserialize_with = "crate::json::opt_int")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: Option<i32>,
    #[serde(default = "yes")]
    pub available: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuItemPatch {
    pub category_id: Option<Uuid>,
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$"
    )]
    pub name: Option<String>,
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "crate::json::opt_int")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    pub price_cents: Option<i64>,
    /// A number (0 to 1,000,000,000) sets the stock; null makes it
    /// unlimited; absent leaves it.
    #[serde(default, deserialize_with = "crate::json::patch_int")]
    #[schema(value_type = Option<i32>, minimum = 0, maximum = 1_000_000_000)]
    pub stock: Option<Option<i32>>,
    pub available: Option<bool>,
}

fn check_price(price: i64) -> Result<(), CatalogError> {
    if (0..=100_000_000).contains(&price) {
        Ok(())
    } else {
        Err(CatalogError::Invalid(
            "price_cents must be between 0 and 100000000".into(),
        ))
    }
}

/// Largest stock a menu item may be given: far below the column's limit,
/// so units put back by rejected and cancelled orders never overflow it.
pub const MAX_STOCK: i32 = 1_000_000_000;

fn check_stock(stock: Option<i32>) -> Result<(), CatalogError> {
    match stock {
        Some(s) if !(0..=MAX_STOCK).contains(&s) => Err(CatalogError::Invalid(format!(
            "stock must be between 0 and {MAX_STOCK}; use null for unlimited"
        ))),
        _ => Ok(()),
    }
}

fn unknown_category(e: sqlx::Error) -> CatalogError {
    if foreign_key_violation(&e) {
        CatalogError::UnknownCategory
    } else {
        e.into()
    }
}

/// Create a menu item.
#[utoipa::path(post, path = "/menu-items", tag = "catalog", request_body = NewMenuItem, security(("bearer" = [])),
    responses((status = 201, body = MenuItem), (status = 403, body = crate::error::Problem),
              (status = 409, description = "unknown_category", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<NewMenuItem>,
) -> ApiResult<(StatusCode, Json<MenuItem>)> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    check_text("name", &req.name, 100, true)?;
    check_text("description", &req.description, 1000, false)?;
    check_price(req.price_cents)?;
    check_stock(req.stock)?;
    let sql = format!(
        "INSERT INTO menu_items (id, category_id, name, description, price_cents, stock, available)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let item: MenuItem = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(req.category_id)
        .bind(crate::text::trim(&req.name))
        .bind(crate::text::trim(&req.description))
        .bind(req.price_cents)
        .bind(req.stock)
        .bind(req.available)
        .fetch_one(&state.pool)
        .await
        .map_err(unknown_category)?;
    state.menu_cache.clear();
    Ok((StatusCode::CREATED, Json(item)))
}

/// Change some fields of a menu item. Prices of orders already placed do not change.
#[utoipa::path(patch, path = "/menu-items/{id}", tag = "catalog", request_body = MenuItemPatch,
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = MenuItem), (status = 404, body = crate::error::Problem),
              (status = 409, description = "unknown_category", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(req): Json<MenuItemPatch>,
) -> ApiResult<Json<MenuItem>> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    if let Some(name) = &req.name {
        check_text("name", name, 100, true)?;
    }
    if let Some(d) = &req.description {
        check_text("description", d, 1000, false)?;
    }
    if let Some(p) = req.price_cents {
        check_price(p)?;
    }
    if let Some(s) = req.stock {
        check_stock(s)?;
    }
    let sql = format!(
        "UPDATE menu_items SET
            category_id = COALESCE($2, category_id),
            name = COALESCE($3, name),
            description = COALESCE($4, description),
            price_cents = COALESCE($5, price_cents),
            stock = CASE WHEN $6 THEN $7 ELSE stock END,
            available = COALESCE($8, available),
            updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}"
    );
    let updated = sqlx::query_as::<_, MenuItem>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(req.category_id)
        .bind(req.name.as_deref().map(crate::text::trim))
        .bind(req.description.as_deref().map(crate::text::trim))
        .bind(req.price_cents)
        .bind(req.stock.is_some())
        .bind(req.stock.flatten())
        .bind(req.available)
        .fetch_optional(&state.pool)
        .await
        .map_err(unknown_category)?;
    state.menu_cache.clear();
    updated
        .map(Json)
        .ok_or_else(|| CatalogError::ItemNotFound.into())
}

/// Remove a menu item from the menu. Past orders keep showing it.
#[utoipa::path(delete, path = "/menu-items/{id}", tag = "catalog", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    let mut tx = state.pool.begin().await?;
    let done = sqlx::query(
        "UPDATE menu_items SET deleted_at = now(), available = false, updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(CatalogError::ItemNotFound.into());
    }
    sqlx::query("DELETE FROM cart_items WHERE menu_item_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state.menu_cache.clear();
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(escape_like("pad"), "%pad%");
        assert_eq!(escape_like("100%_\\"), "%100\\%\\_\\\\%");
    }
}
