//! `publish_listing`: publish one product to one marketplace. Enqueued by
//! `POST /v1/products/{id}/publish`, one job per marketplace, in the same transaction.
//!
//! eBay: inventory item (PUT by SKU) → offer → publish. Idempotent: the item is keyed by SKU, a
//! second createOffer answers 25002 and the client returns the existing offer, and the remote
//! ids land in the (product, marketplace) listing row — so a job retried after a crash or a 5xx
//! halfway never creates a second listing. Fields eBay would refuse are checked first: the job
//! dies at once naming the field. Vinted: a task for the seller's browser extension, which this
//! job follows (snoozing) until it is on Vinted or failed (`crate::plugin`). Etsy arrives next.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::Marketplace;
use crate::job::{Job, JobContext, JobError, Policy, RunInfo};
use crate::marketplace::ebay::{self, SellerSetup};
use crate::{accounts, catalogue};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct PublishListing {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub product_id: i64,
    pub marketplace: Marketplace,
}

impl Job for PublishListing {
    const POLICY: Policy = Policy::new(8, 120, 8).backoff(2_000, 3_600);

    async fn run(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        match self.marketplace {
            Marketplace::Ebay => publish_ebay(&ctx, self.product_id).await,
            // A plugin task, followed until it is on Vinted (crate::plugin).
            Marketplace::Vinted => crate::plugin::publish(&ctx, run.job_id, self.product_id).await,
            Marketplace::Etsy => Err(super::not_built::<Self>()),
        }
    }
}

async fn publish_ebay(ctx: &JobContext, product_id: i64) -> Result<Value, JobError> {
    let product = catalogue::get(&ctx.pool, product_id)
        .await
        .map_err(|e| match e {
            catalogue::CatalogueError::NotFound => JobError::permanent(format!(
                "product {product_id} does not exist or was deleted"
            )),
            other => JobError::retry(other),
        })?;
    let account = accounts::connected(&ctx.pool, Marketplace::Ebay)
        .await?
        .ok_or_else(|| JobError::Permanent {
            class: "not_connected".into(),
            message: "no connected eBay account: connect one at /v1/connections/ebay/connect"
                .into(),
        })?;
    let s = &ctx.settings.marketplaces.ebay;
    let setup = SellerSetup {
        merchant_location_key: setup_or(
            &account.setup,
            "merchant_location_key",
            &s.merchant_location_key,
        ),
        fulfillment_policy_id: setup_or(
            &account.setup,
            "fulfillment_policy_id",
            &s.fulfillment_policy_id,
        ),
        payment_policy_id: setup_or(&account.setup, "payment_policy_id", &s.payment_policy_id),
        return_policy_id: setup_or(&account.setup, "return_policy_id", &s.return_policy_id),
        category_id: setup_or(&account.setup, "category_id", &s.category_id),
    };
    let listing = upsert_listing(ctx, product_id, account.id, &product.sku).await?;
    let result = async {
        let (item, offer) = ebay::listing_for(&product, s, &setup)?;
        let m = &ctx.market;
        let token = accounts::ebay_access_token(&ctx.pool, &m.cipher, &m.ebay, account.id).await?;
        m.ebay
            .put_inventory_item(&token, &product.sku, &item)
            .await?;
        let offer_id = m.ebay.create_offer(&token, &offer).await?;
        // Record the offer before publishing: a crash after this point resumes from it.
        sqlx::query("UPDATE listings SET remote_offer_id = $2, updated_at = now() WHERE id = $1")
            .bind(listing)
            .bind(&offer_id)
            .execute(&ctx.pool)
            .await?;
        let listing_id = m.ebay.publish_offer(&token, &offer_id).await?;
        Ok::<_, JobError>((offer_id, listing_id))
    }
    .await;
    match result {
        Ok((offer_id, listing_id)) => {
            sqlx::query(
                "UPDATE listings SET status = 'published', remote_listing_id = $2, last_error = NULL,
                        published_at = now(), updated_at = now() WHERE id = $1",
            )
            .bind(listing)
            .bind(&listing_id)
            .execute(&ctx.pool)
            .await?;
            Ok(
                json!({ "marketplace": "ebay", "sku": product.sku, "offer_id": offer_id, "listing_id": listing_id }),
            )
        }
        Err(e) => {
            // A permanent failure is the listing's state until the seller fixes the product;
            // a transient one leaves it publishing (the job runs again).
            let failed = matches!(e, JobError::Permanent { .. });
            if matches!(&e, JobError::Snooze { class, .. } if class == "auth_expired") {
                // eBay refused the token before its recorded expiry: refresh on the next run.
                sqlx::query(
                    "UPDATE marketplace_accounts SET access_expires_at = now() WHERE id = $1",
                )
                .bind(account.id)
                .execute(&ctx.pool)
                .await?;
            }
            sqlx::query(
                "UPDATE listings SET last_error = $2, status = CASE WHEN $3 THEN 'failed' ELSE status END,
                        updated_at = now() WHERE id = $1",
            )
            .bind(listing)
            .bind(json!({ "at": chrono::Utc::now(), "message": e.to_string() }))
            .bind(failed)
            .execute(&ctx.pool)
            .await?;
            Err(e)
        }
    }
}

fn setup_or(setup: &Value, key: &str, default: &str) -> String {
    setup[key].as_str().unwrap_or(default).to_string()
}

/// The (product, marketplace) listing row, created on first publish.
async fn upsert_listing(
    ctx: &JobContext,
    product_id: i64,
    account: i64,
    sku: &str,
) -> Result<i64, JobError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO listings (product_id, marketplace, account_id, sku) VALUES ($1, 'ebay', $2, $3)
         ON CONFLICT (product_id, marketplace) DO UPDATE SET account_id = excluded.account_id, sku = excluded.sku,
                status = CASE WHEN listings.status = 'failed' THEN 'publishing' ELSE listings.status END,
                updated_at = now()
         RETURNING id",
    )
    .bind(product_id)
    .bind(account)
    .bind(sku)
    .fetch_one(&ctx.pool)
    .await?)
}
