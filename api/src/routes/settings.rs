//! `/v1/settings`: the seller's own choices about how their catalogue reaches the marketplaces.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use jobs::seller_settings::{self, CurrencyMismatch, SellerSettings};

use crate::auth::Seller;
use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

/// When a product's currency is not the marketplace shop's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum CurrencyMismatchMode {
    /// Do not list it: the publish job dies naming both currencies (the default).
    Refuse,
    /// List it at the price converted with the platform's `[currency] rates`.
    Convert,
}

impl From<CurrencyMismatch> for CurrencyMismatchMode {
    fn from(c: CurrencyMismatch) -> Self {
        match c {
            CurrencyMismatch::Refuse => Self::Refuse,
            CurrencyMismatch::Convert => Self::Convert,
        }
    }
}

#[derive(Debug, Object)]
pub struct SettingsView {
    /// Editing a published product updates its live listings without another publish
    /// (default true).
    pub auto_update_listings: bool,
    pub currency_mismatch: CurrencyMismatchMode,
}

impl From<SellerSettings> for SettingsView {
    fn from(s: SellerSettings) -> Self {
        Self {
            auto_update_listings: s.auto_update_listings,
            currency_mismatch: s.currency_mismatch.into(),
        }
    }
}

/// The settings to change; the ones left out keep their values.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SettingsInput {
    pub auto_update_listings: Option<bool>,
    /// `refuse` or `convert` (a pattern rather than an enum so that a bad value's problem names
    /// this field).
    #[oai(validator(pattern = "^(refuse|convert)$"))]
    pub currency_mismatch: Option<String>,
}

pub struct SettingsApi {
    pub st: Arc<AppState>,
}

#[OpenApi(tag = "Tag::Products")]
impl SettingsApi {
    /// The seller's settings
    #[oai(path = "/v1/settings", method = "get")]
    async fn get(&self, auth: Seller) -> Result<Json<SettingsView>, Problem> {
        Ok(Json(
            seller_settings::get(&self.st.pool, auth.tenant())
                .await?
                .into(),
        ))
    }

    /// Change some of the seller's settings
    #[oai(path = "/v1/settings", method = "patch")]
    async fn update(
        &self,
        auth: Seller,
        body: Json<SettingsInput>,
    ) -> Result<Json<SettingsView>, Problem> {
        let s = seller_settings::update(
            &self.st.pool,
            auth.tenant(),
            body.0.auto_update_listings,
            body.0.currency_mismatch.map(|c| match c.as_str() {
                "convert" => CurrencyMismatch::Convert,
                _ => CurrencyMismatch::Refuse,
            }),
        )
        .await?;
        Ok(Json(s.into()))
    }
}
