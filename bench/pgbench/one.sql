-- One job per transaction: claim the oldest unlocked job and delete it (pgbench's implicit
-- transaction around the statement; durable commit).
DELETE FROM q WHERE id = (SELECT id FROM q ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1);
