//! A seller's (tenant's) own choices about how their catalogue reaches the marketplaces.

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

/// What to do when a product's currency differs from the marketplace shop's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurrencyMismatch {
    /// Never list it: the publish dies naming both currencies.
    Refuse,
    /// List it at the price converted with `[currency] rates`.
    Convert,
}

impl CurrencyMismatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Convert => "convert",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "convert" {
            Self::Convert
        } else {
            Self::Refuse
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SellerSettings {
    /// Editing a published product updates its live listings without another publish.
    pub auto_update_listings: bool,
    pub currency_mismatch: CurrencyMismatch,
}

pub async fn get(db: impl PgExecutor<'_>, tenant: i64) -> Result<SellerSettings, sqlx::Error> {
    let (auto, mismatch): (bool, String) =
        sqlx::query_as("SELECT auto_update_listings, currency_mismatch FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_one(db)
            .await?;
    Ok(SellerSettings {
        auto_update_listings: auto,
        currency_mismatch: CurrencyMismatch::parse(&mismatch),
    })
}

/// Sets the given settings (`None` keeps one) and returns them all.
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant: i64,
    auto_update_listings: Option<bool>,
    currency_mismatch: Option<CurrencyMismatch>,
) -> Result<SellerSettings, sqlx::Error> {
    let (auto, mismatch): (bool, String) = sqlx::query_as(
        "UPDATE tenants SET auto_update_listings = coalesce($2, auto_update_listings),
                currency_mismatch = coalesce($3, currency_mismatch)
          WHERE id = $1 RETURNING auto_update_listings, currency_mismatch",
    )
    .bind(tenant)
    .bind(auto_update_listings)
    .bind(currency_mismatch.map(CurrencyMismatch::as_str))
    .fetch_one(db)
    .await?;
    Ok(SellerSettings {
        auto_update_listings: auto,
        currency_mismatch: CurrencyMismatch::parse(&mismatch),
    })
}
