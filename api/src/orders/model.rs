//! What an order looks like to clients, and how it is read back from the
//! database.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Placed,
    Accepted,
    Rejected,
    Cancelled,
    Ready,
    OutForDelivery,
    Delivered,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Placed,
        OrderStatus::Accepted,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
        OrderStatus::Ready,
        OrderStatus::OutForDelivery,
        OrderStatus::Delivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Accepted => "accepted",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Ready => "ready",
            OrderStatus::OutForDelivery => "out_for_delivery",
            OrderStatus::Delivered => "delivered",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub menu_item_id: Uuid,
    /// Name at the time of ordering.
    pub name: String,
    /// Price at the time of ordering, in cents.
    pub unit_price_cents: i64,
    pub quantity: i32,
    pub line_total_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Card,
    Wallet,
    Cash,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Card => "card",
            PaymentMethod::Wallet => "wallet",
            PaymentMethod::Cash => "cash",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    pub id: Uuid,
    /// `card`, `wallet` or `cash`.
    pub method: String,
    /// `captured`.
    pub status: String,
    pub amount_cents: i64,
    /// The (mock) payment provider's reference.
    pub reference: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderEvent {
    #[schema(value_type = Option<OrderStatus>)]
    pub from_status: Option<String>,
    #[schema(value_type = OrderStatus)]
    pub to_status: String,
    /// Who made the change; null for automatic changes.
    pub actor_id: Option<Uuid>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// An order with its lines, payment and history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    pub total_cents: i64,
    pub payment: Option<Payment>,
    pub courier_id: Option<Uuid>,
    /// Every status change, oldest first.
    pub history: Vec<OrderEvent>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An order in a list.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderSummary {
    pub id: Uuid,
    pub customer_id: Uuid,
    #[schema(value_type = OrderStatus)]
    pub status: String,
    pub total_cents: i64,
    pub courier_id: Option<Uuid>,
    pub item_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Reads a whole order in one round trip: lines, payment and history come
/// back as JSON aggregates beside the row. Placement opens the history (from
/// the order row itself); the changes since follow.
pub async fn load_order<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<Order>, sqlx::Error> {
    let row: Option<FullOrderRow> = sqlx::query_as!(
        FullOrderRow,
        r#"SELECT o.id, o.customer_id, o.total_cents, o.created_at, o.status, o.courier_id, o.updated_at,
           COALESCE((SELECT json_agg(json_build_object('menu_item_id', i.menu_item_id, 'name', i.name,
                      'unit_price_cents', i.unit_price_cents, 'quantity', i.quantity,
                      'line_total_cents', i.unit_price_cents * i.quantity) ORDER BY i.menu_item_id)
                     FROM order_items i WHERE i.order_id = o.id), '[]'::json) AS "items!: Json<Vec<OrderLine>>",
           json_build_object('id', o.payment_id, 'method', o.payment_method, 'status', o.payment_status,
                      'amount_cents', o.total_cents, 'reference', o.payment_reference,
                      'created_at', o.created_at) AS "payment: Json<Payment>",
           (jsonb_build_array(jsonb_build_object('from_status', NULL, 'to_status', 'placed',
                      'actor_id', o.customer_id, 'reason', NULL, 'at', o.created_at))
            || COALESCE((SELECT jsonb_agg(jsonb_build_object('from_status', e.from_status, 'to_status', e.to_status,
                            'actor_id', e.actor_id, 'reason', e.reason, 'at', e.at) ORDER BY e.id)
                         FROM order_events e WHERE e.order_id = o.id), '[]'::jsonb))::json AS "history!: Json<Vec<OrderEvent>>"
         FROM orders o WHERE o.id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(FullOrderRow::into_order))
}

#[derive(sqlx::FromRow)]
struct FullOrderRow {
    id: Uuid,
    customer_id: Uuid,
    status: String,
    total_cents: i64,
    courier_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    items: Json<Vec<OrderLine>>,
    payment: Option<Json<Payment>>,
    history: Json<Vec<OrderEvent>>,
}

impl FullOrderRow {
    fn into_order(self) -> Order {
        Order {
            id: self.id,
            customer_id: self.customer_id,
            status: OrderStatus::parse(&self.status).unwrap_or(OrderStatus::Placed),
            items: self.items.0,
            total_cents: self.total_cents,
            payment: self.payment.map(|p| p.0),
            courier_id: self.courier_id,
            history: self.history.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}
