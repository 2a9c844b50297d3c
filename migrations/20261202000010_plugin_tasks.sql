-- The seller's browser extension ("plugin") runs Vinted tasks with the seller's own session.

-- Device tokens of the extension, one live token per Vinted account (reconnecting rotates it).
-- Only the SHA-256 of a token is kept: the token itself is shown once, at connect.
CREATE TABLE plugin_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint      NOT NULL REFERENCES marketplace_accounts (id),
    token_sha256 bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX plugin_tokens_account_idx ON plugin_tokens (account_id) WHERE revoked_at IS NULL;

-- One unit of work for the extension: create, update or delete one listing on Vinted.
-- pending → leased (the plugin holds it until lease_expires_at) → succeeded | failed | timed_out;
-- a transient failure or an expired lease puts it back to pending while attempts remain.
CREATE TABLE plugin_tasks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id       bigint      NOT NULL REFERENCES marketplace_accounts (id),
    product_id       bigint      NOT NULL REFERENCES products (id),
    listing_id       bigint      NOT NULL REFERENCES listings (id),
    action           text        NOT NULL CHECK (action IN ('create_listing', 'update_listing', 'delete_listing')),
    params           jsonb       NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'leased', 'succeeded', 'failed', 'timed_out')),
    -- Leases handed out so far (a blocked session gives its lease back without counting).
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts > 0),
    lease_id         text,
    lease_expires_at timestamptz,
    -- A pending task nobody leases by then times out.
    pickup_deadline  timestamptz NOT NULL,
    result           jsonb,
    error            jsonb,
    errors           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- Jobs that follow this task (its dispatch_plugin_task, the publish_listing that made it):
    -- woken as soon as a result arrives.
    job_ids          bigint[]    NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    picked_at        timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Idempotency: one open task per (listing, action); a new publish joins the open one.
CREATE UNIQUE INDEX plugin_tasks_open_idx ON plugin_tasks (listing_id, action)
    WHERE state IN ('pending', 'leased');
-- Lease path: the oldest pending task of an account.
CREATE INDEX plugin_tasks_pending_idx ON plugin_tasks (account_id, created_at, id) WHERE state = 'pending';
CREATE INDEX plugin_tasks_jobs_idx ON plugin_tasks USING gin (job_ids);

-- Where the listing lives on the marketplace (Vinted gives a URL per item).
ALTER TABLE listings ADD COLUMN remote_url text;
