//! Live order tracking: `GET /orders/{id}/events` streams status changes as
//! Server-Sent Events. Every replica LISTENs on PostgreSQL's `order_events`
//! channel (transitions NOTIFY in their transaction), so a change made
//! through one replica reaches followers connected to any other.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
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
    /// The change's id: 0 for the placement, then increasing numbers shared
    /// by all orders (not the position in this order's history). Sent as the
    /// SSE `id`, so a reconnecting client resumes with `Last-Event-ID`.
    pub event_id: i64,
    #[schema(value_type = Option<OrderStatus>)]
    pub from_status: Option<String>,
    #[schema(value_type = OrderStatus)]
    pub to_status: String,
    pub actor_id: Option<Uuid>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The live streams of this replica: who follows which order, within the
/// limits per user and in total. A change reaches only the streams of its
/// order; after the notification connection was lost and made again, every
/// stream is told to catch up from the history.
pub struct Followers {
    inner: Mutex<Followed>,
    resync: watch::Sender<u64>,
    per_user: usize,
    total: usize,
}

#[derive(Default)]
struct Followed {
    orders: HashMap<Uuid, broadcast::Sender<StatusChange>>,
    users: HashMap<Uuid, usize>,
    open: usize,
}

/// Why a stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    TooManyForUser(usize),
    TooManyInTotal(usize),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let detail = match r {
            Refusal::TooManyForUser(n) => format!(
                "you already follow {n} orders live, the most allowed; close a stream first"
            ),
            Refusal::TooManyInTotal(_) => {
                "this server follows as many orders live as it can; retry shortly".to_owned()
            }
        };
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", detail)
    }
}

impl Followers {
    pub fn new(per_user: usize, total: usize) -> Arc<Followers> {
        Arc::new(Followers {
            inner: Mutex::default(),
            resync: watch::channel(0).0,
            per_user,
            total,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Followed> {
        // Nothing panics while holding it; a poisoned lock still holds sound counts.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a stream of `user` on `order`, if the limits allow one more.
    pub fn follow(self: &Arc<Self>, user: Uuid, order: Uuid) -> Result<Subscription, Refusal> {
        let mut f = self.lock();
        let mine = f.users.get(&user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(Refusal::TooManyForUser(mine));
        }
        if f.open >= self.total {
            return Err(Refusal::TooManyInTotal(f.open));
        }
        *f.users.entry(user).or_default() += 1;
        f.open += 1;
        let rx = f
            .orders
            .entry(order)
            .or_insert_with(|| broadcast::channel(16).0)
            .subscribe();
        Ok(Subscription {
            followers: Arc::clone(self),
            user,
            order,
            rx,
            resync: self.resync.subscribe(),
        })
    }

    /// Hands a change to the streams of its order, if any.
    pub fn publish(&self, change: StatusChange) {
        if let Some(tx) = self.lock().orders.get(&change.order_id) {
            // A stream that just ended is fine.
            let _ = tx.send(change);
        }
    }

    /// Every stream catches up from the history: notifications sent while
    /// the listening connection was away are lost.
    pub fn resync(&self) {
        self.resync.send_modify(|n| *n += 1);
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().open
    }
}

/// One open stream; closing it (dropping) frees its place.
pub struct Subscription {
    followers: Arc<Followers>,
    user: Uuid,
    order: Uuid,
    rx: broadcast::Receiver<StatusChange>,
    resync: watch::Receiver<u64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut f = self.followers.lock();
        f.open -= 1;
        if let Some(n) = f.users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                f.users.remove(&self.user);
            }
        }
        // This stream's receiver is still alive here: it was the last one
        // when it is the only one.
        if f.orders
            .get(&self.order)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            f.orders.remove(&self.order);
        }
    }
}

/// Forwards NOTIFYs to this replica's streams, reconnecting as needed; after
/// every (re)connection the streams catch up from the history.
pub async fn listen(pool: sqlx::PgPool, followers: Arc<Followers>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                } else {
                    followers.resync();
                    // try_recv, not recv: recv reconnects silently and what
                    // was sent meanwhile would be lost without anyone knowing.
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(n)) => {
                                match serde_json::from_str::<StatusChange>(n.payload()) {
                                    Ok(change) => followers.publish(change),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "unreadable order notification")
                                    }
                                }
                            }
                            Ok(None) => {
                                tracing::warn!("order notifications interrupted; reconnecting");
                                break;
                            }
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
    sub: Subscription,
    pending: VecDeque<StatusChange>,
    last: i64,
    done: bool,
    expires: tokio::time::Instant,
}

impl Follow {
    /// Reads what happened after the last event sent.
    async fn catch_up(&mut self) -> Result<(), sqlx::Error> {
        let missed = history(&self.state, self.sub.order, self.last).await?;
        self.pending.extend(missed);
        Ok(())
    }

    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<StatusChange> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                if change.event_id <= self.last {
                    continue;
                }
                self.last = change.event_id;
                self.done = is_terminal(&change);
                return Some(change);
            }
            if self.done {
                return None;
            }
            tokio::select! {
                received = self.sub.rx.recv() => match received {
                    Ok(change) => self.pending.push_back(change),
                    // Fell behind: catch up from the database.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await.ok()?,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.sub.resync.changed() => {
                    changed.ok()?;
                    self.catch_up().await.ok()?;
                }
                // The token that opened the stream has expired: the client
                // reconnects with a fresh one (and Last-Event-ID).
                () = tokio::time::sleep_until(self.expires) => return None,
            }
        }
    }
}

/// Follow an order: its history so far, then each status change as it
/// happens, as Server-Sent Events (`event: status`, `id`: the change's
/// `event_id`). Sends keep-alive comments; ends after a final state (at once
/// for an order already finished) and when the access token expires.
/// Honors `Last-Event-ID`. At most `LIVE_STREAMS_PER_USER` streams per user.
#[utoipa::path(get, path = "/orders/{id}/events", tag = "orders", params(("id" = Uuid, Path),
        ("Last-Event-ID" = Option<i64>, Header, description = "The `id` of the last event received; only later ones are sent")),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = StatusChange,
               description = "a stream of `status` events"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 429, description = "too_many_streams", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn events(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Subscribe before reading history, so nothing falls in between.
    let sub = state.followers.follow(user.id, id)?;
    let status = match load_order(&state.pool, id).await? {
        Some(order) if can_see(&user, &order) => order.status,
        _ => return Err(ApiError::not_found("order")),
    };
    // Our event ids are integers; anything else was not sent by us.
    let resume = match headers.get("last-event-id") {
        None => -1,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be the id of an event (an integer)")
            })?,
    };
    let all = history(&state, id, -1).await?;
    // An id beyond this order's newest event means "up to date", not "wait
    // for an event that will never come".
    let newest = all.last().map_or(0, |c| c.event_id);
    let backlog: VecDeque<StatusChange> = all.into_iter().filter(|c| c.event_id > resume).collect();
    let remaining = u64::try_from(user.expires_at - Utc::now().timestamp()).unwrap_or(0);
    let follow = Follow {
        state,
        sub,
        done: backlog.is_empty() && status.is_terminal(),
        pending: backlog,
        last: resume.min(newest),
        expires: tokio::time::Instant::now() + Duration::from_secs(remaining),
    };
    let stream = stream::unfold(follow, |mut f| async move {
        let change = f.next().await?;
        Some((to_event(&change), f))
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
