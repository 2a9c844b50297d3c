//! Orders imported from the marketplaces: upserted by their remote id, each line decrementing
//! the product's stock exactly once, and a product sold out on one marketplace withdrawn from
//! the others by follow-up `withdraw_listing` jobs (auto-delist). While stock remains, the other
//! live listings are re-published with the new quantity. A cancelled order gives its stock back
//! and re-lists what its sale withdrew.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::Settings;
use crate::kinds::{PublishListing, WithdrawListing};
use engine::Kind;
use engine::queue::{self, NewJob, QueueError};
use marketplaces::Marketplace;

/// An order as a marketplace reports it, in our terms.
#[derive(Debug, Clone)]
pub struct RemoteOrder {
    pub remote_order_id: String,
    pub status: String,
    /// Cancelled or refunded before shipment: takes no stock, and gives back what it took.
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
    /// Lines of cancelled orders whose stock came back.
    pub lines_returned: usize,
    /// Follow-up jobs enqueued (withdrawals, quantity updates, re-listings).
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
    // Each follow-up with the line it is for and whether it withdraws a listing.
    let mut follow_ups: Vec<(NewJob, Option<String>)> = Vec::new();
    if o.cancelled {
        give_back(&mut tx, settings, m, o, order_id, out, &mut follow_ups).await?;
    }
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
        let (stock, version, before): (i32, DateTime<Utc>, String) = sqlx::query_as(
            "WITH old AS (SELECT status FROM products WHERE id = $1 FOR UPDATE)
             UPDATE products p SET stock_quantity = greatest(p.stock_quantity - $2, 0),
                    status = CASE WHEN p.stock_quantity - $2 <= 0 THEN 'sold' ELSE p.status END,
                    updated_at = now()
               FROM old WHERE p.id = $1 RETURNING p.stock_quantity, p.updated_at, old.status",
        )
        .bind(product)
        .bind(line.quantity.max(1))
        .fetch_one(&mut *tx)
        .await?;
        if stock == 0 && before != "sold" {
            // What a cancellation of this sale puts back.
            sqlx::query(
                "UPDATE order_lines SET sold_out_from = $3 WHERE order_id = $1 AND line_id = $2",
            )
            .bind(order_id)
            .bind(&line.line_id)
            .bind(&before)
            .execute(&mut *tx)
            .await?;
        }
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
                (
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
                        &settings.kinds,
                        Some(key),
                    ),
                    Some(line.line_id.clone()),
                )
            } else {
                (
                    publish(
                        product,
                        other,
                        settings,
                        format!("{key}:{}", version.timestamp_micros()),
                    ),
                    None,
                )
            });
        }
    }
    let jobs: Vec<NewJob> = follow_ups.iter().map(|(j, _)| j.clone()).collect();
    let inserted = queue::insert_for(&mut tx, tenant, &jobs).await?;
    for ((_, line), ins) in follow_ups.iter().zip(&inserted) {
        if let Some(line) = line {
            sqlx::query(
                "UPDATE order_lines SET withdraw_jobs = array_append(withdraw_jobs, $3)
                  WHERE order_id = $1 AND line_id = $2 AND NOT ($3 = ANY(withdraw_jobs))",
            )
            .bind(order_id)
            .bind(line)
            .bind(ins.id)
            .execute(&mut *tx)
            .await?;
        }
    }
    out.follow_ups += inserted.iter().filter(|i| i.created).count();
    tx.commit().await?;
    Ok(())
}

fn publish(product: i64, m: Marketplace, settings: &Settings, key: String) -> NewJob {
    NewJob::of(
        &PublishListing {
            product_id: product,
            marketplace: m,
        },
        &settings.kinds,
        Some(key),
    )
}

/// A line of an order, as its sale left it.
#[derive(sqlx::FromRow)]
struct SoldLine {
    line_id: String,
    product_id: i64,
    quantity: i32,
    sold_out_from: Option<String>,
    withdraw_jobs: Vec<i64>,
}

/// A cancelled (or refunded before shipment) order: each line that took stock gives it back,
/// once. A product its sale sold out gets its status back; the listings that sale withdrew are
/// published again (not those withdrawn otherwise, e.g. by the seller), and the live ones follow
/// the new quantity. Withdrawals of that sale still waiting are cancelled.
async fn give_back(
    tx: &mut sqlx::PgConnection,
    settings: &Settings,
    m: Marketplace,
    o: &RemoteOrder,
    order_id: i64,
    out: &mut Imported,
    follow_ups: &mut Vec<(NewJob, Option<String>)>,
) -> Result<(), QueueError> {
    let lines: Vec<SoldLine> = sqlx::query_as(
        "UPDATE order_lines SET returned_at = now()
          WHERE order_id = $1 AND returned_at IS NULL AND product_id IS NOT NULL
         RETURNING line_id, product_id, quantity, sold_out_from, withdraw_jobs",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    for SoldLine {
        line_id,
        product_id: product,
        quantity,
        sold_out_from,
        withdraw_jobs,
    } in lines
    {
        queue::cancel_waiting(&mut *tx, &withdraw_jobs).await?;
        let back: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE products SET stock_quantity = stock_quantity + $2,
                    status = CASE WHEN status = 'sold' AND $3::text IS NOT NULL THEN $3 ELSE status END,
                    updated_at = now()
              WHERE id = $1 AND deleted_at IS NULL RETURNING status, updated_at",
        )
        .bind(product)
        .bind(quantity)
        .bind(&sold_out_from)
        .fetch_optional(&mut *tx)
        .await?;
        out.lines_returned += 1;
        let Some((status, version)) = back else {
            continue;
        };
        if status != "published" {
            continue;
        }
        let listings: Vec<(String,)> = sqlx::query_as(
            "SELECT marketplace FROM listings
              WHERE product_id = $1 AND (status IN ('published', 'publishing')
                    OR (status = 'withdrawn' AND withdrawn_by_job = ANY($2)))",
        )
        .bind(product)
        .bind(&withdraw_jobs)
        .fetch_all(&mut *tx)
        .await?;
        for (l,) in listings {
            let Some(l) = Marketplace::parse(&l) else {
                continue;
            };
            let key = format!(
                "cancel:{}:{}:{line_id}:{product}:{}:{}",
                m.as_str(),
                o.remote_order_id,
                l.as_str(),
                version.timestamp_micros()
            );
            follow_ups.push((publish(product, l, settings, key), None));
        }
    }
    Ok(())
}
