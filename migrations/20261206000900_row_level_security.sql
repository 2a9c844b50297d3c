-- A second wall under the code: Postgres row-level security on every tenant-owned table. The
-- API runs a seller's queries as the role stoflow_seller with `stoflow.tenant_id` set to the
-- seller's tenant (api::tenancy); a query that forgets its tenant filter then sees only that
-- tenant's rows. Workers, the scheduler and ops requests run as the table owner, which RLS does
-- not restrict: their cross-tenant path is explicit (and ops actions are audited).

-- Rows that were scoped through their account get a tenant of their own, filled on insert.
ALTER TABLE orders ADD COLUMN tenant_id bigint REFERENCES tenants (id);
UPDATE orders o SET tenant_id = a.tenant_id FROM marketplace_accounts a WHERE a.id = o.account_id;
ALTER TABLE order_lines ADD COLUMN tenant_id bigint REFERENCES tenants (id);
UPDATE order_lines l SET tenant_id = o.tenant_id FROM orders o WHERE o.id = l.order_id;
ALTER TABLE marketplace_errors ADD COLUMN tenant_id bigint REFERENCES tenants (id);
UPDATE marketplace_errors e SET tenant_id = a.tenant_id FROM marketplace_accounts a WHERE a.id = e.account_id;
ALTER TABLE plugin_tasks ADD COLUMN tenant_id bigint REFERENCES tenants (id);
UPDATE plugin_tasks t SET tenant_id = a.tenant_id FROM marketplace_accounts a WHERE a.id = t.account_id;
CREATE INDEX orders_tenant_idx ON orders (tenant_id);
CREATE INDEX plugin_tasks_tenant_idx ON plugin_tasks (tenant_id);

CREATE FUNCTION stoflow_tenant_of_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id IS NULL AND NEW.account_id IS NOT NULL THEN
        NEW.tenant_id := (SELECT tenant_id FROM marketplace_accounts WHERE id = NEW.account_id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER orders_tenant BEFORE INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION stoflow_tenant_of_account();
CREATE TRIGGER marketplace_errors_tenant BEFORE INSERT ON marketplace_errors
    FOR EACH ROW EXECUTE FUNCTION stoflow_tenant_of_account();
CREATE TRIGGER plugin_tasks_tenant BEFORE INSERT ON plugin_tasks
    FOR EACH ROW EXECUTE FUNCTION stoflow_tenant_of_account();

CREATE FUNCTION stoflow_tenant_of_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id IS NULL THEN
        NEW.tenant_id := (SELECT tenant_id FROM orders WHERE id = NEW.order_id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER order_lines_tenant BEFORE INSERT ON order_lines
    FOR EACH ROW EXECUTE FUNCTION stoflow_tenant_of_order();

-- The tenant of the current transaction or session (NULL: none, which matches no row).
CREATE FUNCTION stoflow_tenant() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('stoflow.tenant_id', true), '')::bigint
$$;

-- The seller role: no login, no BYPASSRLS. Roles are per cluster (it may exist already), and a
-- database user without CREATEROLE cannot make it: the API then says so at start and runs
-- without the second wall (the tenant filters in the code still hold).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stoflow_seller') THEN
        CREATE ROLE stoflow_seller NOLOGIN NOBYPASSRLS;
    END IF;
    EXECUTE format('GRANT stoflow_seller TO %I', current_user);
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'role stoflow_seller cannot be created or granted: row-level security is off for the API';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stoflow_seller') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO stoflow_seller;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO stoflow_seller;
        -- Tables that later migrations create, too.
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO stoflow_seller;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO stoflow_seller;
    END IF;
END $$;

ALTER TABLE products ENABLE ROW LEVEL SECURITY;
ALTER TABLE listings ENABLE ROW LEVEL SECURITY;
ALTER TABLE marketplace_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_lines ENABLE ROW LEVEL SECURITY;
ALTER TABLE marketplace_errors ENABLE ROW LEVEL SECURITY;
ALTER TABLE plugin_tasks ENABLE ROW LEVEL SECURITY;

-- Owners are not subject to these (no FORCE): only stoflow_seller is.
DO $$
DECLARE t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stoflow_seller') THEN
        RETURN;
    END IF;
    FOREACH t IN ARRAY ARRAY['products', 'listings', 'marketplace_accounts', 'oauth_states', 'jobs',
                             'orders', 'order_lines', 'marketplace_errors', 'plugin_tasks'] LOOP
        EXECUTE format(
            'CREATE POLICY %I ON %I TO stoflow_seller
                USING (tenant_id = stoflow_tenant()) WITH CHECK (tenant_id = stoflow_tenant())',
            t || '_tenant', t);
    END LOOP;
END $$;
