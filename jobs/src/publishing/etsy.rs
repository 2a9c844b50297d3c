//! Etsy: draft → inventory (SKU, price, quantity) → images → activate. Etsy has no idempotency
//! key, so the listing id is stored the moment the draft exists, and a run that finds no stored
//! id first looks for a draft an earlier, crashed run created (by SKU, or by title while it has
//! no inventory yet) before creating one. Every later step converges: the inventory is a PUT,
//! images are uploaded only past those already there, activation only when not active yet.
//! Price and quantity go through the inventory update, in the shop's currency (a product in
//! another currency is refused or converted: [`crate::money`]).

use chrono::Datelike as _;
use serde_json::json;

use super::{Published, fetch_image, image_urls};
use crate::accounts::{self, Account};
use crate::catalogue::Product;
use crate::context::JobContext;
use crate::images::ImageFetcher;
use crate::listings::{self, Listing};
use crate::{money, seller_settings};
use engine::JobError;
use marketplaces::etsy::{
    self, DraftListing, InventoryUpdate, ListingState, ListingUpdate, SettableState,
};
use marketplaces::{InvalidField, MarketplaceError};

/// How many of the newest listings per state the crash lookup reads (one page).
const LOOKUP_SCAN: u32 = 25;

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        marketplace: "etsy",
        field,
        message: message.into(),
    }
}

/// The draft for a product, or the first field Etsy would refuse (checked before any call).
pub fn draft_for(
    p: &Product,
    taxonomy_id: u64,
    shipping_profile_id: Option<u64>,
    readiness_state_id: Option<u64>,
    year: i32,
) -> Result<DraftListing, InvalidField> {
    etsy::validate_title(&p.title)?;
    let provenance = etsy::provenance_for_condition(&p.condition, None, year)?;
    if p.price_cents < 20 {
        return Err(invalid("price", "Etsy needs a price of at least 0.20"));
    }
    if !(1..=999).contains(&p.stock_quantity) {
        return Err(invalid(
            "stock_quantity",
            format!(
                "must be 1 to 999 on Etsy; this product has {}",
                p.stock_quantity
            ),
        ));
    }
    let images = image_urls(&p.images);
    if images.is_empty() {
        return Err(invalid(
            "images",
            "Etsy activates a listing only with at least one image",
        ));
    }
    if images.len() > 10 {
        return Err(invalid(
            "images",
            format!(
                "at most 10 images on Etsy; this product has {}",
                images.len()
            ),
        ));
    }
    let description = if p.description.trim().is_empty() {
        p.title.clone()
    } else {
        p.description.clone()
    };
    Ok(DraftListing {
        title: p.title.clone(),
        description,
        quantity: p.stock_quantity as u32,
        price_cents: p.price_cents as u64,
        taxonomy_id,
        provenance,
        shipping_profile_id,
        readiness_state_id,
        return_policy_id: None,
        shop_section_id: None,
        tags: Vec::new(),
        materials: Vec::new(),
        listing_type: None,
        should_auto_renew: None,
    })
}

/// The shop's shipping and processing profiles, read once and kept in the account's setup.
async fn profiles(
    ctx: &JobContext,
    account: &Account,
    token: &str,
    shop_id: u64,
) -> Result<(u64, u64), JobError> {
    let get = |k: &str| account.setup[k].as_u64();
    if let (Some(s), Some(r)) = (get("shipping_profile_id"), get("readiness_state_id")) {
        return Ok((s, r));
    }
    let etsy = &ctx.market.etsy;
    let missing = |what: &str| JobError::Permanent {
        class: "seller_setup".into(),
        message: format!("the Etsy shop {shop_id} has no {what}: create one on Etsy first"),
    };
    let shipping = etsy
        .shipping_profiles(token, shop_id)
        .await?
        .results
        .first()
        .map(|p| p.shipping_profile_id)
        .ok_or_else(|| missing("shipping profile"))?;
    let readiness = etsy
        .readiness_states(token, shop_id)
        .await?
        .results
        .first()
        .map(|r| r.readiness_state_id)
        .ok_or_else(|| missing("processing profile"))?;
    accounts::merge_setup(
        &ctx.pool,
        account.id,
        json!({ "shipping_profile_id": shipping, "readiness_state_id": readiness }),
    )
    .await?;
    Ok((shipping, readiness))
}

