-- Who uses the platform: tenants (a seller's business) own every seller object; users log in.
-- Sellers act inside their tenant; ops users also see queues and jobs across tenants.
CREATE TABLE tenants (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint      NOT NULL REFERENCES tenants (id),
    email         text        NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    -- Argon2id PHC string (salt and parameters inside).
    password_hash text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('seller', 'ops')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email));

-- Refresh tokens: only their SHA-256 is stored. Each refresh uses one and issues its successor
-- in the same family; presenting a used one again (a stolen copy) revokes the whole family.
CREATE TABLE refresh_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     text        NOT NULL,
    token_hash bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
