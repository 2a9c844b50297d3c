//! How [`crate::kinds::RefreshToken`] runs: its policy and handler.

use crate::context::JobContext;
use crate::kinds::RefreshToken;
use engine::{Job, JobError, Policy, RunInfo};
use serde_json::Value;

impl Job for RefreshToken {
    const POLICY: Policy = Policy::new(6, 30, 4).backoff(1_000, 300);
    type Context = JobContext;

    async fn run(self, ctx: JobContext, _run: RunInfo) -> Result<Value, JobError> {
        crate::accounts::refresh_account(
            &ctx.pool,
            &ctx.market,
            self.account_id,
            crate::accounts::REFRESH_LEAD,
        )
        .await
    }
}
