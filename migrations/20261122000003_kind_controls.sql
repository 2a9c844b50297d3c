-- Per-kind switches ops people flip: a paused kind is not fetched by any worker process.
CREATE TABLE kind_controls (
    kind       text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    reason     text,
    changed_at timestamptz NOT NULL DEFAULT now()
);
