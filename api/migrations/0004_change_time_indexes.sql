-- What a restore's switch reads while writes are paused: the rows of the
-- live database stamped after the restored one's newest change. Orders and
-- users have indexes on their time already; status changes and refunds get
-- theirs, so the pause stays seconds whatever the database's size.
CREATE INDEX order_events_at_idx ON order_events (at);
CREATE INDEX refunds_created_at_idx ON refunds (created_at);
