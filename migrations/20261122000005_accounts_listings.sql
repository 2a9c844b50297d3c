-- A seller's connection to a marketplace. Tokens are stored encrypted (AES-256-GCM, nonce
-- prepended) under the key named by token_key_id, so keys can rotate; they are never returned
-- by the API.
CREATE TABLE marketplace_accounts (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    marketplace        text        NOT NULL CHECK (marketplace IN ('ebay', 'etsy', 'vinted')),
    external_user_id   text        NOT NULL,
    shop_id            text,
    status             text        NOT NULL DEFAULT 'connected' CHECK (status IN ('connected', 'broken', 'disconnected')),
    status_reason      text,
    access_token       bytea,
    refresh_token      bytea,
    token_key_id       text,
    access_expires_at  timestamptz,
    refresh_expires_at timestamptz,
    scopes             text[]      NOT NULL DEFAULT '{}',
    -- Per-seller listing defaults (eBay: location, business policies, category).
    setup              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (marketplace, external_user_id)
);

-- Single-use, expiring OAuth `state` values (and the PKCE verifier for Etsy), kept server-side.
CREATE TABLE oauth_states (
    state       text        PRIMARY KEY,
    marketplace text        NOT NULL,
    verifier    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz
);

-- One listing per (product, marketplace): the remote ids that make publishing idempotent.
CREATE TABLE listings (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id        bigint      NOT NULL REFERENCES products (id),
    marketplace       text        NOT NULL CHECK (marketplace IN ('ebay', 'etsy', 'vinted')),
    account_id        bigint      REFERENCES marketplace_accounts (id),
    sku               text        NOT NULL,
    remote_offer_id   text,
    remote_listing_id text,
    status            text        NOT NULL DEFAULT 'publishing'
                      CHECK (status IN ('publishing', 'published', 'failed', 'withdrawn')),
    last_error        jsonb,
    published_at      timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (product_id, marketplace)
);
