-- Joint statistics of (kind, state): the dashboard estimates large finished-job counts from them
-- (an exact count of a million rows costs ~0.4 s; see jobs::queue::stats).
CREATE STATISTICS jobs_kind_state_stats (mcv) ON kind, state FROM jobs;
