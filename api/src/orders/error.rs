//! What can go wrong with an order, as a type: placing, moving along and
//! reading orders return these; `crate::error` turns them into problem
//! documents, in one place.

use uuid::Uuid;

use super::fsm::Action;
use super::model::OrderStatus;
use super::place::MAX_KEY_LEN;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(
        "POST /orders needs an Idempotency-Key header (for example a random UUID) so retries cannot order twice"
    )]
    MissingKey,
    #[error("the Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters")]
    InvalidKey,
    #[error(
        "this Idempotency-Key was already used for a different order; use a new key for a new order"
    )]
    KeyReused,
    /// The request breaks a rule of its own (no state needed to tell).
    #[error("{0}")]
    Invalid(String),
    #[error("the payment provider declined the payment; nothing was ordered")]
    PaymentDeclined,
    #[error("the cart is empty")]
    CartEmpty,
    #[error("an ordered menu item does not exist (any more)")]
    UnknownItem { item: Uuid },
    #[error("{name} is not available now")]
    ItemUnavailable { item: Uuid, name: String },
    #[error("only {available} of {name} left, {requested} requested")]
    InsufficientStock {
        item: Uuid,
        name: String,
        requested: i32,
        available: i32,
    },
    #[error(
        "you have {open} open cash orders, the most allowed; pay by card or wallet, or wait until one is delivered"
    )]
    TooManyUnpaid { open: i32, limit: i32 },
    #[error("order not found")]
    NotFound,
    #[error("you may not {action} this order", action = .0.as_str())]
    Forbidden(Action),
    #[error("cannot {action} an order that is {from}", action = .action.as_str(), from = .from.as_str())]
    InvalidTransition { from: OrderStatus, action: Action },
    #[error("courier_id must name a user with the courier role")]
    NotACourier { courier: Uuid },
    /// The key is claimed, but its order cannot be read: during a restore's
    /// switch one replica's connections reach two databases for a moment
    /// (the key on the old one, the read on the new). A retry settles it.
    #[error(
        "this Idempotency-Key's order is not readable right now (the shop is switching databases); retry with the same key"
    )]
    KeyInFlight,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl OrderError {
    /// Worth retrying the whole (idempotent) placement at once.
    pub fn is_retryable(&self) -> bool {
        matches!(self, OrderError::Database(e) if crate::error::is_retryable(e))
    }
}
