//! `poll_etsy`: Etsy has no webhooks, so one connected account is polled for new receipts, updated
//! listings or low stock. The scheduler enqueues one per account per tick, deduplicated by
//! idempotency key. Etsy calls arrive with the marketplaces issue.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{Job, JobContext, JobError, Policy, RunInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum PollWhat {
    Receipts,
    Listings,
    LowStock,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct PollEtsy {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub account_id: i64,
    pub what: PollWhat,
}

impl Job for PollEtsy {
    const POLICY: Policy = Policy::new(3, 120, 4).backoff(5_000, 600);

    async fn run(self, _ctx: JobContext, _run: RunInfo) -> Result<Value, JobError> {
        Err(super::not_built::<Self>())
    }
}
