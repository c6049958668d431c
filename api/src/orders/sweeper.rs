//! Auto-rejection of orders not accepted in time. Driven by the database,
//! not by timers in memory: every replica sweeps, `FOR UPDATE SKIP LOCKED`
//! keeps them from doing the same order twice, and a restarted replica
//! catches up with whatever expired while it was down.

use std::time::Duration;

use super::fsm::{self, Action, Actor};
use super::model::OrderStatus;
use super::transitions::{Change, lock_items, persist};
use crate::AppState;

const BATCH: i64 = 100;

/// Rejects expired placed orders, a batch per transaction; returns how many.
pub async fn sweep_once(state: &AppState) -> Result<u64, sqlx::Error> {
    let after = state.settings.order_auto_reject_after;
    let from = OrderStatus::Placed;
    let to = fsm::transition(from, Action::AutoReject, Actor::System)
        .expect("the state machine lets the system reject placed orders");
    let mut total = 0;
    loop {
        let mut tx = state.pool.begin().await?;
        let expired: Vec<uuid::Uuid> = sqlx::query_scalar!(
            "SELECT id FROM orders
             WHERE status = 'placed' AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT $2
             FOR UPDATE SKIP LOCKED",
            after.as_secs_f64(),
            BATCH
        )
        .fetch_all(&mut *tx)
        .await?;
        let n = expired.len() as u64;
        // The whole batch's items at once, in id order (as placement takes
        // them), rather than order by order in age order: no deadlock.
        lock_items(&mut tx, &expired).await?;
        for order_id in expired {
            let change = Change {
                order_id,
                from,
                to,
                actor_id: None,
                reason: Some("timeout".to_owned()),
                courier_id: None,
            };
            persist(&mut tx, &change).await?;
        }
        tx.commit().await?;
        state.metrics.transition(from.as_str(), to.as_str(), n);
        state.metrics.auto_rejections.inc_by(n);
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// How often to look: a fifth of the timeout, between 100 ms and 5 s.
pub fn tick(after: Duration) -> Duration {
    (after / 5).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Sweeps forever; errors (database restarts) are logged and retried.
pub async fn run(state: AppState) {
    let mut interval = tokio::time::interval(tick(state.settings.order_auto_reject_after));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rejected = n, "auto-rejected orders not accepted in time"),
            Err(e) => tracing::warn!(error = %e, "auto-reject sweep failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_follows_the_timeout_within_bounds() {
        assert_eq!(tick(Duration::from_secs(300)), Duration::from_secs(5));
        assert_eq!(tick(Duration::from_secs(1)), Duration::from_millis(200));
        assert_eq!(tick(Duration::from_millis(100)), Duration::from_millis(100));
    }
}
