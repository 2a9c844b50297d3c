//! Prices in a marketplace's currency: a product priced in one currency is never listed as the
//! same number in another. Per seller, a mismatch is refused or converted with the configured
//! rates ([`crate::config::CurrencySettings`]).

use crate::config::CurrencySettings;
use crate::seller_settings::CurrencyMismatch;
use engine::JobError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MoneyError {
    #[error(
        "the product is priced in {product} but the {marketplace} shop sells in {shop}; \
         change the product's currency, or choose currency_mismatch = convert in /v1/settings"
    )]
    Mismatch {
        marketplace: &'static str,
        product: String,
        shop: String,
    },
    #[error(
        "the product is priced in {product} but the {marketplace} shop sells in {shop}, and no \
         {product}_{shop} rate is configured ([currency] rates)"
    )]
    NoRate {
        marketplace: &'static str,
        product: String,
        shop: String,
    },
}

impl From<MoneyError> for JobError {
    fn from(e: MoneyError) -> Self {
        JobError::Permanent {
            class: "currency_mismatch".into(),
            message: e.to_string(),
        }
    }
}

/// The currency of an eBay marketplace (eBay prices must be in it).
pub fn ebay_currency(marketplace_id: &str) -> Option<&'static str> {
    Some(match marketplace_id {
        "EBAY_US" | "EBAY_MOTORS_US" => "USD",
        "EBAY_GB" => "GBP",
        "EBAY_DE" | "EBAY_FR" | "EBAY_IT" | "EBAY_ES" | "EBAY_AT" | "EBAY_BE" | "EBAY_NL"
        | "EBAY_IE" => "EUR",
        "EBAY_CA" => "CAD",
        "EBAY_AU" => "AUD",
        "EBAY_CH" => "CHF",
        "EBAY_PL" => "PLN",
        "EBAY_HK" => "HKD",
        "EBAY_SG" => "SGD",
        _ => return None,
    })
}

/// Units of `to` per unit of `from`: configured directly, or the inverse of `to_from`.
pub fn rate(rates: &CurrencySettings, from: &str, to: &str) -> Option<f64> {
    let find = |a: &str, b: &str| {
        let key = format!("{a}_{b}");
        rates
            .rates
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&key))
            .map(|(_, r)| *r)
    };
    find(from, to).or_else(|| find(to, from).map(|r| 1.0 / r))
}

/// The price in cents to list on a shop selling in `shop_currency`.
pub fn listed_price(
    marketplace: &'static str,
    cents: i64,
    product_currency: &str,
    shop_currency: &str,
    mode: CurrencyMismatch,
    rates: &CurrencySettings,
) -> Result<i64, MoneyError> {
    if product_currency.eq_ignore_ascii_case(shop_currency) {
        return Ok(cents);
    }
    let (product, shop) = (product_currency.to_string(), shop_currency.to_string());
    if mode == CurrencyMismatch::Refuse {
        return Err(MoneyError::Mismatch {
            marketplace,
            product,
            shop,
        });
    }
    let r = rate(rates, product_currency, shop_currency).ok_or(MoneyError::NoRate {
        marketplace,
        product,
        shop,
    })?;
    // Cents of the shop's currency, rounded half away from zero.
    Ok((cents as f64 * r).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> CurrencySettings {
        CurrencySettings {
            rates: [("eur_usd".to_string(), 1.08)].into(),
        }
    }

    #[test]
    fn same_currency_keeps_the_price_and_a_mismatch_is_refused_naming_both() {
        let r = rates();
        assert_eq!(
            listed_price("etsy", 3500, "EUR", "EUR", CurrencyMismatch::Refuse, &r),
            Ok(3500)
        );
        let e = listed_price("etsy", 3500, "EUR", "USD", CurrencyMismatch::Refuse, &r).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("EUR") && text.contains("USD"), "{text}");
    }

    #[test]
    fn conversion_uses_the_rate_or_its_inverse_and_needs_one() {
        let r = rates();
        let convert = CurrencyMismatch::Convert;
        assert_eq!(
            listed_price("etsy", 3500, "EUR", "USD", convert, &r),
            Ok(3780)
        );
        // 10.00 USD at 1/1.08 = 9.259… EUR → 9.26.
        assert_eq!(
            listed_price("ebay", 1000, "USD", "EUR", convert, &r),
            Ok(926)
        );
        assert!(matches!(
            listed_price("etsy", 1000, "EUR", "GBP", convert, &r),
            Err(MoneyError::NoRate { .. })
        ));
    }

    #[test]
    fn ebay_marketplaces_have_their_currency() {
        assert_eq!(ebay_currency("EBAY_US"), Some("USD"));
        assert_eq!(ebay_currency("EBAY_FR"), Some("EUR"));
        assert_eq!(ebay_currency("EBAY_GB"), Some("GBP"));
    }
}
