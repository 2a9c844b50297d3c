-- Listing URLs and withdrawal, order import with its cursor, and a log of marketplace errors.
ALTER TABLE listings
    ADD COLUMN url          text,
    ADD COLUMN withdrawn_at timestamptz,
    ADD COLUMN withdraw_reason text,
    -- The listing's state and quantity on the marketplace as last polled (Etsy).
    ADD COLUMN remote_state    text,
    ADD COLUMN remote_quantity integer,
    ADD COLUMN remote_checked_at timestamptz;

-- Where order import stands per account: orders modified at or after this were not yet seen.
ALTER TABLE marketplace_accounts ADD COLUMN orders_synced_to timestamptz;

-- Orders imported from a marketplace, one row per remote order (upserted on every change).
CREATE TABLE orders (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id        bigint      NOT NULL REFERENCES marketplace_accounts (id),
    marketplace       text        NOT NULL CHECK (marketplace IN ('ebay', 'etsy', 'vinted')),
    remote_order_id   text        NOT NULL,
    status            text        NOT NULL,
    total_cents       bigint,
    currency          text,
    placed_at         timestamptz,
    remote_updated_at timestamptz,
    raw               jsonb       NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (marketplace, remote_order_id)
);

-- An order's lines. The primary key makes the stock decrement happen once per line, however
-- often the order is seen again.
CREATE TABLE order_lines (
    order_id   bigint  NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_id    text    NOT NULL,
    product_id bigint  REFERENCES products (id),
    sku        text,
    quantity   integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, line_id)
);
CREATE INDEX order_lines_product ON order_lines (product_id);

-- What the marketplaces refused or failed, per marketplace, for sellers and ops.
CREATE TABLE marketplace_errors (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    marketplace text        NOT NULL,
    account_id  bigint,
    job_id      bigint,
    kind        text        NOT NULL,
    class       text        NOT NULL,
    message     text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX marketplace_errors_recent ON marketplace_errors (marketplace, at DESC);
