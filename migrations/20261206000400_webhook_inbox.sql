-- Every marketplace notification whose signature checked out, stored before it is answered and
-- handled by a `handle_webhook` job. The marketplace's notification id makes a replay a no-op.
CREATE TABLE webhook_inbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    marketplace     text        NOT NULL CHECK (marketplace IN ('ebay', 'etsy')),
    notification_id text        NOT NULL,
    topic           text        NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- The raw body as signed; NULL once scrubbed (it carried personal data, e.g. an eBay
    -- account deletion's username).
    body            text,
    -- The headers a handler may need later (signature headers, timestamps).
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    handled_at      timestamptz,
    -- What handling did (or why it skipped), for ops, and the accounts it concerned (the last
    -- push per account is the newest row naming it).
    outcome         jsonb,
    account_ids     bigint[]    NOT NULL DEFAULT '{}',
    job_id          bigint,
    UNIQUE (marketplace, notification_id)
);
CREATE INDEX webhook_inbox_unhandled ON webhook_inbox (received_at) WHERE handled_at IS NULL;
CREATE INDEX webhook_inbox_accounts ON webhook_inbox USING gin (account_ids);
