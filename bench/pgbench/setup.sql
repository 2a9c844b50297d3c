-- The bare job lifecycle's table, refilled before every pgbench run (psql -v rows=N).
DROP TABLE IF EXISTS q;
CREATE TABLE q (id bigserial PRIMARY KEY, run_at timestamptz DEFAULT now(), payload jsonb);
INSERT INTO q (payload) SELECT '{}'::jsonb FROM generate_series(1, :rows);
VACUUM ANALYZE q;
