//! `POST /orders`: the SQL function `place_order` does the whole
//! transaction in one round trip — locks the ordered items in id order (so
//! concurrent orders cannot deadlock), checks and decrements stock, claims the
//! Idempotency-Key, snapshots prices, records the captured payment and
//! stores the reply with the order. A retry with the same key, sequential or
//! concurrent, gets that stored reply: the same bytes every time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::OrderError;
use super::model::PaymentMethod;
use crate::AppState;
use crate::cart::MAX_QUANTITY;

pub const MAX_LINES: usize = 50;
pub const MAX_KEY_LEN: usize = 200;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// What to order, 1 to 50 lines. Give either `items` or `from_cart: true`.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 50)]
    pub items: Option<Vec<LineRequest>>,
    /// Order the caller's cart (and empty it).
    #[serde(default)]
    pub from_cart: bool,
    pub payment: PaymentRequest,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub menu_item_id: Uuid,
    /// 1 to 100 (lines of the same item add up, to 100 at most).
    #[serde(deserialize_with = "crate::json::int")]
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub method: PaymentMethod,
    /// Token from the payment provider; required for `card` and `wallet`.
    /// The mock provider declines `tok_declined`.
    #[serde(default)]
    pub token: Option<String>,
}

/// The request reduced to what identifies it, for comparing retries.
#[derive(Serialize)]
struct Fingerprint<'a> {
    items: Option<&'a BTreeMap<Uuid, i32>>,
    from_cart: bool,
    payment: &'a PaymentRequest,
}

pub struct Placed {
    pub order_id: Uuid,
    pub body: String,
    pub replayed: bool,
}

pub fn check_key(key: Option<&str>) -> Result<String, OrderError> {
    let key = key.ok_or(OrderError::MissingKey)?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(OrderError::InvalidKey);
    }
    Ok(key.to_owned())
}

/// Validates the request shape and merges repeated items.
fn normalize(req: &PlaceOrder) -> Result<Option<BTreeMap<Uuid, i32>>, OrderError> {
    let invalid = |s: &str| OrderError::Invalid(s.to_owned());
    match (&req.items, req.from_cart) {
        (Some(_), true) => Err(invalid("give either items or from_cart, not both")),
        (None, false) => Err(invalid("give the items to order, or from_cart: true")),
        (None, true) => Ok(None),
        (Some(items), false) => {
            if items.is_empty() || items.len() > MAX_LINES {
                return Err(OrderError::Invalid(format!(
                    "an order has 1 to {MAX_LINES} lines"
                )));
            }
            let mut merged = BTreeMap::new();
            for line in items {
                let q = merged.entry(line.menu_item_id).or_insert(0i32);
                *q = q.saturating_add(line.quantity);
                if line.quantity < 1 || *q > MAX_QUANTITY {
                    return Err(OrderError::Invalid(format!(
                        "quantity of each item ({}) must be between 1 and {MAX_QUANTITY}, repeated lines added up",
                        line.menu_item_id
                    )));
                }
            }
            Ok(Some(merged))
        }
    }
}

fn check_payment(p: &PaymentRequest) -> Result<(), OrderError> {
    let token = p.token.as_deref().unwrap_or("");
    match p.method {
        PaymentMethod::Cash if !token.is_empty() => {
            Err(OrderError::Invalid("cash payments take no token".into()))
        }
        PaymentMethod::Card | PaymentMethod::Wallet if token.is_empty() || token.len() > 200 => {
            Err(OrderError::Invalid(
                "card and wallet payments need a token of 1 to 200 characters".into(),
            ))
        }
        _ if token == "tok_declined" => Err(OrderError::PaymentDeclined),
        _ => Ok(()),
    }
}

