//! Menu categories.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{CatalogError, check_text};
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::error::{ApiResult, Json, Path, Query, foreign_key_violation, unique_violation};
use crate::pagination::{self, Page};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Category {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Display order, smallest first.
    pub position: i32,
    pub created_at: DateTime<Utc>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
}

const COLUMNS: &str = "id, name, description, position, created_at";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    position: i32,
    name: String,
    id: Uuid,
}

/// List categories in display order.
#[utoipa::path(get, path = "/categories", tag = "catalog", params(ListQuery),
    responses((status = 200, body = Page<Category>)))]
async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Category>>> {
    let (limit, after): (i64, Option<Cursor>) = pagination::start(q.limit, q.cursor.as_deref())?;
    let rows: Vec<Category> = sqlx::query_as(
        "SELECT id, name, description, position, created_at FROM categories
         WHERE ($1::int IS NULL OR (position, name, id) > ($1, $2, $3))
         ORDER BY position, name, id LIMIT $4",
    )
    .bind(after.as_ref().map(|c| c.position))
    .bind(after.as_ref().map(|c| c.name.clone()))
    .bind(after.as_ref().map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |c| {
            pagination::encode(&Cursor {
                position: c.position,
                name: c.name.clone(),
                id: c.id,
            })
        },
        |c| c,
    )))
}

/// One category.
#[utoipa::path(get, path = "/categories/{id}", tag = "catalog", params(("id" = Uuid, Path)),
    responses((status = 200, body = Category), (status = 404, body = crate::error::Problem)))]
async fn get_one(State(state): State<AppState>, Path(id): Path<Uuid>) -> ApiResult<Json<Category>> {
    sqlx::query_as::<_, Category>(
        "SELECT id, name, description, position, created_at FROM categories WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .map(Json)
    .ok_or_else(|| CatalogError::CategoryNotFound.into())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    /// 1 to 100 characters, not only spaces; unique regardless of case.
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$"
    )]
    pub name: String,
    /// Up to 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: String,
    /// Sort key of the menu's sections, smallest first.
    #[serde(default, deserialize_with = "crate::json::int")]
    pub position: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryPatch {
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$"
    )]
    pub name: Option<String>,
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "crate::json::opt_int")]
    pub position: Option<i32>,
}

fn name_taken(e: sqlx::Error) -> CatalogError {
    if unique_violation(&e, "categories_name_key") {
        CatalogError::NameTaken
    } else {
        e.into()
    }
}

/// Create a category.
#[utoipa::path(post, path = "/categories", tag = "catalog", request_body = NewCategory, security(("bearer" = [])),
    responses((status = 201, body = Category), (status = 403, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<NewCategory>,
) -> ApiResult<(StatusCode, Json<Category>)> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    check_text("name", &req.name, 100, true)?;
    check_text("description", &req.description, 1000, false)?;
    let row: Category = sqlx::query_as(
        "INSERT INTO categories (id, name, description, position) VALUES ($1, $2, $3, $4)
         RETURNING id, name, description, position, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(crate::text::trim(&req.name))
    .bind(crate::text::trim(&req.description))
    .bind(req.position)
    .fetch_one(&state.pool)
    .await
    .map_err(name_taken)?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// Change some fields of a category.
#[utoipa::path(patch, path = "/categories/{id}", tag = "catalog", request_body = CategoryPatch,
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Category), (status = 404, body = crate::error::Problem),
              (status = 409, description = "conflict: another category has this name", body = crate::error::Problem)))]
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(req): Json<CategoryPatch>,
) -> ApiResult<Json<Category>> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    if let Some(name) = &req.name {
        check_text("name", name, 100, true)?;
    }
    if let Some(d) = &req.description {
        check_text("description", d, 1000, false)?;
    }
    let sql = format!(
        "UPDATE categories SET name = COALESCE($2, name), description = COALESCE($3, description),
         position = COALESCE($4, position) WHERE id = $1 RETURNING {COLUMNS}"
    );
    sqlx::query_as::<_, Category>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(req.name.as_deref().map(crate::text::trim))
        .bind(req.description.as_deref().map(crate::text::trim))
        .bind(req.position)
        .fetch_optional(&state.pool)
        .await
        .map_err(name_taken)?
        .map(Json)
        .ok_or_else(|| CatalogError::CategoryNotFound.into())
}

/// Delete an empty category. One that still holds menu items answers 409.
#[utoipa::path(delete, path = "/categories/{id}", tag = "catalog", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    let in_use: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM menu_items WHERE category_id = $1 AND deleted_at IS NULL)",
    )
    .bind(id)
    .fetch_one(&state.pool)
    .await?;
    if in_use {
        return Err(CatalogError::CategoryHasItems.into());
    }
    // Deleted items still point at their category (past orders show them),
    // so the foreign key refuses to drop a category that ever had items sold.
    let result = sqlx::query("DELETE FROM categories WHERE id = $1")
        .bind(id)
        .execute(&state.pool)
        .await;
    match result {
        Ok(r) if r.rows_affected() == 1 => Ok(StatusCode::NO_CONTENT),
        Ok(_) => Err(CatalogError::CategoryNotFound.into()),
        Err(e) if foreign_key_violation(&e) => Err(CatalogError::CategoryInHistory.into()),
        Err(e) => Err(e.into()),
    }
}
