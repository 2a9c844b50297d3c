//! `withdraw_listing`: take one product's listing off one marketplace — because it sold out
//! elsewhere (auto-delist, enqueued by order import), or because the seller asked
//! (`POST /v1/products/{id}/withdraw`). Idempotent: a listing already gone counts as withdrawn.
//! Vinted: a `delete_listing` task for the browser extension, followed until done.

use serde::{Deserialize, Serialize};

use super::owned::{Owned, Owns};
use marketplaces::Marketplace;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct WithdrawListing {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub product_id: i64,
    pub marketplace: Marketplace,
    /// Why, kept on the listing (e.g. "sold out on etsy").
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 200)))]
    #[serde(default)]
    pub reason: Option<String>,
}

impl Owns for WithdrawListing {
    const IDS: &'static [(&'static str, Owned)] = &[("product_id", Owned::Product)];
}
