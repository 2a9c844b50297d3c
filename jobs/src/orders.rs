//! Orders imported from the marketplaces: upserted by their remote id, each line decrementing
//! the product's stock exactly once, and a product sold out on one marketplace withdrawn from
//! the others by follow-up `withdraw_listing` jobs (auto-delist). While stock remains, the other
//! live listings are re-published with the new quantity.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::domain::Marketplace;
use crate::kinds::{PublishListing, WithdrawListing};
use crate::queue::{self, NewJob, QueueError};
use crate::{Kind, Settings};

/// An order as a marketplace reports it, in our terms.
#[derive(Debug, Clone)]
pub struct RemoteOrder {
    pub remote_order_id: String,
    pub status: String,
    /// A cancelled order never takes stock.
    pub cancelled: bool,
    pub total_cents: Option<i64>,
    pub currency: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    pub remote_updated_at: Option<DateTime<Utc>>,
    pub lines: Vec<RemoteLine>,
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct RemoteLine {
    pub line_id: String,
    pub sku: Option<String>,
    /// The marketplace's listing id, to find the product when the line has no SKU.
    pub remote_listing_id: Option<String>,
    pub quantity: i32,
}

/// What an import did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Imported {
    pub orders: usize,
    pub new_orders: usize,
    /// Lines that took stock for the first time.
    pub lines_applied: usize,
    /// Products whose last unit sold.
    pub sold_out: Vec<i64>,
    /// Follow-up jobs enqueued (withdrawals and quantity updates).
    pub follow_ups: usize,
}

/// Imports `orders` of `account` on marketplace `m`, each in its own transaction (so one bad
/// order cannot hold back the others' stock), and wakes the workers for the follow-ups.
pub async fn import(
    pool: &PgPool,
    settings: &Settings,
    m: Marketplace,
    account: i64,
    orders: &[RemoteOrder],
) -> Result<Imported, QueueError> {
    let mut out = Imported::default();
    for o in orders {
        import_one(pool, settings, m, account, o, &mut out).await?;
    }
    if out.follow_ups > 0 {
        queue::wake(pool, &[WithdrawListing::KIND, PublishListing::KIND]).await?;
    }
    Ok(out)
}

async fn import_one(
    pool: &PgPool,
    settings: &Settings,
    m: Marketplace,
    account: i64,
    o: &RemoteOrder,
    out: &mut Imported,
) -> Result<(), QueueError> {
    let mut tx = pool.begin().await?;
    let (order_id, inserted): (i64, bool) = sqlx::query_as(
        "INSERT INTO orders (account_id, marketplace, remote_order_id, status, total_cents, currency,
                             placed_at, remote_updated_at, raw)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (marketplace, remote_order_id) DO UPDATE SET status = excluded.status,
             total_cents = excluded.total_cents, currency = excluded.currency,
             remote_updated_at = excluded.remote_updated_at, raw = excluded.raw, updated_at = now()
         RETURNING id, (xmax = 0)",
    )
    .bind(account)
    .bind(m.as_str())
    .bind(&o.remote_order_id)
    .bind(&o.status)
    .bind(o.total_cents)
    .bind(&o.currency)
    .bind(o.placed_at)
    .bind(o.remote_updated_at)
    .bind(&o.raw)
    .fetch_one(&mut *tx)
    .await?;
    out.orders += 1;
    out.new_orders += usize::from(inserted);
    // SKUs are unique per tenant: an order's lines name the account's tenant's products only.
    let tenant: Option<i64> =
        sqlx::query_scalar("SELECT tenant_id FROM marketplace_accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await?;
    let mut follow_ups: Vec<NewJob> = Vec::new();
    for line in o.lines.iter().filter(|_| !o.cancelled) {
        let product: Option<i64> = sqlx::query_scalar(
            "SELECT coalesce(
                 (SELECT id FROM products WHERE sku = $1 AND tenant_id = $4 AND deleted_at IS NULL),
                 (SELECT product_id FROM listings
                   WHERE marketplace = $2 AND remote_listing_id = $3 AND tenant_id = $4))",
        )
        .bind(&line.sku)
        .bind(m.as_str())
        .bind(&line.remote_listing_id)
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        // The primary key makes a line take stock once, however often the order is seen.
        let new_line: Option<i32> = sqlx::query_scalar(
            "INSERT INTO order_lines (order_id, line_id, product_id, sku, quantity) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING RETURNING 1",
        )
        .bind(order_id)
        .bind(&line.line_id)
        .bind(product)
        .bind(&line.sku)
        .bind(line.quantity.max(1))
        .fetch_optional(&mut *tx)
        .await?;
        let (Some(_), Some(product)) = (new_line, product) else {
            continue;
        };
        out.lines_applied += 1;
        let (stock, version): (i32, DateTime<Utc>) = sqlx::query_as(
            "UPDATE products SET stock_quantity = greatest(stock_quantity - $2, 0),
                    status = CASE WHEN stock_quantity - $2 <= 0 THEN 'sold' ELSE status END,
                    updated_at = now()
              WHERE id = $1 RETURNING stock_quantity, updated_at",
        )
        .bind(product)
        .bind(line.quantity.max(1))
        .fetch_one(&mut *tx)
        .await?;
        let others: Vec<(String,)> = sqlx::query_as(
            "SELECT marketplace FROM listings
              WHERE product_id = $1 AND marketplace <> $2 AND status IN ('published', 'publishing')",
        )
        .bind(product)
        .bind(m.as_str())
        .fetch_all(&mut *tx)
        .await?;
        if stock == 0 {
            out.sold_out.push(product);
        }
        for (other,) in others {
            let Some(other) = Marketplace::parse(&other) else {
                continue;
            };
            let key = format!(
                "order:{}:{}:{}:{product}:{}",
                m.as_str(),
                o.remote_order_id,
                line.line_id,
                other.as_str()
            );
            follow_ups.push(if stock == 0 {
                NewJob::of(
                    &WithdrawListing {
                        product_id: product,
                        marketplace: other,
                        reason: Some(format!(
                            "sold out on {} (order {})",
                            m.as_str(),
                            o.remote_order_id
                        )),
                    },
                    settings,
                    Some(key),
                )
            } else {
                NewJob::of(
                    &PublishListing {
                        product_id: product,
                        marketplace: other,
                    },
                    settings,
                    Some(format!("{key}:{}", version.timestamp_micros())),
                )
            });
        }
    }
    out.follow_ups += queue::insert_for(&mut tx, tenant, &follow_ups)
        .await?
        .iter()
        .filter(|i| i.created)
        .count();
    tx.commit().await?;
    Ok(())
}
