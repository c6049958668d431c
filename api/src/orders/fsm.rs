//! The order state machine, pure: which action moves an order from which
//! state to which, and who may take it. Handlers call `transition`; SQL
//! persists the result.
//!
//! ```text
//! placed ─accept→ accepted ─ready→ ready ─pickup→ out_for_delivery ─deliver→ delivered
//!   ├─reject / auto-reject→ rejected
//!   └─cancel→ cancelled
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::model::OrderStatus;
use crate::auth::{AuthUser, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Accept,
    Reject,
    Ready,
    Assign,
    Pickup,
    Deliver,
    Cancel,
    /// Rejection by the system when an order was not accepted in time.
    AutoReject,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Accept,
        Action::Reject,
        Action::Ready,
        Action::Assign,
        Action::Pickup,
        Action::Deliver,
        Action::Cancel,
        Action::AutoReject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Ready => "ready",
            Action::Assign => "assign",
            Action::Pickup => "pickup",
            Action::Deliver => "deliver",
            Action::Cancel => "cancel",
            Action::AutoReject => "auto_reject",
        }
    }
}

/// Who acts on an order, as far as the state machine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// Kitchen staff, managers and admins.
    Staff,
    /// The courier assigned to this order.
    AssignedCourier,
    /// The customer who placed this order.
    OwnCustomer,
    /// The auto-reject sweeper.
    System,
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered | OrderStatus::Rejected | OrderStatus::Cancelled
        )
    }
}

/// The state an action leads to from a state, whoever takes it.
pub fn next(from: OrderStatus, action: Action) -> Option<OrderStatus> {
    use Action as A;
    use OrderStatus as S;
    match (from, action) {
        (S::Placed, A::Accept) => Some(S::Accepted),
        (S::Placed, A::Reject | A::AutoReject) => Some(S::Rejected),
        (S::Placed, A::Cancel) => Some(S::Cancelled),
        (S::Accepted, A::Ready) => Some(S::Ready),
        // Assigning a courier keeps the state; it is allowed until pickup.
        (S::Accepted, A::Assign) => Some(S::Accepted),
        (S::Ready, A::Assign) => Some(S::Ready),
        (S::Ready, A::Pickup) => Some(S::OutForDelivery),
        (S::OutForDelivery, A::Deliver) => Some(S::Delivered),
        _ => None,
    }
}

/// Whether this actor may take this action at all (regardless of state).
pub fn permitted(action: Action, actor: Actor) -> bool {
    use Action as A;
    match action {
        A::Accept | A::Reject | A::Ready | A::Assign => actor == Actor::Staff,
        A::Pickup | A::Deliver => actor == Actor::AssignedCourier,
        A::Cancel => actor == Actor::OwnCustomer,
        A::AutoReject => actor == Actor::System,
    }
}

/// The actions that can follow a state (for error messages and clients).
pub fn allowed_actions(from: OrderStatus) -> Vec<Action> {
    Action::ALL
        .into_iter()
        .filter(|a| *a != Action::AutoReject && next(from, *a).is_some())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("{actor:?} may not {action}", action = .action.as_str())]
    Forbidden { action: Action, actor: Actor },
    #[error("cannot {action} an order that is {from}", action = .action.as_str(), from = .from.as_str())]
    Invalid { from: OrderStatus, action: Action },
}

pub fn transition(
    from: OrderStatus,
    action: Action,
    actor: Actor,
) -> Result<OrderStatus, TransitionError> {
    if !permitted(action, actor) {
        return Err(TransitionError::Forbidden { action, actor });
    }
    next(from, action).ok_or(TransitionError::Invalid { from, action })
}

/// Who may see which orders: staff see all; anyone else the orders they
/// placed and, holding the courier role, those assigned to them. The one
/// rule behind reading an order, listing orders (whose SQL takes these
/// fields as parameters) and acting on one.
#[derive(Debug, Clone, Copy)]
pub struct Visibility {
    pub all: bool,
    pub user: uuid::Uuid,
    pub as_courier: bool,
}

impl Visibility {
    pub fn of(user: &AuthUser) -> Visibility {
        Visibility {
            all: user.is_staff(),
            user: user.id,
            as_courier: user.has(Role::Courier),
        }
    }

    fn customer(&self, customer_id: uuid::Uuid) -> bool {
        customer_id == self.user
    }

