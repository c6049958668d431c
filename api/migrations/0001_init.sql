-- Users, catalog, carts, orders and payments: the ordering API's core schema.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    name          text NOT NULL,
    password_hash text NOT NULL,
    roles         text[] NOT NULL DEFAULT '{customer}'
                  CHECK (roles <@ ARRAY['customer','kitchen','courier','manager','admin']::text[]),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_created_idx ON users (created_at, id);

-- Refresh tokens rotate: each use marks the row used and issues a new one in
-- the same family. Presenting a used token again revokes the whole family.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE TABLE categories (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    position    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX categories_name_key ON categories (lower(name));

-- stock NULL means unlimited. Items referenced by orders are never deleted:
-- deleting one sets deleted_at so order history keeps its lines.
CREATE TABLE menu_items (
    id          uuid PRIMARY KEY,
    category_id uuid NOT NULL REFERENCES categories (id),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    stock       integer CHECK (stock >= 0),
    available   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
) WITH (fillfactor = 50);  -- room for HOT updates: every order rewrites stock
CREATE INDEX menu_items_category_idx ON menu_items (category_id) WHERE deleted_at IS NULL;
CREATE INDEX menu_items_name_idx ON menu_items (name, id) WHERE deleted_at IS NULL;
CREATE INDEX menu_items_price_idx ON menu_items (price_cents, id) WHERE deleted_at IS NULL;

CREATE TABLE cart_items (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    menu_item_id uuid NOT NULL REFERENCES menu_items (id) ON DELETE CASCADE,
    quantity     integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, menu_item_id)
);

-- An order carries its captured payment (one per order) and the
-- Idempotency-Key it was placed with: placing writes one order row, its
-- lines and the stock, nothing else. request_hash tells a retry from a key
-- reused for a different order.
CREATE TABLE orders (
    id                uuid PRIMARY KEY,
    customer_id       uuid NOT NULL REFERENCES users (id),
    status            text NOT NULL DEFAULT 'placed'
                      CHECK (status IN ('placed','accepted','rejected','cancelled','ready','out_for_delivery','delivered')),
    total_cents       bigint NOT NULL CHECK (total_cents >= 0),
    courier_id        uuid REFERENCES users (id),
    idempotency_key   text NOT NULL,
    request_hash      bytea NOT NULL,
    payment_id        uuid NOT NULL,
    payment_method    text NOT NULL,
    payment_status    text NOT NULL CHECK (payment_status IN ('captured')),
    payment_reference text NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CONSTRAINT orders_idempotency_key UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_placed_idx ON orders (created_at) WHERE status = 'placed';

CREATE TABLE order_items (
    order_id         uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    menu_item_id     uuid NOT NULL REFERENCES menu_items (id),
    name             text NOT NULL,
    unit_price_cents bigint NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, menu_item_id)
);

-- One row per status change after placement (placement itself is the
-- order's created_at and customer). actor_id has no foreign key: the history
-- is an audit record and must outlive anything done to accounts.
CREATE TABLE order_events (
    order_id    uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    id          bigserial,
    from_status text NOT NULL,
    to_status   text NOT NULL,
    actor_id    uuid,
    reason      text,
    at          timestamptz NOT NULL,
    PRIMARY KEY (order_id, id)
);

-- Places an order in one round trip and one transaction (the statement's).
-- Locks the ordered items in id order, so concurrent orders queue per item
-- and never deadlock; checks availability and stock under the lock; claims
-- the Idempotency-Key with the order row itself; writes lines (names and
-- prices snapshotted) and stock. Returns one row with the outcome, and for
-- `placed` one row per line with its snapshot:
--   placed | duplicate (key already used) | unknown_item | item_unavailable
--   | insufficient_stock (with the stock left).
CREATE FUNCTION place_order(
    p_order uuid, p_customer uuid, p_key text, p_request_hash bytea,
    p_items uuid[], p_quantities integer[], p_at timestamptz,
    p_payment uuid, p_method text, p_reference text, p_from_cart boolean)
RETURNS TABLE (outcome text, item uuid, item_name text, price_cents bigint, stock_left integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
    total bigint := 0;
    ids uuid[] := '{}';
    names text[] := '{}';
    prices bigint[] := '{}';
    quantities integer[] := '{}';
BEGIN
    FOR r IN
        SELECT m.id, m.name, m.price_cents, m.stock, m.available, m.deleted_at IS NOT NULL AS deleted, q.quantity
        FROM menu_items m JOIN unnest(p_items, p_quantities) AS q (id, quantity) ON q.id = m.id
        ORDER BY m.id
        FOR UPDATE OF m
    LOOP
        IF r.deleted THEN
            RETURN QUERY SELECT 'unknown_item', r.id, NULL::text, NULL::bigint, NULL::integer;
            RETURN;
        ELSIF NOT r.available THEN
            RETURN QUERY SELECT 'item_unavailable', r.id, r.name, NULL::bigint, NULL::integer;
            RETURN;
        ELSIF r.stock IS NOT NULL AND r.stock < r.quantity THEN
            RETURN QUERY SELECT 'insufficient_stock', r.id, r.name, NULL::bigint, r.stock;
            RETURN;
        END IF;
        total := total + r.price_cents * r.quantity;
        ids := ids || r.id;
        names := names || r.name;
        prices := prices || r.price_cents;
        quantities := quantities || r.quantity;
    END LOOP;
    IF cardinality(ids) < cardinality(p_items) THEN
        RETURN QUERY SELECT 'unknown_item', x, NULL::text, NULL::bigint, NULL::integer
            FROM unnest(p_items) AS x WHERE x <> ALL (ids) LIMIT 1;
        RETURN;
    END IF;

    INSERT INTO orders (id, customer_id, status, total_cents, idempotency_key, request_hash,
                        payment_id, payment_method, payment_status, payment_reference, created_at, updated_at)
    VALUES (p_order, p_customer, 'placed', total, p_key, p_request_hash,
            p_payment, p_method, 'captured', p_reference, p_at, p_at)
    ON CONFLICT ON CONSTRAINT orders_idempotency_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'duplicate', NULL::uuid, NULL::text, NULL::bigint, NULL::integer;
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
    RETURN QUERY SELECT 'placed', l.id, l.name, l.price, NULL::integer
        FROM unnest(ids, names, prices) AS l (id, name, price);
END
$$;
