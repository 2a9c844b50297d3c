-- Ops dashboard (issue #6).

-- The trace id of the HTTP request that enqueued a job, put on every log line of its runs.
ALTER TABLE jobs ADD COLUMN trace_id text;

-- Counts per (state, kind) as an index-only scan, and "newest jobs in a state (of a kind)" as an
-- ordered index scan that stops after one page: the dashboard stays fast with a million retained
-- rows instead of scanning the table.
CREATE INDEX jobs_state_kind_id_idx ON jobs (state, kind, id DESC);

-- Every operator action taken from the dashboard or the queue/job endpoints.
CREATE TABLE audit_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    -- Who: a placeholder ('anonymous') until users exist (issue #5 fills it from the caller).
    actor    text        NOT NULL,
    -- retry, cancel, bulk_retry, bulk_cancel, pause, resume
    action   text        NOT NULL,
    -- What it acted on: a job id, a kind, or null for a bulk action (see filter).
    target   text,
    -- The filter of a bulk action (kind, state, text), as given.
    filter   jsonb,
    -- Rows the action changed.
    count    bigint      NOT NULL DEFAULT 0,
    reason   text
);
