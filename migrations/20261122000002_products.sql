-- The seller's catalogue: one row per product, published to marketplaces by publish_listing jobs.
CREATE TABLE products (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The marketplace SKU (eBay's inventory key, Etsy's offering SKU): ≤ 50 of [A-Za-z0-9_-].
    sku            text        NOT NULL UNIQUE CHECK (sku ~ '^[A-Za-z0-9_-]{1,50}$'),
    title          text        NOT NULL CHECK (length(title) BETWEEN 1 AND 255),
    description    text        NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
    brand          text        CHECK (length(brand) <= 100),
    category       text        CHECK (length(category) <= 200),
    -- Vinted's scale, which maps onto eBay's condition enum and Etsy's who_made/when_made.
    condition      text        NOT NULL
                   CHECK (condition IN ('new_with_tags', 'new_without_tags', 'very_good', 'good', 'satisfactory')),
    price_cents    bigint      NOT NULL CHECK (price_cents > 0),
    currency       text        NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    size           text        CHECK (length(size) <= 50),
    color          text        CHECK (length(color) <= 50),
    stock_quantity integer     NOT NULL DEFAULT 1 CHECK (stock_quantity >= 0),
    images         jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(images) = 'array'),
    status         text        NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published', 'sold', 'archived')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: the row stays for listings and orders that refer to it.
    deleted_at     timestamptz
);

CREATE INDEX products_live_idx ON products (id DESC) WHERE deleted_at IS NULL;