pub async fn place(
    state: &AppState,
    customer: Uuid,
    key: String,
    req: PlaceOrder,
) -> Result<Placed, OrderError> {
    let items = normalize(&req)?;
    let fingerprint = serde_json::to_vec(&Fingerprint {
        items: items.as_ref(),
        from_cart: req.from_cart,
        payment: &req.payment,
    })
    .map_err(|e| OrderError::Internal(e.to_string()))?;
    let request_hash = Sha256::digest(&fingerprint).to_vec();
    check_payment(&req.payment)?;

    // Placing is idempotent by key, so a deadlock, a serialization failure
    // or a lost connection retries the whole transaction: either it
    // committed (the retry replays it) or nothing happened.
    let attempt = || async {
        match try_place(
            state,
            customer,
            &key,
            &request_hash,
            items.clone(),
            &req.payment,
        )
        .await
        {
            Ok(Some((order_id, body))) => {
                state.metrics.orders_created.inc();
                Ok(Placed {
                    order_id,
                    body,
                    replayed: false,
                })
            }
            // The key was claimed before, or by a concurrent twin that committed first.
            Ok(None) => replay(state, customer, &key, &request_hash)
                .await?
                .ok_or(OrderError::KeyInFlight),
            Err(err) => {
                // A concurrent twin may have taken the last units (or the
                // last unpaid slot) with this very key: then the answer is
                // its order, not the error.
                if !matches!(err, OrderError::Database(_))
                    && let Some(found) = replay(state, customer, &key, &request_hash).await?
                {
                    return Ok(found);
                }
                if matches!(err, OrderError::InsufficientStock { .. }) {
                    state.metrics.stock_conflicts.inc();
                }
                Err(err)
            }
        }
    };
    crate::db::retry_transient(attempt, OrderError::is_retryable).await
}

async fn replay(
    state: &AppState,
    customer: Uuid,
    key: &str,
    request_hash: &[u8],
) -> Result<Option<Placed>, OrderError> {
    let stored: Option<(Vec<u8>, Uuid, Option<String>)> = sqlx::query!(
        "SELECT request_hash, id, reply FROM orders WHERE customer_id = $1 AND idempotency_key = $2",
        customer,
        key
    )
    .fetch_optional(&state.pool)
    .await?
    .map(|r| (r.request_hash, r.id, r.reply));
    match stored {
        None => Ok(None),
        Some((hash, order_id, reply)) if hash == request_hash => {
            let body = match reply {
                Some(body) => body,
                // Placed by a replica of the release before replies were
                // stored: the order as it is now is the best answer left.
                None => {
                    let order = super::model::load_order(&state.pool, order_id)
                        .await?
                        .ok_or_else(|| {
                            OrderError::Internal(format!(
                                "order {order_id} of an idempotency key is missing"
                            ))
                        })?;
                    serde_json::to_string(&order)
                        .map_err(|e| OrderError::Internal(e.to_string()))?
                }
            };
            Ok(Some(Placed {
                order_id,
                body,
                replayed: true,
            }))
        }
        Some(_) => Err(OrderError::KeyReused),
    }
}

