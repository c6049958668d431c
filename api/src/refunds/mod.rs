//! Refunds of rejected and cancelled orders: listed for managers, completed
//! once the money went back (completing twice changes nothing).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::pagination::{self, Page, TimeCursor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Completed,
}

impl RefundStatus {
    fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Completed => "completed",
        }
    }
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Refund {
    pub id: Uuid,
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: i64,
    #[schema(value_type = RefundStatus)]
    pub status: String,
    /// `rejected` or `cancelled`: what happened to the order.
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub completed_by: Option<Uuid>,
}

const COLUMNS: &str = "id, order_id, payment_id, amount_cents, status, reason, created_at, completed_at, completed_by";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(complete))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only refunds in this state.
    status: Option<RefundStatus>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List refunds, oldest first.
#[utoipa::path(get, path = "/refunds", tag = "refunds", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Refund>), (status = 403, body = crate::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Refund>>> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    let (limit, after): (i64, Option<TimeCursor>) =
        pagination::start(q.limit, q.cursor.as_deref())?;
    let sql = format!(
        "SELECT {COLUMNS} FROM refunds
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
         ORDER BY created_at, id LIMIT $4"
    );
    let rows: Vec<Refund> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(q.status.map(RefundStatus::as_str))
        .bind(after.as_ref().map(|c| c.t))
        .bind(after.as_ref().map(|c| c.id))
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |r| TimeCursor::after(r.created_at, r.id),
        |r| r,
    )))
}

/// Mark a refund completed. Completing it again returns it unchanged.
#[utoipa::path(post, path = "/refunds/{id}/complete", tag = "refunds", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Refund), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
async fn complete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Refund>> {
    user.require_any(&[Role::Manager, Role::Admin])?;
    // Two statements, not one: a concurrent completion must be read back as
    // completed, which needs a snapshot taken after the UPDATE.
    let updated: Option<Refund> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE refunds SET status = 'completed', completed_at = now(), completed_by = $2
         WHERE id = $1 AND status = 'pending' RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(user.id)
    .fetch_optional(&state.pool)
    .await?;
    let refund = match updated {
        Some(r) => Some(r),
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM refunds WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&state.pool)
            .await?
        }
    };
    refund
        .map(Json)
        .ok_or_else(|| ApiError::not_found("refund"))
}
