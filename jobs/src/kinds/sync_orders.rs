//! `sync_orders`: import new and changed orders of one marketplace account (eBay getOrders by
//! last-modified date, Etsy receipts by `min_last_modified`), upsert them, decrement stock.
//! Idempotent by the marketplace's order id. Marketplace calls arrive with the marketplaces issue.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{Job, JobContext, JobError, Policy, RunInfo};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct SyncOrders {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub account_id: i64,
}

impl Job for SyncOrders {
    const POLICY: Policy = Policy::new(5, 300, 4).backoff(5_000, 1_800);

    async fn run(self, _ctx: JobContext, _run: RunInfo) -> Result<Value, JobError> {
        Err(super::not_built::<Self>())
    }
}
