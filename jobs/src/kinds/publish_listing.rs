//! `publish_listing`: publish one product to one marketplace, or bring its live listing up to
//! date after an edit. Enqueued by `POST /v1/products/{id}/publish`, one job per marketplace, in
//! the same transaction.
//!
//! The (product, marketplace) listing row holds the remote ids as soon as the marketplace gives
//! them, so a job retried after a crash or a 5xx halfway never creates a second listing (the
//! marketplace steps are in [`crate::publishing`]). Fields a marketplace would refuse are checked
//! first: the job dies at once naming the field, and the listing shows the error. Vinted has no
//! API: the job creates a task for the seller's browser extension and follows it.

use serde::{Deserialize, Serialize};

use super::owned::{Owned, Owns};
use marketplaces::Marketplace;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct PublishListing {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub product_id: i64,
    pub marketplace: Marketplace,
}

impl Owns for PublishListing {
    const IDS: &'static [(&'static str, Owned)] = &[("product_id", Owned::Product)];
}
