-- The platform's own job queue. apalis-core runs the workers; this table is their backend.
-- States stored: available (waiting: pending, scheduled or retrying, told apart by run_at/attempt),
-- running, done, dead, cancelled.
CREATE TABLE jobs (
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
    errors          jsonb       NOT NULL DEFAULT '[]'::jsonb
);

-- Claim path: only waiting rows are indexed, so the index stays as small as the backlog
-- however many finished rows are retained.
CREATE INDEX jobs_fetch_idx ON jobs (kind, priority DESC, run_at, id) WHERE state = 'available';
-- Rescue path and "what is running where".
CREATE INDEX jobs_running_idx ON jobs (locked_by) WHERE state = 'running';
-- Retention path.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE state IN ('done', 'dead', 'cancelled');
-- Listing by kind (newest first, keyset on id).
CREATE INDEX jobs_kind_id_idx ON jobs (kind, id DESC);
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- One row per worker process start. Its heartbeat is the lease on every job it holds.
CREATE TABLE workers (
    id           text        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    kinds        text[]      NOT NULL,
    concurrency  jsonb       NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);
