//! `publish_listing`: publish one product to one marketplace (eBay inventory item → offer →
//! publish; Etsy draft → inventory → image → activate; Vinted → a plugin task).
//! Enqueued by the catalogue when a seller publishes. Idempotent by the (product, marketplace)
//! mapping. The marketplace calls arrive with the marketplaces issue; until then a run ends dead
//! with class `not_implemented`, so nothing pretends to have published.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::Marketplace;
use crate::job::{Job, JobContext, JobError, Policy, RunInfo};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct PublishListing {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub product_id: i64,
    pub marketplace: Marketplace,
}

impl Job for PublishListing {
    const POLICY: Policy = Policy::new(8, 120, 8).backoff(2_000, 3_600);

    async fn run(self, _ctx: JobContext, _run: RunInfo) -> Result<Value, JobError> {
        Err(super::not_built::<Self>())
    }
}
