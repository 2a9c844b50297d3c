//! How [`crate::kinds::DispatchPluginTask`] runs: its policy and handler.

use crate::context::JobContext;
use crate::kinds::DispatchPluginTask;
use engine::{Job, JobError, Policy, RunInfo};
use serde_json::Value;

impl Job for DispatchPluginTask {
    const POLICY: Policy = Policy::new(3, 60, 8).backoff(5_000, 900);
    type Context = JobContext;

    async fn run(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        crate::plugin::follow(&ctx, run.job_id, self.plugin_task_id).await
    }
}
