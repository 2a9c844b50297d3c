//! How [`crate::kinds::PruneJobs`] runs: its policy and handler.

use crate::context::JobContext;
use crate::kinds::PruneJobs;
use engine::{Job, JobError, Policy, RunInfo};
use serde_json::{Value, json};

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
