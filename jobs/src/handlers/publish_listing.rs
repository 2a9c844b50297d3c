//! How [`crate::kinds::PublishListing`] runs: its policy and handler.

use crate::context::JobContext;
use crate::kinds::PublishListing;
use crate::publishing::failed;
use crate::{accounts, catalogue, listings, publishing};
use engine::Kind;
use engine::{Job, JobError, Policy, RunInfo};
use marketplaces::Marketplace;
use serde_json::{Value, json};

impl Job for PublishListing {
    const POLICY: Policy = Policy::new(8, 120, 8).backoff(2_000, 3_600);
    type Context = JobContext;

    async fn run(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        let (product_id, m, pool) = (self.product_id, self.marketplace, ctx.pool.clone());
        let out = self.publish(ctx, run).await;
        if !matches!(out, Err(JobError::Snooze { .. })) {
            // A withdrawal of this listing may be asleep until this job's old deadline.
            super::withdraw_listing::wake_waiting(&pool, product_id, m).await;
        }
        out
    }
}

impl PublishListing {
    async fn publish(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        let m = self.marketplace;
        if m == Marketplace::Vinted {
            // A task for the seller's browser extension, followed (snoozing) until it is on
            // Vinted or failed (crate::plugin).
            return crate::plugin::publish(&ctx, run.job_id, self.product_id).await;
        }
        let product = catalogue::for_job(&ctx.pool, self.product_id).await?;
        let account = accounts::require_connected(&ctx.pool, product.tenant_id, m).await?;
        let listing = listings::upsert(&ctx.pool, product.id, m, account.id, &product.sku).await?;
        let result = match m {
            Marketplace::Ebay => {
                publishing::ebay::publish(&ctx, &product, &account, &listing).await
            }
            Marketplace::Etsy => {
                publishing::etsy::publish(&ctx, &product, &account, &listing).await
            }
            Marketplace::Vinted => unreachable!("handled above"),
        };
        match result {
            Ok(p) => {
                listings::mark_published(&ctx.pool, listing.id, &p.listing_id, p.url.as_deref())
                    .await?;
                Ok(json!({
                    "marketplace": m.as_str(), "sku": product.sku, "offer_id": p.offer_id,
                    "listing_id": p.listing_id, "url": p.url,
                }))
            }
            Err(e) => Err(failed(&ctx, run, Self::KIND, m, &account, Some(listing.id), e).await),
        }
    }
}
