-- The queue engine's tables as they stand, for a database the engine alone runs on. Every
-- statement is idempotent: on Stoflow's database the platform's own history
-- (migrations/20261122000001_jobs.sql and later) created the same tables first, and this changes
-- nothing there (tests/it/engine_alone.rs compares the two schemas). Later engine changes go in new
-- files in this folder.
--
-- States stored: available (waiting: pending, scheduled or retrying, told apart by run_at/attempt),
-- running, done, dead, cancelled.
CREATE TABLE IF NOT EXISTS jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text        NOT NULL,
    state           text        NOT NULL DEFAULT 'available'
                    CHECK (state IN ('available', 'running', 'done', 'dead', 'cancelled')),
    args            jsonb       NOT NULL,
    priority        smallint    NOT NULL DEFAULT 0,
    attempt         integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL CHECK (max_attempts > 0),
    snoozes         integer     NOT NULL DEFAULT 0,
    run_at          timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempted_at    timestamptz,
    finished_at     timestamptz,
    -- Owner of a running job: a worker process id (unique per process start). Together with
    -- `attempt` it fences acks: a late ack from a process presumed dead matches no row.
    locked_by       text,
    idempotency_key text,
    result          jsonb,
    last_error      jsonb,
    errors          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- The trace of the request that enqueued the job (W3C trace id), continued by its runs.
    trace_id        text,
    -- An opaque owner (Stoflow: the tenant); NULL for system jobs. The engine only filters by it.
    tenant_id       bigint
);

-- Claim path: only waiting rows are indexed, so the index stays as small as the backlog
-- however many finished rows are retained.
CREATE INDEX IF NOT EXISTS jobs_fetch_idx ON jobs (kind, priority DESC, run_at, id) WHERE state = 'available';
-- Rescue path and "what is running where".
CREATE INDEX IF NOT EXISTS jobs_running_idx ON jobs (locked_by) WHERE state = 'running';
-- Retention path.
CREATE INDEX IF NOT EXISTS jobs_finished_idx ON jobs (finished_at) WHERE state IN ('done', 'dead', 'cancelled');
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key_idx ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Listing by state and kind (newest first, keyset on id); running rows are few and churn.
CREATE INDEX IF NOT EXISTS jobs_state_kind_id_idx ON jobs (state, kind, id DESC)
    WHERE state IN ('available', 'done', 'dead', 'cancelled');
CREATE INDEX IF NOT EXISTS jobs_tenant_idx ON jobs (tenant_id, id DESC) WHERE tenant_id IS NOT NULL;
-- Kind and state are correlated (a kind's jobs are mostly done): plan counts with both.
CREATE STATISTICS IF NOT EXISTS jobs_kind_state_stats (mcv) ON kind, state FROM jobs;

-- One row per worker process start. Its heartbeat is the lease on every job it holds.
CREATE TABLE IF NOT EXISTS workers (
    id           text        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    kinds        text[]      NOT NULL,
    concurrency  jsonb       NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,
    -- Where the process serves its /metrics, for the dashboard's link.
    metrics_url  text
);

-- Per-kind switches ops people flip: a paused kind is not fetched by any worker process.
CREATE TABLE IF NOT EXISTS kind_controls (
    kind       text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    reason     text,
    changed_at timestamptz NOT NULL DEFAULT now()
);
