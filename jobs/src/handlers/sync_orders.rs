//! How [`crate::kinds::SyncOrders`] runs: its policy and handler.

use crate::accounts::{self, Account};
use crate::context::JobContext;
use crate::kinds::SyncOrders;
use crate::orders::{self, RemoteLine, RemoteOrder};
use crate::publishing::failed;
use chrono::{DateTime, Duration, Utc};
use engine::Kind;
use engine::{Job, JobError, Policy, RunInfo};
use marketplaces::Marketplace;
use marketplaces::{ebay, etsy};
use serde_json::{Value, json};

/// How far back the first import of an account looks.
const FIRST_LOOKBACK_DAYS: i64 = 30;
/// eBay's largest getOrders page.
const EBAY_PAGE: u32 = 200;

impl Job for SyncOrders {
    const POLICY: Policy = Policy::new(5, 300, 4).backoff(5_000, 1_800);
    type Context = JobContext;

    async fn run(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        let account = connected_account(&ctx, self.account_id).await?;
        let m = Marketplace::parse(&account.marketplace)
            .ok_or_else(|| JobError::permanent("unknown marketplace"))?;
        match sync(&ctx, &account, m).await {
            Ok(v) => Ok(v),
            Err(e) => Err(failed(&ctx, run, Self::KIND, m, &account, None, e).await),
        }
    }
}

/// The account a per-account job works for: connected, or a permanent error saying why not.
pub(crate) async fn connected_account(ctx: &JobContext, id: i64) -> Result<Account, JobError> {
    let account = accounts::get(&ctx.pool, id)
        .await?
        .ok_or_else(|| JobError::permanent(format!("account {id} does not exist")))?;
    if account.status != "connected" {
        return Err(JobError::Permanent {
            class: "not_connected".into(),
            message: format!("account {id} is {}: reconnect it first", account.status),
        });
    }
    Ok(account)
}

/// Imports the account's orders changed since its cursor and moves the cursor.
pub(crate) async fn sync(
    ctx: &JobContext,
    account: &Account,
    m: Marketplace,
) -> Result<Value, JobError> {
    if m == Marketplace::Vinted {
        // Only the seller's browser extension can read Vinted: a sales sync task for it (joined
        // while one is open), whose job imports what it reports.
        let (task, created) =
            crate::plugin::sync_sales(&ctx.pool, &ctx.settings, account.id).await?;
        return Ok(json!({ "marketplace": "vinted", "plugin_task_id": task, "created": created }));
    }
    let cursor: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT orders_synced_to FROM marketplace_accounts WHERE id = $1")
            .bind(account.id)
            .fetch_one(&ctx.pool)
            .await?;
    let since = cursor.unwrap_or_else(|| Utc::now() - Duration::days(FIRST_LOOKBACK_DAYS));
    let token = accounts::access_token(&ctx.pool, &ctx.market, account.id).await?;
    let remote = match m {
        Marketplace::Ebay => ebay_orders(ctx, &token, since).await?,
        Marketplace::Etsy => etsy_orders(ctx, account, &token, since).await?,
        Marketplace::Vinted => unreachable!("handled above"),
    };
    let imported = orders::import(&ctx.pool, &ctx.settings, m, account.id, &remote)
        .await
        .map_err(JobError::retry)?;
    sqlx::query("UPDATE marketplace_accounts SET last_poll_at = now() WHERE id = $1")
        .bind(account.id)
        .execute(&ctx.pool)
        .await?;
    // The next import starts at the newest change seen: orders changed at that same instant are
    // read again, which the upsert makes harmless.
    if let Some(newest) = remote.iter().filter_map(|o| o.remote_updated_at).max() {
        sqlx::query(
            "UPDATE marketplace_accounts SET orders_synced_to = greatest(coalesce(orders_synced_to, $2), $2)
              WHERE id = $1",
        )
        .bind(account.id)
        .bind(newest)
        .execute(&ctx.pool)
        .await?;
    }
    Ok(json!({ "marketplace": m.as_str(), "since": since, "imported": imported }))
}

