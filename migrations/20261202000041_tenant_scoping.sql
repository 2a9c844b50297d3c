-- Every tenant-owned row carries its tenant. Rows from before tenants existed go to a tenant
-- named 'default' (created only when there are such rows).
INSERT INTO tenants (name)
SELECT 'default'
 WHERE EXISTS (SELECT 1 FROM products) OR EXISTS (SELECT 1 FROM marketplace_accounts);

ALTER TABLE products ADD COLUMN tenant_id bigint REFERENCES tenants (id);
UPDATE products SET tenant_id = (SELECT min(id) FROM tenants WHERE name = 'default');
ALTER TABLE products ALTER COLUMN tenant_id SET NOT NULL;
-- SKUs are a seller's own: unique per tenant, not across the platform.
ALTER TABLE products DROP CONSTRAINT products_sku_key;
ALTER TABLE products ADD CONSTRAINT products_tenant_sku_key UNIQUE (tenant_id, sku);
DROP INDEX products_live_idx;
CREATE INDEX products_live_idx ON products (tenant_id, id DESC) WHERE deleted_at IS NULL;

-- Nullable so code that predates tenants fails closed: a row without a tenant is seen by no seller.
ALTER TABLE marketplace_accounts ADD COLUMN tenant_id bigint REFERENCES tenants (id);
UPDATE marketplace_accounts SET tenant_id = (SELECT min(id) FROM tenants WHERE name = 'default');
ALTER TABLE marketplace_accounts DROP CONSTRAINT marketplace_accounts_marketplace_external_user_id_key;
ALTER TABLE marketplace_accounts
    ADD CONSTRAINT marketplace_accounts_tenant_external_key UNIQUE (tenant_id, marketplace, external_user_id);

ALTER TABLE listings ADD COLUMN tenant_id bigint REFERENCES tenants (id);
UPDATE listings l SET tenant_id = p.tenant_id FROM products p WHERE p.id = l.product_id;
CREATE INDEX listings_tenant_idx ON listings (tenant_id);

-- States live ten minutes: the ones in flight are simply dropped.
DELETE FROM oauth_states;
ALTER TABLE oauth_states ADD COLUMN tenant_id bigint NOT NULL REFERENCES tenants (id);

-- Jobs: the tenant of the request that enqueued them; NULL for system jobs (retention, cron),
-- which only ops users see. No foreign key and a partial index: the enqueue/claim/ack hot path
-- pays nothing for jobs without a tenant (benchmarks, system work).
ALTER TABLE jobs ADD COLUMN tenant_id bigint;
CREATE INDEX jobs_tenant_idx ON jobs (tenant_id, id DESC) WHERE tenant_id IS NOT NULL;