pub async fn publish(
    ctx: &JobContext,
    product: &Product,
    account: &Account,
    listing: &Listing,
) -> Result<Published, JobError> {
    let s = &ctx.settings.marketplaces.etsy;
    let year = chrono::Utc::now().year();
    // Validate before any call, with the profiles still unknown.
    draft_for(product, s.taxonomy_id, None, None, year)?;
    let shop_id = account.etsy_shop()?;
    let m = &ctx.market;
    let token = accounts::access_token(&ctx.pool, m, account.id).await?;
    // Prices are in the shop's currency; read each time (not kept) since listing at a stale
    // currency would sell at the wrong price.
    let shop_currency = m.etsy.get_shop(&token, shop_id).await?.currency_code;
    let mode = seller_settings::get(&ctx.pool, product.tenant_id)
        .await?
        .currency_mismatch;
    let listed = Product {
        price_cents: money::listed_price(
            "etsy",
            product.price_cents,
            &product.currency,
            &shop_currency,
            mode,
            &ctx.settings.currency,
        )?,
        currency: shop_currency,
        ..product.clone()
    };
    let product = &listed;
    let (shipping, readiness) = profiles(ctx, account, &token, shop_id).await?;
    let draft = draft_for(
        product,
        s.taxonomy_id,
        Some(shipping),
        Some(readiness),
        year,
    )?;

    let known = match &listing.remote_listing_id {
        Some(id) => Some(id.parse::<u64>().map_err(|_| {
            JobError::permanent(format!("stored Etsy listing id {id:?} is not a number"))
        })?),
        None => m
            .etsy
            .find_listing(
                &token,
                shop_id,
                &[
                    ListingState::Draft,
                    ListingState::Active,
                    ListingState::Inactive,
                ],
                LOOKUP_SCAN,
                |l| {
                    let skus: Vec<&str> = l
                        .inventory
                        .iter()
                        .flat_map(|i| &i.products)
                        .filter(|p| !p.is_deleted)
                        .map(|p| p.sku.as_str())
                        .collect();
                    skus.contains(&product.sku.as_str())
                        || (l.state == ListingState::Draft
                            && l.title == product.title
                            && skus.iter().all(|s| s.is_empty()))
                },
            )
            .await?
            .map(|l| l.listing_id),
    };
    let listing_id = match known {
        Some(id) => {
            // Already on Etsy (a retry, or publishing an edited product): bring it up to date.
            let update = ListingUpdate {
                title: Some(draft.title.clone()),
                description: Some(draft.description.clone()),
                taxonomy_id: Some(draft.taxonomy_id),
                provenance: Some(draft.provenance.clone()),
                shipping_profile_id: Some(shipping),
                readiness_state_id: Some(readiness),
                ..ListingUpdate::default()
            };
            m.etsy.update_listing(&token, shop_id, id, &update).await?;
            id
        }
        None => {
            let created = m.etsy.create_draft_listing(&token, shop_id, &draft).await?;
            created.listing_id
        }
    };
    listings::set_remote(&ctx.pool, listing.id, None, Some(&listing_id.to_string())).await?;

    let inventory = InventoryUpdate::single(
        &product.sku,
        product.price_cents as u64,
        product.stock_quantity as u32,
        Some(readiness),
    );
    m.etsy
        .update_inventory(&token, listing_id, &inventory)
        .await?;

    let current = m.etsy.get_listing(&token, listing_id).await?;
    let have = current.images.as_ref().map_or(0, Vec::len);
    let fetcher = ImageFetcher::new(&ctx.settings.marketplaces.images);
    for (i, url) in image_urls(&product.images).iter().enumerate().skip(have) {
        let (bytes, name) = fetch_image(&fetcher, "etsy", i, url).await?;
        m.etsy
            .upload_image(&token, shop_id, listing_id, bytes, &name, i as u32 + 1)
            .await?;
    }
    let live = if current.state == ListingState::Active {
        current
    } else {
        m.etsy
            .update_listing(&token, shop_id, listing_id, &ListingUpdate::activate())
            .await?
    };
    Ok(Published {
        offer_id: None,
        listing_id: listing_id.to_string(),
        url: live
            .url
            .or_else(|| Some(format!("https://www.etsy.com/listing/{listing_id}"))),
    })
}

/// Takes the listing off Etsy by deactivating it (it can be activated again); a listing Etsy no
/// longer has is already gone.
pub async fn withdraw(
    ctx: &JobContext,
    account: &Account,
    listing: &Listing,
) -> Result<(), JobError> {
    let Some(id) = listing
        .remote_listing_id
        .as_deref()
        .and_then(|id| id.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let shop_id = account.etsy_shop()?;
    let token = accounts::access_token(&ctx.pool, &ctx.market, account.id).await?;
    let update = ListingUpdate {
        state: Some(SettableState::Inactive),
        ..ListingUpdate::default()
    };
    match ctx
        .market
        .etsy
        .update_listing(&token, shop_id, id, &update)
        .await
    {
        Ok(_) | Err(MarketplaceError::NotFound { .. }) => Ok(()),
        // A sold-out listing cannot be deactivated; it is off sale already.
        Err(MarketplaceError::Rejected { .. })
            if ctx
                .market
                .etsy
                .get_listing(&token, id)
                .await
                .is_ok_and(|l| l.state != ListingState::Active) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
