//! `refresh_token`: refresh one marketplace account's OAuth access token ahead of expiry and store
//! the (possibly rotated) refresh token atomically. Concurrent refreshes of one account collapse
//! by idempotency key. OAuth calls arrive with the accounts issue.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{Job, JobContext, JobError, Policy, RunInfo};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct RefreshToken {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub account_id: i64,
}

impl Job for RefreshToken {
    const POLICY: Policy = Policy::new(6, 30, 4).backoff(1_000, 300);

    async fn run(self, _ctx: JobContext, _run: RunInfo) -> Result<Value, JobError> {
        Err(super::not_built::<Self>())
    }
}
