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
use crate::{money, seller_settings};
use engine::JobError;
use marketplaces::InvalidField;
use marketplaces::MarketplaceError;
use marketplaces::ebay::{
    self, Amount, Availability, InventoryItem, ListingPolicies, OfferDetails, PricingSummary,
    SellerSetup, ShipTo, condition, price,
};

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
    let (item, offer) = listing_for(&listed, s, &setup)?;
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

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        marketplace: "ebay",
        field,
        message: message.into(),
    }
}

/// The inventory item and offer for a product, or the first field eBay would refuse at publish
/// (checked here so the job dies at once with the field named, instead of after three calls).
pub fn listing_for(
    p: &Product,
    s: &ebay::EbaySettings,
    seller: &SellerSetup,
) -> Result<(InventoryItem, OfferDetails), InvalidField> {
    let title_len = p.title.chars().count();
    if title_len > 80 {
        return Err(invalid(
            "title",
            format!("at most 80 characters on eBay; this one has {title_len}"),
        ));
    }
    let description = if p.description.trim().is_empty() {
        p.title.clone()
    } else {
        p.description.clone()
    };
    if description.chars().count() > 4000 {
        return Err(invalid("description", "at most 4000 characters on eBay"));
    }
    let images: Vec<String> = serde_json::from_value(p.images.clone()).unwrap_or_default();
    if images.is_empty() {
        return Err(invalid("images", "eBay needs at least one image"));
    }
    if images.len() > 24 {
        return Err(invalid(
            "images",
            format!(
                "at most 24 images on eBay; this product has {}",
                images.len()
            ),
        ));
    }
    if let Some(bad) = images.iter().find(|u| !u.starts_with("https://")) {
        return Err(invalid(
            "images",
            format!("eBay takes only https image URLs: {bad}"),
        ));
    }
    if p.stock_quantity < 1 {
        return Err(invalid("stock_quantity", "nothing to sell (0 in stock)"));
    }
    let mut aspects = std::collections::BTreeMap::new();
    for (name, value) in [("Brand", &p.brand), ("Size", &p.size), ("Color", &p.color)] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            aspects.insert(name.to_string(), vec![v.chars().take(50).collect()]);
        }
    }
    let item = InventoryItem {
        availability: Availability {
            ship_to_location_availability: ShipTo {
                quantity: i64::from(p.stock_quantity),
            },
        },
        condition: condition(&p.condition).to_string(),
        product: ebay::Product {
            title: p.title.clone(),
            description: description.clone(),
            aspects,
            image_urls: images,
            brand: p.brand.clone(),
        },
    };
    let offer = OfferDetails {
        sku: p.sku.clone(),
        marketplace_id: s.marketplace_id.clone(),
        format: "FIXED_PRICE".into(),
        available_quantity: i64::from(p.stock_quantity),
        category_id: seller.category_id.clone(),
        listing_description: description,
        listing_duration: "GTC".into(),
        merchant_location_key: seller.merchant_location_key.clone(),
        listing_policies: ListingPolicies {
            fulfillment_policy_id: seller.fulfillment_policy_id.clone(),
            payment_policy_id: seller.payment_policy_id.clone(),
            return_policy_id: seller.return_policy_id.clone(),
        },
        pricing_summary: PricingSummary {
            price: Amount {
                value: price(p.price_cents),
                currency: p.currency.clone(),
            },
        },
    };
    Ok((item, offer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn product() -> Product {
        Product {
            tenant_id: 1,
            id: 1,
            sku: "SF1".into(),
            title: "Wool scarf".into(),
            description: String::new(),
            brand: Some("Acme".into()),
            category: None,
            condition: "good".into(),
            price_cents: 1999,
            currency: "EUR".into(),
            size: Some("M".into()),
            color: None,
            stock_quantity: 2,
            images: serde_json::json!(["https://img.example/1.jpg"]),
            status: "draft".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn seller() -> SellerSetup {
        SellerSetup {
            merchant_location_key: "default".into(),
            fulfillment_policy_id: "f".into(),
            payment_policy_id: "p".into(),
            return_policy_id: "r".into(),
            category_id: "11450".into(),
        }
    }

    #[test]
    fn a_product_becomes_an_item_and_an_offer() {
        let s = crate::Settings::defaults().marketplaces.ebay;
        let (item, offer) = listing_for(&product(), &s, &seller()).unwrap();
        assert_eq!(item.condition, "USED_GOOD");
        assert_eq!(
            item.product.description, "Wool scarf",
            "an empty description falls back to the title"
        );
        assert_eq!(item.product.aspects["Brand"], vec!["Acme".to_string()]);
        assert!(!item.product.aspects.contains_key("Color"));
        assert_eq!(
            offer.pricing_summary.price,
            Amount {
                value: "19.99".into(),
                currency: "EUR".into()
            }
        );
        assert_eq!((offer.sku.as_str(), offer.available_quantity), ("SF1", 2));
    }

    #[test]
    fn fields_ebay_would_refuse_are_named() {
        let s = crate::Settings::defaults().marketplaces.ebay;
        let mut p = product();
        p.title = "x".repeat(81);
        assert_eq!(listing_for(&p, &s, &seller()).unwrap_err().field, "title");
        let mut p = product();
        p.images = serde_json::json!([]);
        assert_eq!(listing_for(&p, &s, &seller()).unwrap_err().field, "images");
        let mut p = product();
        p.images = serde_json::json!(["http://insecure/1.jpg"]);
        assert_eq!(listing_for(&p, &s, &seller()).unwrap_err().field, "images");
        let mut p = product();
        p.stock_quantity = 0;
        let e = listing_for(&p, &s, &seller()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ebay stock_quantity: nothing to sell (0 in stock)"
        );
    }
}
