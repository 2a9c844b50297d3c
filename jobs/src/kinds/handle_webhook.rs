//! `handle_webhook` (internal): handles one stored notification ([`crate::webhooks`]). Enqueued
//! with its inbox row, so the HTTP request that received it never calls a marketplace.
//!
//! - Etsy `order.paid`: fetches that one receipt for the shop's connected account and imports it
//!   like polling does ([`crate::orders::import`]: stock once per line, sold out → withdrawn).
//! - eBay [`EBAY_ORDER_TOPIC`]: fetches that order (getOrder) for the seller's account, imports it.
//! - eBay `MARKETPLACE_ACCOUNT_DELETION`: disconnects that eBay user's accounts, erases their
//!   tokens and the personal data we hold of them, and writes an audit row.
//!
//! Handlers read the order's current state, so replays and out-of-order deliveries import the
//! same thing; a row already handled is not handled again.

use serde::{Deserialize, Serialize};

/// The eBay Notification API topic of a seller's new paid order that we subscribe to.
pub const EBAY_ORDER_TOPIC: &str = "ORDER_CONFIRMATION";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct HandleWebhook {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub inbox_id: i64,
}