    fn courier(&self, courier_id: Option<uuid::Uuid>) -> bool {
        self.as_courier && courier_id == Some(self.user)
    }

    /// Whether the order with these parties is visible.
    pub fn sees(&self, customer_id: uuid::Uuid, courier_id: Option<uuid::Uuid>) -> bool {
        self.all || self.customer(customer_id) || self.courier(courier_id)
    }

    /// How this user acts on such an order; None when they have no part in
    /// it (and do not get to see it at all).
    pub fn actor(
        &self,
        action: Action,
        customer_id: uuid::Uuid,
        courier_id: Option<uuid::Uuid>,
    ) -> Option<Actor> {
        let courier = self.courier(courier_id);
        let customer = self.customer(customer_id);
        match action {
            Action::Pickup | Action::Deliver if courier => Some(Actor::AssignedCourier),
            Action::Cancel if customer => Some(Actor::OwnCustomer),
            _ if self.all => Some(Actor::Staff),
            _ if courier => Some(Actor::AssignedCourier),
            _ if customer => Some(Actor::OwnCustomer),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus as S;

    const ACTORS: [Actor; 4] = [
        Actor::Staff,
        Actor::AssignedCourier,
        Actor::OwnCustomer,
        Actor::System,
    ];

    /// Seeing an order and having a part in it are one rule.
    #[test]
    fn whoever_can_act_on_an_order_can_see_it_and_no_one_else() {
        use uuid::Uuid;
        let me = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        for all in [false, true] {
            for as_courier in [false, true] {
                let v = Visibility {
                    all,
                    user: me,
                    as_courier,
                };
                for customer in [me, other] {
                    for courier in [None, Some(me), Some(other)] {
                        for action in Action::ALL {
                            assert_eq!(
                                v.actor(action, customer, courier).is_some(),
                                v.sees(customer, courier),
                                "{v:?} {customer} {courier:?} {action:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The whole table: every (state, action, actor) and its outcome.
    #[test]
    fn every_state_action_and_actor_is_decided_as_specified() {
        let allowed: &[(S, Action, Actor, S)] = &[
            (S::Placed, Action::Accept, Actor::Staff, S::Accepted),
            (S::Placed, Action::Reject, Actor::Staff, S::Rejected),
            (S::Placed, Action::AutoReject, Actor::System, S::Rejected),
            (S::Placed, Action::Cancel, Actor::OwnCustomer, S::Cancelled),
            (S::Accepted, Action::Ready, Actor::Staff, S::Ready),
            (S::Accepted, Action::Assign, Actor::Staff, S::Accepted),
            (S::Ready, Action::Assign, Actor::Staff, S::Ready),
            (
                S::Ready,
                Action::Pickup,
                Actor::AssignedCourier,
                S::OutForDelivery,
            ),
            (
                S::OutForDelivery,
                Action::Deliver,
                Actor::AssignedCourier,
                S::Delivered,
            ),
        ];
        let mut checked = 0;
        for from in OrderStatus::ALL {
            for action in Action::ALL {
                for actor in ACTORS {
                    let result = transition(from, action, actor);
                    match allowed
                        .iter()
                        .find(|(f, a, who, _)| *f == from && *a == action && *who == actor)
                    {
                        Some((_, _, _, to)) => {
                            assert_eq!(result, Ok(*to), "{from:?} {action:?} {actor:?}")
                        }
                        None => {
                            assert!(result.is_err(), "{from:?} {action:?} {actor:?} should fail")
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 7 * 8 * 4);
    }

    #[test]
    fn a_wrong_actor_is_forbidden_before_the_state_is_looked_at() {
        assert_eq!(
            transition(S::Delivered, Action::Accept, Actor::OwnCustomer),
            Err(TransitionError::Forbidden {
                action: Action::Accept,
                actor: Actor::OwnCustomer
            })
        );
        assert_eq!(
            transition(S::Delivered, Action::Accept, Actor::Staff),
            Err(TransitionError::Invalid {
                from: S::Delivered,
                action: Action::Accept
            })
        );
    }

    #[test]
    fn terminal_states_allow_nothing() {
        for s in OrderStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(allowed_actions(s).is_empty(), "{s:?}");
        }
        assert_eq!(
            allowed_actions(S::Placed),
            vec![Action::Accept, Action::Reject, Action::Cancel]
        );
        assert_eq!(
            allowed_actions(S::Ready),
            vec![Action::Assign, Action::Pickup]
        );
    }
}
