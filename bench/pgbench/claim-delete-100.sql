-- The lifecycle of a job run outside the claiming transaction, 100 jobs per statement: claim
-- (a committed mark, so a crashed worker's jobs can be found again), then delete (its own
-- commit). Two durable commits per 100 jobs, as a queue whose handlers run between claim and ack.
WITH c AS (UPDATE q SET locked_at = now() WHERE id = ANY(ARRAY(SELECT id FROM q WHERE locked_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 100)) RETURNING id) SELECT quote_literal(coalesce(array_agg(id), '{}')) AS ids FROM c \gset
DELETE FROM q WHERE id = ANY(:ids::bigint[]);
