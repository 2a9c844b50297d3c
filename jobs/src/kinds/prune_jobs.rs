//! `prune_jobs` (internal): retention. Deletes finished jobs older than the configured ages, in
//! batches so no statement holds locks for long, and forgets worker processes stopped a day ago.
//! Enqueued by the scheduler once per cron tick (deduplicated across scheduler replicas).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::context::JobContext;
use engine::{Job, JobError, Policy, RunInfo};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneJobs {
    /// The cron tick that enqueued this run (for people reading the job list).
    #[serde(default)]
    pub tick: Option<String>,
}

impl Job for PruneJobs {
    const POLICY: Policy = Policy::new(3, 600, 1).backoff(10_000, 600);
    type Context = JobContext;

    async fn run(self, ctx: JobContext, _run: RunInfo) -> Result<Value, JobError> {
        let r = &ctx.settings.retention;
        let mut deleted = 0u64;
        for (state, hours) in [
            ("done", r.done_hours),
            ("dead", r.dead_hours),
            ("cancelled", r.cancelled_hours),
        ] {
            deleted += engine::queue::prune(&ctx.pool, state, hours, r.prune_batch).await?;
        }
        let workers = sqlx::query(
            "DELETE FROM workers w WHERE stopped_at < now() - interval '1 day'
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.state = 'running' AND j.locked_by = w.id)",
        )
        .execute(&ctx.pool)
        .await?
        .rows_affected();
        Ok(json!({ "deleted_jobs": deleted, "deleted_workers": workers }))
    }
}
