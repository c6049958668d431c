//! Live order tracking: `GET /orders/{id}/events` streams status changes as
//! Server-Sent Events. Every replica LISTENs on PostgreSQL's `order_events`
//! channel (transitions NOTIFY in their transaction), so a change made
//! through one replica reaches followers connected to any other.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::can_see;
use super::model::{OrderStatus, load_order};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Path};

pub const CHANNEL: &str = "order_events";

/// One status change, as sent to followers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    pub order_id: Uuid,
    /// Position in the order's history; 0 is the placement. Sent as the SSE
    /// `id`, so a reconnecting client resumes with `Last-Event-ID`.
    pub event_id: i64,
    #[schema(value_type = Option<OrderStatus>)]
    pub from_status: Option<String>,
    #[schema(value_type = OrderStatus)]
    pub to_status: String,
    pub actor_id: Option<Uuid>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

pub fn channel() -> broadcast::Sender<StatusChange> {
    broadcast::channel(1024).0
}

/// Forwards NOTIFYs to this process's followers, reconnecting as needed.
pub async fn listen(pool: sqlx::PgPool, tx: broadcast::Sender<StatusChange>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                } else {
                    loop {
                        match listener.recv().await {
                            Ok(n) => match serde_json::from_str::<StatusChange>(n.payload()) {
                                Ok(change) => {
                                    // No follower connected is fine.
                                    let _ = tx.send(change);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "unreadable order notification")
                                }
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, "order notifications interrupted; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for order notifications; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Everything after `after` in an order's history, oldest first (placement is 0).
async fn history(
    state: &AppState,
    order_id: Uuid,
    after: i64,
) -> Result<Vec<StatusChange>, sqlx::Error> {
    sqlx::query_as::<_, (i64, Option<String>, String, Option<Uuid>, Option<String>, DateTime<Utc>)>(
        "SELECT 0::int8, NULL, 'placed', customer_id, NULL, created_at FROM orders WHERE id = $1 AND $2 < 0
         UNION ALL
         SELECT id, from_status, to_status, actor_id, reason, at FROM order_events WHERE order_id = $1 AND id > $2
         ORDER BY 1",
    )
    .bind(order_id)
    .bind(after)
    .fetch_all(&state.pool)
    .await
    .map(|rows| {
        rows.into_iter()
            .map(|(event_id, from_status, to_status, actor_id, reason, at)| StatusChange {
                order_id,
                event_id,
                from_status,
                to_status,
                actor_id,
                reason,
                at,
            })
            .collect()
    })
}

fn to_event(change: &StatusChange) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event("status")
        .id(change.event_id.to_string())
        .json_data(change)
        .unwrap_or_else(|_| Event::default().comment("unserializable change")))
}

fn is_terminal(change: &StatusChange) -> bool {
    OrderStatus::parse(&change.to_status).is_some_and(OrderStatus::is_terminal)
}

struct Follow {
    state: AppState,
    order_id: Uuid,
    rx: broadcast::Receiver<StatusChange>,
    pending: VecDeque<StatusChange>,
    last: i64,
    done: bool,
}

/// Follow an order: its history so far, then each status change as it
/// happens, as Server-Sent Events (`event: status`, `id`: history position).
/// Sends keep-alive comments; ends after a final state. Honors `Last-Event-ID`.
#[utoipa::path(get, path = "/orders/{id}/events", tag = "orders", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = StatusChange,
               description = "a stream of `status` events"),
              (status = 404, body = crate::error::Problem)))]
async fn events(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Subscribe before reading history, so nothing falls in between.
    let rx = state.events.subscribe();
    match load_order(&state.pool, id).await? {
        Some(order) if can_see(&user, &order) => {}
        _ => return Err(ApiError::not_found("order")),
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(-1);
    let backlog: VecDeque<StatusChange> = history(&state, id, resume).await?.into();
    let follow = Follow {
        state,
        order_id: id,
        rx,
        pending: backlog,
        last: resume,
        done: false,
    };
    let stream = stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(change) = f.pending.pop_front() {
                if change.event_id <= f.last {
                    continue;
                }
                f.last = change.event_id;
                f.done = is_terminal(&change);
                return Some((to_event(&change), f));
            }
            if f.done {
                return None;
            }
            match f.rx.recv().await {
                Ok(change) if change.order_id == f.order_id => f.pending.push_back(change),
                Ok(_) => {}
                // Fell behind the broadcast: catch up from the database.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match history(&f.state, f.order_id, f.last).await {
                        Ok(missed) => f.pending.extend(missed),
                        Err(_) => return None,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let sse = Sse::new(stream.boxed()).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    );
    let mut response = sse.into_response();
    // Tell buffering proxies (nginx) to pass events through at once.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
