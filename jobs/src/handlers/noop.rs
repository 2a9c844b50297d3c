//! How [`crate::kinds::Noop`] runs: its policy and handler.

use crate::context::JobContext;
use crate::kinds::{Noop, NoopFailure};
use engine::{Job, JobError, Policy, RunInfo};
use serde_json::{Value, json};
use std::time::Duration;

impl Job for Noop {
    const POLICY: Policy = Policy::new(3, 3_600, 50).backoff(1_000, 60);
    type Context = JobContext;

    async fn run(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        if let Some(ms) = self.sleep_ms.filter(|ms| *ms > 0) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        for _ in 0..self.etsy_pings.unwrap_or(0) {
            ctx.market.etsy.ping().await?;
        }
        // A snooze gives its attempt back, so snoozes are counted apart.
        let count = if self.fail == Some(NoopFailure::Snooze) {
            run.snoozes + 1
        } else {
            run.attempt
        };
        let failing = self.fail_attempts.is_none_or(|n| count <= n);
        match self.fail.unwrap_or_default() {
            f if f == NoopFailure::None || !failing => {}
            NoopFailure::Retryable => {
                return Err(JobError::retry(format!(
                    "noop: retryable failure on attempt {}",
                    run.attempt
                )));
            }
            NoopFailure::Permanent => {
                return Err(JobError::permanent(format!(
                    "noop: permanent failure on attempt {}",
                    run.attempt
                )));
            }
            NoopFailure::Snooze => {
                let after = Duration::from_millis(self.snooze_ms.unwrap_or(1_000));
                return Err(JobError::snooze(after, "noop: snoozed"));
            }
            NoopFailure::Panic => panic!("noop: panic on attempt {}", run.attempt),
            NoopFailure::None => unreachable!(),
        }
        let mut out = json!({ "attempt": run.attempt, "slept_ms": self.sleep_ms.unwrap_or(0) });
        if let Some(n) = self.etsy_pings {
            out["etsy_pings"] = json!(n);
        }
        Ok(out)
    }
}
