-- Refunds for rejected and cancelled orders (one per captured payment), and
-- the notification channel that carries status changes to every replica.

CREATE TABLE refunds (
    id           uuid PRIMARY KEY,
    order_id     uuid NOT NULL UNIQUE REFERENCES orders (id) ON DELETE CASCADE,
    payment_id   uuid NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed')),
    reason       text NOT NULL,
    created_at   timestamptz NOT NULL,
    completed_at timestamptz,
    completed_by uuid
);
CREATE INDEX refunds_status_idx ON refunds (status, created_at, id);
-- Couriers list the orders assigned to them.
CREATE INDEX orders_courier_idx ON orders (courier_id, created_at DESC) WHERE courier_id IS NOT NULL;
