//! Accounts: the caller's own profile, and the user list and role
//! management for managers and admins.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::roles::{roles_from_strings, roles_to_strings};
use crate::auth::{AuthUser, Role};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::pagination::{self, Page, TimeCursor};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            email: r.email,
            name: r.name,
            roles: roles_from_strings(&r.roles),
            created_at: r.created_at,
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_users))
        .routes(routes!(set_roles))
}

/// The caller's own account.
#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = crate::error::Problem)))]
async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<User>> {
    let row: Option<UserRow> = sqlx::query_as!(
        UserRow,
        "SELECT id, email, name, roles, created_at FROM users WHERE id = $1",
        user.id
    )
    .fetch_optional(&state.pool)
    .await?;
    row.map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::unauthorized("the account of this token no longer exists"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListUsersQuery {
    /// Only users holding this role.
    role: Option<Role>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List accounts, oldest first.
#[utoipa::path(get, path = "/users", tag = "users", params(ListUsersQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<User>), (status = 403, body = crate::error::Problem)))]
async fn list_users(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ListUsersQuery>,
) -> ApiResult<Json<Page<User>>> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    let (limit, after): (i64, Option<TimeCursor>) =
        pagination::start(q.limit, q.cursor.as_deref())?;
    let rows: Vec<UserRow> = sqlx::query_as!(
        UserRow,
        "SELECT id, email, name, roles, created_at FROM users
         WHERE ($1::text IS NULL OR $1 = ANY (roles))
           AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
         ORDER BY created_at, id LIMIT $4",
        q.role.map(Role::as_str),
        after.as_ref().map(|c| c.t),
        after.as_ref().map(|c| c.id),
        limit + 1
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |r| TimeCursor::after(r.created_at, r.id),
        User::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRolesRequest {
    /// The complete new set of roles, at least one.
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
}

/// Replace a user's roles. Managers may grant customer, kitchen and courier;
/// only admins may grant or remove manager and admin.
#[utoipa::path(put, path = "/users/{id}/roles", tag = "users", request_body = SetRolesRequest,
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = User), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn set_roles(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(req): Json<SetRolesRequest>,
) -> ApiResult<Json<User>> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    let mut roles = req.roles;
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(ApiError::validation("a user needs at least one role"));
    }
    let mut tx = state.pool.begin().await?;
    // The administrators are locked first (in id order, the same in every
    // such change), then the target: two admins demoting each other queue
    // here, and the second sees the first's change.
    let admins: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM users WHERE 'admin' = ANY (roles) ORDER BY id FOR UPDATE"
    )
    .fetch_all(&mut *tx)
    .await?;
    let current: Option<Vec<String>> =
        sqlx::query_scalar!("SELECT roles FROM users WHERE id = $1 FOR UPDATE", id)
            .fetch_optional(&mut *tx)
            .await?;
    let current = roles_from_strings(&current.ok_or_else(|| ApiError::not_found("user"))?);
    let privileged = [Role::Manager, Role::Admin];
    let touches_privileged = privileged
        .iter()
        .any(|r| current.contains(r) != roles.contains(r));
    // The token may predate a demotion: the database decides.
    if touches_privileged && !admins.contains(&user.id) {
        return Err(ApiError::forbidden(
            "only an admin may grant or remove the manager and admin roles",
        ));
    }
    // With the acting admin checked above, this keeps at least one admin.
    if id == user.id && current.contains(&Role::Admin) && !roles.contains(&Role::Admin) {
        return Err(ApiError::conflict(
            "admins cannot remove their own admin role",
        ));
    }
    let row: UserRow = sqlx::query_as!(
        UserRow,
        "UPDATE users SET roles = $2 WHERE id = $1 RETURNING id, email, name, roles, created_at",
        id,
        &roles_to_strings(&roles)
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(row.into()))
}
