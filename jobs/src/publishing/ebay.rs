//! eBay: inventory item (PUT by SKU) → offer → publish. Idempotent at every step: the item is
//! keyed by SKU, a second createOffer answers 25002 and the client returns the existing offer,
//! and the offer id is stored before publishing. Publishing again after an edit replaces the
//! item and re-publishes the same offer, which revises the live listing.

use serde_json::Value;

use super::Published;
use crate::accounts::{self, Account};
use crate::catalogue::Product;
use crate::job::{JobContext, JobError};
use crate::listings::{self, Listing};
use crate::marketplace::MarketplaceError;
use crate::marketplace::ebay::{self, SellerSetup};

pub async fn publish(
    ctx: &JobContext,
    product: &Product,
    account: &Account,
    listing: &Listing,
) -> Result<Published, JobError> {
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
    let (item, offer) = ebay::listing_for(product, s, &setup)?;
    let m = &ctx.market;
    let token = accounts::access_token(&ctx.pool, m, account.id).await?;
    m.ebay
        .put_inventory_item(&token, &product.sku, &item)
        .await?;
    let offer_id = m.ebay.create_offer(&token, &offer).await?;
    listings::set_remote(&ctx.pool, listing.id, Some(&offer_id), None).await?;
    let listing_id = m.ebay.publish_offer(&token, &offer_id).await?;
    Ok(Published {
        offer_id: Some(offer_id),
        url: Some(format!("https://www.ebay.com/itm/{listing_id}")),
        listing_id,
    })
}

/// Ends the listing (withdrawOffer); the offer stays, so publishing again revives it. An offer
/// eBay no longer knows is already gone.
pub async fn withdraw(
    ctx: &JobContext,
    account: &Account,
    listing: &Listing,
) -> Result<(), JobError> {
    let Some(offer_id) = &listing.remote_offer_id else {
        return Ok(());
    };
    let token = accounts::access_token(&ctx.pool, &ctx.market, account.id).await?;
    match ctx.market.ebay.withdraw_offer(&token, offer_id).await {
        Ok(()) | Err(MarketplaceError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn setup_or(setup: &Value, key: &str, default: &str) -> String {
    setup[key].as_str().unwrap_or(default).to_string()
}
