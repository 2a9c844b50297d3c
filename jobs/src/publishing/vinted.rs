//! Vinted has no API we may call: the seller's browser extension does, with the seller's session
//! (`crate::plugin`). This module turns a product into the task parameters the extension needs,
//! with Vinted's ids resolved here so every extension version sends the same listing, and the
//! fields Vinted would refuse named before any task exists.
//!
//! The id tables (condition → `status_id`, colour → `color_ids`, size → `size_id`) follow
//! marketplaces.md 3.4; colour and size ids vary by category and are unverified, so an account's
//! `setup` may override them (`{"color_ids": {"teal": 17}, "size_ids": {"M": 207},
//! "catalog_id": 1904, "package_size_id": 2}`).

use serde_json::{Value, json};

use crate::catalogue::Product;
use crate::config::VintedSettings;
use marketplaces::InvalidField;

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        marketplace: "vinted",
        field,
        message: message.into(),
    }
}

/// Vinted's `status_id` for our condition scale (6 new with tags … 4 satisfactory).
pub fn status_id(condition: &str) -> Option<u64> {
    Some(match condition {
        "new_with_tags" => 6,
        "new_without_tags" => 1,
        "very_good" => 2,
        "good" => 3,
        "satisfactory" => 4,
        _ => return None,
    })
}

const COLORS: &[(&str, u64)] = &[
    ("black", 1),
    ("brown", 2),
    ("grey", 3),
    ("gray", 3),
    ("beige", 4),
    ("pink", 5),
    ("purple", 6),
    ("red", 7),
    ("yellow", 8),
    ("blue", 9),
    ("green", 10),
    ("orange", 11),
    ("white", 12),
    ("silver", 13),
    ("gold", 14),
    ("multicolour", 15),
    ("multicolor", 15),
    ("khaki", 16),
    ("turquoise", 17),
    ("cream", 20),
    ("navy", 27),
];

const SIZES: &[(&str, u64)] = &[
    ("XXS", 1),
    ("XS", 2),
    ("S", 3),
    ("M", 4),
    ("L", 5),
    ("XL", 6),
    ("XXL", 7),
    ("XXXL", 310),
    ("ONE SIZE", 1226),
];

fn setup_id(setup: &Value, table: &str, key: &str) -> Option<u64> {
    setup[table].as_object().and_then(|m| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| v.as_u64())
    })
}

