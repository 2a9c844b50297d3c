//! eBay: inventory item (PUT by SKU) → offer → publish. Idempotent at every step: the item is
//! keyed by SKU, a second createOffer answers 25002 and the client updates the existing offer,
//! and the offer id is stored before publishing. Publishing again after an edit replaces the
//! item and the offer (updateOffer: price, quantity) and re-publishes it, which revises the live
//! listing. The price is in the marketplace's currency (refused or converted: [`crate::money`]).

use serde_json::Value;

use super::Published;
use crate::accounts::{self, Account};
use crate::catalogue::Product;
use crate::context::JobContext;
use crate::listings::{self, Listing};
use crate::marketplace::MarketplaceError;
use crate::marketplace::ebay::{self, SellerSetup};
use crate::{money, seller_settings};
use engine::JobError;

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
    let currency = money::ebay_currency(&s.marketplace_id).ok_or_else(|| {
        JobError::permanent(format!(
            "no known currency for eBay marketplace {}",
            s.marketplace_id
        ))
    })?;
    let mode = seller_settings::get(&ctx.pool, product.tenant_id)
        .await?
        .currency_mismatch;
    let listed = Product {
        price_cents: money::listed_price(
            "ebay",
            product.price_cents,
            &product.currency,
            currency,
            mode,
            &ctx.settings.currency,
        )?,
        currency: currency.to_string(),
        ..product.clone()
    };
    let (item, offer) = ebay::listing_for(&listed, s, &setup)?;
    let m = &ctx.market;
    let token = accounts::access_token(&ctx.pool, m, account.id).await?;
    m.ebay
        .put_inventory_item(&token, &product.sku, &item)
        .await?;
    let offer_id = m
        .ebay
        .upsert_offer(&token, listing.remote_offer_id.as_deref(), &offer)
        .await?;
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
