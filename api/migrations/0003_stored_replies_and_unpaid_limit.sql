-- The reply to POST /orders is built once, stored with the order and replayed
-- from there for a retry with the same Idempotency-Key; and a customer may
-- hold only so many open cash orders (they hold stock without any payment).
--
-- The previous place_order stays (another signature) so replicas of the
-- previous release keep placing orders during a rollout; their orders have
-- no stored reply.

ALTER TABLE orders ADD COLUMN reply text;

-- Open cash orders per customer, counted at every cash placement.
CREATE INDEX orders_open_cash_idx ON orders (customer_id)
    WHERE payment_method = 'cash' AND status IN ('placed', 'accepted', 'ready', 'out_for_delivery');

-- As before (one round trip, items locked in id order, stock checked and
-- taken under the lock, the key claimed by the order row), and:
-- * p_max_unpaid: for a cash order, the customer's open cash orders must be
--   fewer than this (NULL: no limit). The customer row is locked first, so
--   two concurrent cash orders of one customer cannot both pass the count.
-- * the reply is built here, once, stored in orders.reply and returned;
--   p_at_json is p_at as the API writes times in JSON.
-- Outcomes: placed (with reply) | duplicate | unknown_item | item_unavailable
--   | insufficient_stock (stock_left) | unpaid_limit (stock_left = open count).
CREATE FUNCTION place_order(
    p_order uuid, p_customer uuid, p_key text, p_request_hash bytea,
    p_items uuid[], p_quantities integer[], p_at timestamptz, p_at_json text,
    p_payment uuid, p_method text, p_reference text, p_from_cart boolean,
    p_max_unpaid integer)
RETURNS TABLE (outcome text, item uuid, item_name text, stock_left integer, reply text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
    open_unpaid integer;
    total bigint := 0;
    ids uuid[] := '{}';
    names text[] := '{}';
    prices bigint[] := '{}';
    quantities integer[] := '{}';
    at json := p_at_json::json;
    body text;
BEGIN
    IF p_method = 'cash' AND p_max_unpaid IS NOT NULL THEN
        PERFORM 1 FROM users u WHERE u.id = p_customer FOR NO KEY UPDATE;
        IF EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = p_customer AND o.idempotency_key = p_key) THEN
            RETURN QUERY SELECT 'duplicate', NULL::uuid, NULL::text, NULL::integer, NULL::text;
            RETURN;
        END IF;
        SELECT count(*) INTO open_unpaid FROM orders o
        WHERE o.customer_id = p_customer AND o.payment_method = 'cash'
          AND o.status IN ('placed', 'accepted', 'ready', 'out_for_delivery');
        IF open_unpaid >= p_max_unpaid THEN
            RETURN QUERY SELECT 'unpaid_limit', NULL::uuid, NULL::text, open_unpaid, NULL::text;
            RETURN;
        END IF;
    END IF;

    FOR r IN
        SELECT m.id, m.name, m.price_cents, m.stock, m.available, m.deleted_at IS NOT NULL AS deleted, q.quantity
        FROM menu_items m JOIN unnest(p_items, p_quantities) AS q (id, quantity) ON q.id = m.id
        ORDER BY m.id
        FOR UPDATE OF m
    LOOP
        IF r.deleted THEN
            RETURN QUERY SELECT 'unknown_item', r.id, NULL::text, NULL::integer, NULL::text;
            RETURN;
        ELSIF NOT r.available THEN
            RETURN QUERY SELECT 'item_unavailable', r.id, r.name, NULL::integer, NULL::text;
            RETURN;
        ELSIF r.stock IS NOT NULL AND r.stock < r.quantity THEN
            RETURN QUERY SELECT 'insufficient_stock', r.id, r.name, r.stock, NULL::text;
            RETURN;
        END IF;
        total := total + r.price_cents * r.quantity;
        ids := ids || r.id;
        names := names || r.name;
        prices := prices || r.price_cents;
        quantities := quantities || r.quantity;
    END LOOP;
    IF cardinality(ids) < cardinality(p_items) THEN
        RETURN QUERY SELECT 'unknown_item', x, NULL::text, NULL::integer, NULL::text
            FROM unnest(p_items) AS x WHERE x <> ALL (ids) LIMIT 1;
        RETURN;
    END IF;

    -- The same fields, in the same order, as GET /orders/{id} of a new order.
    body := json_build_object(
        'id', p_order, 'customer_id', p_customer, 'status', 'placed',
        'items', (SELECT json_agg(json_build_object('menu_item_id', l.id, 'name', l.name,
                     'unit_price_cents', l.price, 'quantity', l.quantity,
                     'line_total_cents', l.price * l.quantity) ORDER BY l.id)
                  FROM unnest(ids, names, prices, quantities) AS l (id, name, price, quantity)),
        'total_cents', total,
        'payment', json_build_object('id', p_payment, 'method', p_method, 'status', 'captured',
                     'amount_cents', total, 'reference', p_reference, 'created_at', at),
        'courier_id', NULL,
        'history', json_build_array(json_build_object('from_status', NULL, 'to_status', 'placed',
                     'actor_id', p_customer, 'reason', NULL, 'at', at)),
        'created_at', at, 'updated_at', at)::text;

    INSERT INTO orders (id, customer_id, status, total_cents, idempotency_key, request_hash,
                        payment_id, payment_method, payment_status, payment_reference,
                        created_at, updated_at, reply)
    VALUES (p_order, p_customer, 'placed', total, p_key, p_request_hash,
            p_payment, p_method, 'captured', p_reference, p_at, p_at, body)
    ON CONFLICT ON CONSTRAINT orders_idempotency_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'duplicate', NULL::uuid, NULL::text, NULL::integer, NULL::text;
        RETURN;
    END IF;
    INSERT INTO order_items (order_id, menu_item_id, name, unit_price_cents, quantity)
    SELECT p_order, l.id, l.name, l.price, l.quantity
    FROM unnest(ids, names, prices, quantities) AS l (id, name, price, quantity);
    UPDATE menu_items m SET stock = m.stock - q.quantity
    FROM unnest(ids, quantities) AS q (id, quantity)
    WHERE m.id = q.id AND m.stock IS NOT NULL;
    IF p_from_cart THEN
        DELETE FROM cart_items c WHERE c.user_id = p_customer AND c.menu_item_id = ANY (ids);
    END IF;
    RETURN QUERY SELECT 'placed', NULL::uuid, NULL::text, NULL::integer, body;
END
$$;

-- The open-order gauges count these (every 15 s per replica), not the table.
CREATE INDEX orders_open_idx ON orders (status)
    WHERE status IN ('placed', 'accepted', 'ready', 'out_for_delivery');