fn now_micros() -> DateTime<Utc> {
    // PostgreSQL keeps microseconds: truncate so this reply and every later
    // read show the same instant.
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// One row of `place_order`'s answer.
#[derive(sqlx::FromRow)]
struct Outcome {
    outcome: String,
    item: Option<Uuid>,
    item_name: Option<String>,
    stock_left: Option<i32>,
    reply: Option<String>,
}

/// Places the order: its id and the reply. `Ok(None)` means the key was already taken.
async fn try_place(
    state: &AppState,
    customer: Uuid,
    key: &str,
    request_hash: &[u8],
    items: Option<BTreeMap<Uuid, i32>>,
    payment: &PaymentRequest,
) -> Result<Option<(Uuid, String)>, OrderError> {
    let from_cart = items.is_none();
    let wanted: BTreeMap<Uuid, i32> = match items {
        Some(items) => items,
        None => sqlx::query!(
            "SELECT menu_item_id, quantity FROM cart_items WHERE user_id = $1",
            customer
        )
        .fetch_all(&state.pool)
        .await?
        .into_iter()
        .map(|r| (r.menu_item_id, r.quantity))
        .collect(),
    };
    if wanted.is_empty() {
        return Err(OrderError::CartEmpty);
    }
    // The cart holds at most MAX_LINES items, but two additions racing each
    // other can pass that check together: an order never exceeds it.
    if wanted.len() > MAX_LINES {
        return Err(OrderError::Invalid(format!(
            "an order has 1 to {MAX_LINES} lines; this cart has {}",
            wanted.len()
        )));
    }
    let ids: Vec<Uuid> = wanted.keys().copied().collect();
    let quantities: Vec<i32> = wanted.values().copied().collect();
    let order_id = Uuid::now_v7();
    let payment_id = Uuid::now_v7();
    let reference = format!(
        "pay_{}",
        &hex::encode(Sha256::digest(order_id.as_bytes()))[..24]
    );
    let now = now_micros();
    // Times in the stored reply are written exactly as the API writes them.
    let now_json = serde_json::to_string(&now).map_err(|e| OrderError::Internal(e.to_string()))?;
    let max_unpaid = match state.settings.max_unpaid_orders {
        0 => None,
        n => Some(i32::try_from(n).unwrap_or(i32::MAX)),
    };

    let row: Outcome = sqlx::query_as!(
        Outcome,
        r#"SELECT outcome AS "outcome!", item, item_name, stock_left, reply
         FROM place_order($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"#,
        order_id,
        customer,
        key,
        request_hash,
        &ids,
        &quantities,
        now,
        &now_json,
        payment_id,
        payment.method.as_str(),
        &reference,
        from_cart,
        max_unpaid
    )
    .fetch_one(&state.pool)
    .await?;

    let item = row.item.unwrap_or_default();
    let name = row.item_name.unwrap_or_default();
    match row.outcome.as_str() {
        "placed" => row.reply.map(|body| Some((order_id, body))).ok_or_else(|| {
            OrderError::Internal("place_order placed an order without a reply".into())
        }),
        "duplicate" => Ok(None),
        "unknown_item" => Err(OrderError::UnknownItem { item }),
        "item_unavailable" => Err(OrderError::ItemUnavailable { item, name }),
        "insufficient_stock" => Err(OrderError::InsufficientStock {
            item,
            name,
            requested: wanted.get(&item).copied().unwrap_or(0),
            available: row.stock_left.unwrap_or(0),
        }),
        "unpaid_limit" => Err(OrderError::TooManyUnpaid {
            open: row.stock_left.unwrap_or(0),
            limit: max_unpaid.unwrap_or(0),
        }),
        other => Err(OrderError::Internal(format!(
            "place_order: unknown outcome {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(items: Option<Vec<(Uuid, i32)>>, from_cart: bool) -> PlaceOrder {
        PlaceOrder {
            items: items.map(|v| {
                v.into_iter()
                    .map(|(menu_item_id, quantity)| LineRequest {
                        menu_item_id,
                        quantity,
                    })
                    .collect()
            }),
            from_cart,
            payment: PaymentRequest {
                method: PaymentMethod::Cash,
                token: None,
            },
        }
    }

    #[test]
    fn repeated_items_merge_and_bounds_hold() {
        let a = Uuid::from_u128(1);
        let merged = normalize(&req(Some(vec![(a, 2), (a, 3)]), false))
            .unwrap()
            .unwrap();
        assert_eq!(merged[&a], 5);
        assert!(normalize(&req(Some(vec![(a, 60), (a, 41)]), false)).is_err());
        assert!(normalize(&req(Some(vec![(a, 0)]), false)).is_err());
        assert!(normalize(&req(Some(vec![]), false)).is_err());
        assert!(normalize(&req(Some(vec![(a, 1)]), true)).is_err());
        assert!(normalize(&req(None, false)).is_err());
        assert!(normalize(&req(None, true)).unwrap().is_none());
    }

    #[test]
    fn payments_are_checked_and_the_mock_declines_deterministically() {
        let p = |method, token: Option<&str>| PaymentRequest {
            method,
            token: token.map(str::to_owned),
        };
        assert!(check_payment(&p(PaymentMethod::Cash, None)).is_ok());
        assert!(check_payment(&p(PaymentMethod::Cash, Some("tok"))).is_err());
        assert!(check_payment(&p(PaymentMethod::Card, None)).is_err());
        assert!(check_payment(&p(PaymentMethod::Card, Some("tok_visa"))).is_ok());
        let declined = check_payment(&p(PaymentMethod::Card, Some("tok_declined"))).unwrap_err();
        assert!(matches!(declined, OrderError::PaymentDeclined));
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(check_key(None).is_err());
        assert!(check_key(Some("")).is_err());
        assert!(check_key(Some("has space")).is_err());
        assert!(check_key(Some(&"k".repeat(201))).is_err());
        assert_eq!(check_key(Some("0b7c-4f")).unwrap(), "0b7c-4f");
    }
}
