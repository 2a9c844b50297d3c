//! `publish_listing`: publish one product to one marketplace, or bring its live listing up to
//! date after an edit. Enqueued by `POST /v1/products/{id}/publish`, one job per marketplace, in
//! the same transaction.
//!
//! The (product, marketplace) listing row holds the remote ids as soon as the marketplace gives
//! them, so a job retried after a crash or a 5xx halfway never creates a second listing (the
//! marketplace steps are in [`crate::publishing`]). Fields a marketplace would refuse are checked
//! first: the job dies at once naming the field, and the listing shows the error. Vinted has no
//! API: the job creates a task for the seller's browser extension and follows it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Owned, Owns};
use crate::context::JobContext;
use crate::domain::Marketplace;
use crate::{accounts, catalogue, listings, publishing};
use engine::Kind;
use engine::{Job, JobError, Policy, RunInfo};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct PublishListing {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub product_id: i64,
    pub marketplace: Marketplace,
}

impl Owns for PublishListing {
    const IDS: &'static [(&'static str, Owned)] = &[("product_id", Owned::Product)];
}

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
        let product = product(&ctx, self.product_id).await?;
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

/// A live product (not deleted), or a permanent error saying it is gone.
pub(crate) async fn product(
    ctx: &JobContext,
    product_id: i64,
) -> Result<catalogue::Product, JobError> {
    catalogue::get(&ctx.pool, None, product_id)
        .await
        .map_err(|e| match e {
            catalogue::CatalogueError::NotFound => JobError::permanent(format!(
                "product {product_id} does not exist or was deleted"
            )),
            other => JobError::retry(other),
        })
}

/// Records a marketplace failure where sellers and ops look (the listing row, the marketplace
/// error log) and hands the error back for the queue to act on. A token refused before its
/// recorded expiry is marked expired so the next run refreshes it.
pub(crate) async fn failed(
    ctx: &JobContext,
    run: RunInfo,
    kind: &str,
    m: Marketplace,
    account: &accounts::Account,
    listing: Option<i64>,
    e: JobError,
) -> JobError {
    let record = async {
        if matches!(&e, JobError::Snooze { class, .. } if class == "auth_expired") {
            accounts::mark_access_expired(&ctx.pool, account.id).await?;
        }
        if let Some(id) = listing {
            listings::record_error(&ctx.pool, id, &e).await?;
        }
        listings::log_error(&ctx.pool, m, Some(account.id), run.job_id, kind, &e).await
    };
    match record.await {
        Ok(()) => e,
        // Could not record: let the job run again rather than lose the record.
        Err(db) => JobError::from(db),
    }
}
