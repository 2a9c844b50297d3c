-- 100 jobs per statement (and per transaction): claim up to 100 unlocked jobs and delete them.
DELETE FROM q WHERE id = ANY(ARRAY(SELECT id FROM q ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 100));
