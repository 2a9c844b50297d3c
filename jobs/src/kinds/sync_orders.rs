//! `sync_orders`: import new and changed orders of one marketplace account — eBay getOrders by
//! last-modified date, Etsy receipts by `min_last_modified` — from where the last import stopped
//! (`marketplace_accounts.orders_synced_to`). Orders are upserted by their remote id, stock is
//! taken once per line, and sold-out products are withdrawn elsewhere ([`crate::orders`]).
//! Scheduled for every eBay account; Etsy accounts are covered by `poll_etsy` (receipts). On a
//! Vinted account it creates (or joins) the `sync_sales` task of the seller's browser extension,
//! which reads the sales; that task's job imports them ([`crate::vinted_sales`]).

use serde::{Deserialize, Serialize};

use super::owned::{Owned, Owns};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct SyncOrders {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub account_id: i64,
}

impl Owns for SyncOrders {
    const IDS: &'static [(&'static str, Owned)] = &[("account_id", Owned::Account)];
}