/// Vinted colour ids of a product colour: one or two names separated by `/`, `,` or ` and `.
pub fn color_ids(color: &str, setup: &Value) -> Result<Vec<u64>, InvalidField> {
    let names: Vec<String> = color
        .replace(" and ", "/")
        .split(['/', ','])
        .map(|c| c.trim().to_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    if names.is_empty() {
        return Err(invalid("color", "Vinted requires a colour"));
    }
    if names.len() > 2 {
        return Err(invalid("color", "Vinted takes at most two colours"));
    }
    names
        .iter()
        .map(|n| {
            setup_id(setup, "color_ids", n)
                .or_else(|| COLORS.iter().find(|(k, _)| k == n).map(|(_, id)| *id))
                .ok_or_else(|| {
                    let known: Vec<&str> = COLORS.iter().map(|(k, _)| *k).collect();
                    invalid(
                        "color",
                        format!("{n:?} is not a Vinted colour; one of {}", known.join(", ")),
                    )
                })
        })
        .collect()
}

/// Vinted's `size_id` of a product size: letter sizes, "one size", or EU numeric sizes 32–58.
pub fn size_id(size: &str, setup: &Value) -> Result<u64, InvalidField> {
    let s = size.trim();
    if let Some(id) = setup_id(setup, "size_ids", s) {
        return Ok(id);
    }
    let upper = s.to_uppercase();
    if let Some((_, id)) = SIZES.iter().find(|(k, _)| *k == upper) {
        return Ok(*id);
    }
    match s.parse::<u64>() {
        // Women's EU sizes are ids 1226+ in steps of one per size (unverified; setup overrides).
        Ok(n) if (32..=58).contains(&n) && n % 2 == 0 => Ok(1_226 + (n - 32) / 2 + 1),
        _ => Err(invalid(
            "size",
            format!(
                "{s:?} has no Vinted size id: use XXS–XXXL, \"one size\", an even EU size 32–58, or set size_ids in the account setup"
            ),
        )),
    }
}

/// Everything the extension needs to create (or, with `remote_id`, update) the listing.
pub fn listing_params(
    p: &Product,
    defaults: &VintedSettings,
    setup: &Value,
    remote_id: Option<&str>,
) -> Result<Value, InvalidField> {
    let title = p.title.trim();
    if title.chars().count() < 5 || title.chars().count() > 100 {
        return Err(invalid(
            "title",
            "Vinted takes titles of 5 to 100 characters",
        ));
    }
    if p.description.trim().chars().count() < 5 {
        return Err(invalid(
            "description",
            "Vinted requires a description of at least 5 characters",
        ));
    }
    let brand = p
        .brand
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| invalid("brand", "Vinted requires a brand"))?;
    let size = p
        .size
        .as_deref()
        .ok_or_else(|| invalid("size", "Vinted requires a size"))?;
    let color = p
        .color
        .as_deref()
        .ok_or_else(|| invalid("color", "Vinted requires a colour"))?;
    if p.price_cents < 100 {
        return Err(invalid("price", "Vinted prices start at 1.00"));
    }
    let photos: Vec<String> = serde_json::from_value(p.images.clone()).unwrap_or_default();
    if photos.is_empty() {
        return Err(invalid("images", "Vinted requires at least one photo"));
    }
    let status_id = status_id(&p.condition)
        .ok_or_else(|| invalid("condition", format!("unknown condition {:?}", p.condition)))?;
    Ok(json!({
        "remote_id": remote_id,
        "sku": p.sku,
        "title": title,
        "description": p.description.trim(),
        "brand": brand,
        "size": size,
        "size_id": size_id(size, setup)?,
        "color": color,
        "color_ids": color_ids(color, setup)?,
        "condition": p.condition,
        "status_id": status_id,
        "catalog_id": setup["catalog_id"].as_u64().unwrap_or(defaults.catalog_id),
        "package_size_id": setup["package_size_id"].as_u64().unwrap_or(defaults.package_size_id),
        "price": {
            "amount": format!("{}.{:02}", p.price_cents / 100, p.price_cents % 100),
            "currency_code": p.currency,
        },
        "photo_urls": photos,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> Product {
        Product {
            id: 1,
            tenant_id: 1,
            sku: "SKU1".into(),
            title: "Wool scarf".into(),
            description: "Soft and warm".into(),
            brand: Some("Acme".into()),
            category: None,
            condition: "very_good".into(),
            price_cents: 1250,
            currency: "EUR".into(),
            size: Some("M".into()),
            color: Some("Navy / white".into()),
            stock_quantity: 1,
            images: json!(["https://img.example/1.jpg"]),
            status: "published".into(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn defaults() -> VintedSettings {
        VintedSettings {
            catalog_id: 1904,
            package_size_id: 1,
        }
    }

    #[test]
    fn a_product_becomes_vinted_ids() {
        let v = listing_params(&product(), &defaults(), &json!({}), None).unwrap();
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["color_ids"], json!([27, 12]));
        assert_eq!(v["size_id"], 4);
        assert_eq!(
            v["price"],
            json!({"amount": "12.50", "currency_code": "EUR"})
        );
        assert_eq!(v["catalog_id"], 1904);
    }

    #[test]
    fn account_setup_overrides_ids() {
        let setup = json!({"color_ids": {"navy": 99}, "size_ids": {"m": 207}, "catalog_id": 5});
        let v = listing_params(&product(), &defaults(), &setup, Some("42")).unwrap();
        assert_eq!(v["color_ids"], json!([99, 12]));
        assert_eq!(
            (v["size_id"].clone(), v["catalog_id"].clone()),
            (json!(207), json!(5))
        );
        assert_eq!(v["remote_id"], "42");
    }

    #[test]
    fn fields_vinted_refuses_are_named() {
        let mut p = product();
        p.color = Some("sparkly".into());
        let e = listing_params(&p, &defaults(), &json!({}), None).unwrap_err();
        assert_eq!(e.field, "color");
        let mut p = product();
        p.description = String::new();
        assert_eq!(
            listing_params(&p, &defaults(), &json!({}), None)
                .unwrap_err()
                .field,
            "description"
        );
        let mut p = product();
        p.size = Some("37".into());
        assert_eq!(
            listing_params(&p, &defaults(), &json!({}), None)
                .unwrap_err()
                .field,
            "size"
        );
    }
}
