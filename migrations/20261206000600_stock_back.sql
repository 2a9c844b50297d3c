-- A cancelled or refunded order gives its stock back once, and re-lists where its sale withdrew
-- the product. A line remembers what its sale did: the product's status before it sold the last
-- unit, the withdraw jobs it enqueued, and when its stock came back.
ALTER TABLE order_lines
    ADD COLUMN sold_out_from text,
    ADD COLUMN withdraw_jobs bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN returned_at   timestamptz;

-- The job that took the listing down (so a cancelled sale re-lists only what it withdrew).
ALTER TABLE listings ADD COLUMN withdrawn_by_job bigint;

-- What ops see per account: the last push received (a webhook) and the last poll of its sales.
ALTER TABLE marketplace_accounts
    ADD COLUMN last_push_at timestamptz,
    ADD COLUMN last_poll_at timestamptz;

-- Sales of the last hour (the dashboard's double-sell window).
CREATE INDEX orders_placed_at ON orders (placed_at);
