-- The same lifecycle one job at a time: claim (committed), then delete (committed).
UPDATE q SET locked_at = now() WHERE id = (SELECT id FROM q WHERE locked_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id \gset
DELETE FROM q WHERE id = :id;
