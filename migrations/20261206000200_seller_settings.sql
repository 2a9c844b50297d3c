-- Per-seller choices: whether editing a published product updates its live listings at once,
-- and what to do when a product's currency is not the marketplace shop's (refuse, or convert
-- with the configured rates).
ALTER TABLE tenants
    ADD COLUMN auto_update_listings boolean NOT NULL DEFAULT true,
    ADD COLUMN currency_mismatch    text    NOT NULL DEFAULT 'refuse'
        CHECK (currency_mismatch IN ('refuse', 'convert'));