async fn ebay_orders(
    ctx: &JobContext,
    token: &str,
    since: DateTime<Utc>,
) -> Result<Vec<RemoteOrder>, JobError> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = ctx
            .market
            .ebay
            .orders_modified_since(token, since, EBAY_PAGE, offset)
            .await?;
        let n = page.orders.len() as u32;
        out.extend(page.orders.into_iter().map(from_ebay));
        offset += n;
        if n == 0 || i64::from(offset) >= page.total {
            break;
        }
    }
    Ok(out)
}

pub(crate) fn from_ebay(o: ebay::Order) -> RemoteOrder {
    let total = o.pricing_summary.as_ref().and_then(|p| p.get("total"));
    let total_cents = total
        .and_then(|t| t["value"].as_str())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| (v * 100.0).round() as i64);
    let currency = total.and_then(|t| t["currency"].as_str()).map(String::from);
    // Cancelled, or refunded in full, before it shipped: the item never left, its stock comes back.
    let cancelled = (o
        .cancel_status
        .as_ref()
        .and_then(|c| c["cancelState"].as_str())
        .is_some_and(|s| s == "CANCELED")
        || o.order_payment_status.as_deref() == Some("FULLY_REFUNDED"))
        && o.order_fulfillment_status.as_deref() != Some("FULFILLED");
    RemoteOrder {
        remote_order_id: o.order_id.clone(),
        status: o
            .order_fulfillment_status
            .clone()
            .unwrap_or_else(|| "UNKNOWN".into()),
        cancelled,
        total_cents,
        currency,
        placed_at: Some(o.creation_date),
        remote_updated_at: Some(o.last_modified_date),
        lines: o
            .line_items
            .iter()
            .map(|l| RemoteLine {
                line_id: l.line_item_id.clone(),
                sku: l.sku.clone(),
                remote_listing_id: l.legacy_item_id.clone(),
                quantity: l.quantity as i32,
            })
            .collect(),
        raw: json!({ "order_id": o.order_id, "line_items": o.line_items.len() }),
    }
}

async fn etsy_orders(
    ctx: &JobContext,
    account: &Account,
    token: &str,
    since: DateTime<Utc>,
) -> Result<Vec<RemoteOrder>, JobError> {
    let shop = account.etsy_shop()?;
    let etsy = &ctx.market.etsy;
    let mut receipts = etsy
        .receipts_modified_since(token, shop, since.timestamp())
        .await?;
    // Etsy does not bump a receipt's last change on cancellation: the recent cancelled ones are
    // read too (one request, usually), so their stock comes back; importing one twice is harmless.
    let lookback = (Utc::now() - Duration::days(FIRST_LOOKBACK_DAYS)).timestamp();
    let canceled = etsy
        .receipts_canceled_unshipped_since(token, shop, lookback)
        .await?;
    receipts.retain(|r| !canceled.iter().any(|c| c.receipt_id == r.receipt_id));
    receipts.extend(canceled);
    Ok(receipts.into_iter().map(from_etsy).collect())
}

pub(crate) fn from_etsy(r: etsy::Receipt) -> RemoteOrder {
    let at = |s: i64| DateTime::from_timestamp(s, 0);
    RemoteOrder {
        remote_order_id: r.receipt_id.to_string(),
        cancelled: matches!(r.status.as_str(), "canceled" | "fully refunded") && !r.is_shipped,
        status: r.status.clone(),
        total_cents: r.grandtotal.as_ref().map(etsy::Money::cents),
        currency: r.grandtotal.as_ref().map(|g| g.currency_code.clone()),
        placed_at: at(r.created_timestamp),
        remote_updated_at: at(r.updated_timestamp),
        lines: r
            .transactions
            .iter()
            .map(|t| RemoteLine {
                line_id: t.transaction_id.to_string(),
                sku: t.sku.clone().filter(|s| !s.is_empty()),
                remote_listing_id: t.listing_id.map(|l| l.to_string()),
                quantity: t.quantity as i32,
            })
            .collect(),
        raw: json!({ "receipt_id": r.receipt_id, "transactions": r.transactions.len() }),
    }
}
