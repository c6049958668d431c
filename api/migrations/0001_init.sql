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
);
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

CREATE TABLE orders (
    id          uuid PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES users (id),
    status      text NOT NULL DEFAULT 'placed'
                CHECK (status IN ('placed','accepted','rejected','cancelled','ready','out_for_delivery','delivered')),
    total_cents bigint NOT NULL CHECK (total_cents >= 0),
    courier_id  uuid REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX orders_customer_idx ON orders (customer_id, created_at DESC, id DESC);
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

CREATE TABLE payments (
    id           uuid PRIMARY KEY,
    order_id     uuid NOT NULL UNIQUE REFERENCES orders (id) ON DELETE CASCADE,
    method       text NOT NULL,
    status       text NOT NULL CHECK (status IN ('captured')),
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    reference    text NOT NULL,
    created_at   timestamptz NOT NULL
);

-- One row per status change: the order's history.
CREATE TABLE order_events (
    id          bigserial PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    from_status text,
    to_status   text NOT NULL,
    actor_id    uuid REFERENCES users (id),
    reason      text,
    at          timestamptz NOT NULL
);
CREATE INDEX order_events_order_idx ON order_events (order_id, id);

-- The exact response of the first successful POST /orders for a key, so every
-- retry gets the same bytes back. request_hash detects a key reused for a
-- different order.
CREATE TABLE idempotency_keys (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    order_id     uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    response     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
