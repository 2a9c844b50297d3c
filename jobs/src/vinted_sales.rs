//! Vinted sales as the seller's extension reads them (a `sync_sales` plugin task): the sold
//! orders of `GET /api/v2/my_orders?type=sold` and the closed items of the wardrobe, imported as
//! orders exactly like eBay's and Etsy's ([`crate::orders`]): upserted by transaction id, the
//! item's product losing one unit once, a sold-out product withdrawn from the other marketplaces.
//!
//! A sold item the order list does not show yet (closed with `item_closing_action: sold`) is
//! imported at once as a provisional order `item-<id>`, renamed to its transaction id when that
//! appears, so the item takes stock once either way. A sold or deleted item's listing is no longer
//! live: it is marked withdrawn with the state Vinted reported (a later publish lists it anew).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

use crate::Settings;
use crate::orders::{self, Imported, RemoteLine, RemoteOrder};
use engine::JobError;
use marketplaces::Marketplace;

/// One sold order, as the extension maps an entry of `my_orders`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(deny_unknown_fields))]
pub struct SoldOrder {
    /// Vinted's transaction id.
    pub transaction_id: i64,
    /// The item sold (a Vinted transaction sells one item).
    pub item_id: i64,
    /// Vinted's `transaction_user_status`: in_progress, completed, canceled.
    #[cfg_attr(feature = "openapi", oai(validator(min_length = 1, max_length = 64)))]
    pub status: String,
    /// The price paid, e.g. "27.90".
    #[cfg_attr(
        feature = "openapi",
        oai(validator(pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$"))
    )]
    pub amount: Option<String>,
    #[cfg_attr(feature = "openapi", oai(validator(pattern = "^[A-Z]{3}$")))]
    pub currency_code: Option<String>,
    /// When the order was placed.
    pub date: Option<DateTime<Utc>>,
}

/// A closed wardrobe item (`is_closed: true`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(deny_unknown_fields))]
pub struct ClosedItem {
    pub id: i64,
    /// `sold` or `deleted`.
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    pub item_closing_action: Option<String>,
}

/// What a `sync_sales` task read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sales {
    pub orders: Vec<SoldOrder>,
    #[serde(default)]
    pub closed_items: Vec<ClosedItem>,
}

fn is_cancelled(status: &str) -> bool {
    matches!(status, "canceled" | "cancelled")
}

fn from_vinted(o: &SoldOrder) -> RemoteOrder {
    let item = o.item_id.to_string();
    RemoteOrder {
        remote_order_id: o.transaction_id.to_string(),
        status: o.status.clone(),
        cancelled: is_cancelled(&o.status),
        total_cents: o
            .amount
            .as_deref()
            .and_then(|a| a.parse::<f64>().ok())
            .map(|a| (a * 100.0).round() as i64),
        currency: o.currency_code.clone(),
        placed_at: o.date,
        remote_updated_at: o.date,
        lines: vec![RemoteLine {
            line_id: item.clone(),
            sku: None,
            remote_listing_id: Some(item),
            quantity: 1,
        }],
        raw: json!({ "transaction_id": o.transaction_id, "item_id": o.item_id }),
    }
}

/// Imports what a `sync_sales` task of `account` read.
pub async fn import(
    pool: &PgPool,
    settings: &Settings,
    account: i64,
    sales: &Sales,
) -> Result<Imported, JobError> {
    let txns: Vec<String> = sales
        .orders
        .iter()
        .map(|o| o.transaction_id.to_string())
        .collect();
    let items: Vec<String> = sales.orders.iter().map(|o| o.item_id.to_string()).collect();
    // A provisional order whose transaction is now listed takes the transaction's id.
    sqlx::query(
        "UPDATE orders o SET remote_order_id = n.txn, updated_at = now()
           FROM unnest($2::text[], $3::text[]) AS n(txn, item)
          WHERE o.marketplace = 'vinted' AND o.account_id = $1 AND o.remote_order_id = 'item-' || n.item
            AND NOT EXISTS (SELECT 1 FROM orders x WHERE x.marketplace = 'vinted' AND x.remote_order_id = n.txn)",
    )
    .bind(account)
    .bind(&txns)
    .bind(&items)
    .execute(pool)
    .await?;
    // Sold items no order names yet, and no earlier order took stock for.
    let closed_sold: Vec<String> = sales
        .closed_items
        .iter()
        .filter(|i| i.item_closing_action.as_deref() == Some("sold"))
        .map(|i| i.id.to_string())
        .filter(|i| !items.contains(i))
        .collect();
    let unseen: Vec<String> = sqlx::query_scalar(
        "SELECT item FROM unnest($2::text[]) AS item
          WHERE NOT EXISTS (SELECT 1 FROM order_lines l JOIN orders o ON o.id = l.order_id
                             WHERE o.marketplace = 'vinted' AND o.account_id = $1 AND l.line_id = item)",
    )
    .bind(account)
    .bind(&closed_sold)
    .fetch_all(pool)
    .await?;
    let mut remote: Vec<RemoteOrder> = sales.orders.iter().map(from_vinted).collect();
    remote.extend(unseen.into_iter().map(|item| RemoteOrder {
        remote_order_id: format!("item-{item}"),
        status: "sold".into(),
        cancelled: false,
        total_cents: None,
        currency: None,
        placed_at: None,
        remote_updated_at: None,
        lines: vec![RemoteLine {
            line_id: item.clone(),
            sku: None,
            remote_listing_id: Some(item.clone()),
            quantity: 1,
        }],
        raw: json!({ "item_id": item, "provisional": true }),
    }));
    let imported = orders::import(pool, settings, Marketplace::Vinted, account, &remote)
        .await
        .map_err(JobError::retry)?;
    sqlx::query("UPDATE marketplace_accounts SET last_poll_at = now() WHERE id = $1")
        .bind(account)
        .execute(pool)
        .await?;
    // The sold and deleted items are no longer live on Vinted.
    let mut ended: Vec<(String, String)> = sales
        .orders
        .iter()
        .filter(|o| !is_cancelled(&o.status))
        .map(|o| (o.item_id.to_string(), "sold".to_string()))
        .collect();
    ended.extend(sales.closed_items.iter().filter_map(|i| {
        let action = i.item_closing_action.as_deref()?;
        matches!(action, "sold" | "deleted").then(|| (i.id.to_string(), action.to_string()))
    }));
    let (ids, states): (Vec<String>, Vec<String>) = ended.into_iter().unzip();
    sqlx::query(
        "UPDATE listings l SET status = 'withdrawn', remote_state = e.state,
                withdraw_reason = e.state || ' on Vinted', updated_at = now()
           FROM (SELECT DISTINCT ON (id) id, state FROM unnest($2::text[], $3::text[]) AS u(id, state)
                 ORDER BY id, state = 'deleted') e
          WHERE l.marketplace = 'vinted' AND l.account_id = $1 AND l.remote_listing_id = e.id
            AND l.status = 'published'",
    )
    .bind(account)
    .bind(&ids)
    .bind(&states)
    .execute(pool)
    .await?;
    Ok(imported)
}
