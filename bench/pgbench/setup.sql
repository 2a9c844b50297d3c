-- The bare job lifecycle's table, refilled before every pgbench run (psql -v rows=N).
-- `locked_at` is the two-step scripts' claim mark; the one-step scripts never set it.
DROP TABLE IF EXISTS q;
CREATE TABLE q (id bigserial PRIMARY KEY, run_at timestamptz DEFAULT now(), locked_at timestamptz, payload jsonb);
INSERT INTO q (payload) SELECT '{}'::jsonb FROM generate_series(1, :rows);
VACUUM ANALYZE q;
