//! `poll_etsy`: the safety net beside Etsy's `order.paid` webhooks (and all there is for apps
//! without them): connected Etsy accounts are polled — new and changed receipts (imported like
//! `sync_orders`) at each receipts tick, their listings' states and quantities (recorded on our
//! listing rows) and low stock at each listings tick. The scheduler enqueues one job per polled
//! account per tick, keyed `cron:poll_etsy:<account>:<what>:<tick>`, so any number of schedulers
//! and workers give one poll per tick.
//!
//! Every Etsy call of the app counts against one daily budget shared by all its shops (10,000 for
//! a new app), so a tick polls only the shops its share of that budget pays for
//! ([`due_accounts`]): those where a sale is likeliest and that waited longest.

use serde::{Deserialize, Serialize};

use super::owned::{Owned, Owns};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum PollWhat {
    Receipts,
    Listings,
    LowStock,
}

impl PollWhat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receipts => "receipts",
            Self::Listings => "listings",
            Self::LowStock => "low_stock",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct PollEtsy {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub account_id: i64,
    pub what: PollWhat,
}

impl Owns for PollEtsy {
    const IDS: &'static [(&'static str, Owned)] = &[("account_id", Owned::Account)];
}
