//! How [`crate::kinds::PollEtsy`] runs: its policy and handler.

use super::sync_orders::{connected_account, sync};
use crate::accounts;
use crate::context::JobContext;
use crate::kinds::{PollEtsy, PollWhat};
use crate::publishing::failed;
use engine::Kind;
use engine::{Job, JobError, Policy, RunInfo};
use marketplaces::Marketplace;
use marketplaces::etsy::{ListingState, MAX_PAGE};
use serde_json::{Value, json};
use std::collections::HashMap;

impl Job for PollEtsy {
    const POLICY: Policy = Policy::new(3, 120, 4).backoff(5_000, 600);
    type Context = JobContext;

    async fn run(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        let account = connected_account(&ctx, self.account_id).await?;
        if account.marketplace != "etsy" {
            return Err(JobError::permanent(format!(
                "account {} is not an Etsy account",
                account.id
            )));
        }
        let result = match self.what {
            PollWhat::Receipts => sync(&ctx, &account, Marketplace::Etsy).await,
            PollWhat::Listings => listings(&ctx, &account).await,
            PollWhat::LowStock => low_stock(&ctx, &account).await,
        };
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                Err(failed(&ctx, run, Self::KIND, Marketplace::Etsy, &account, None, e).await)
            }
        }
    }
}

/// Etsy calls one poll costs, as the scheduler budgets them: receipts are one page (more only
/// after a burst of sales), listings one page per state.
pub const RECEIPTS_CALLS: f64 = 1.0;
pub const LISTINGS_CALLS: f64 = 5.0;

/// How the Etsy polling budget is spent ([`due_accounts`]).
#[derive(Debug, Clone, Copy)]
pub struct PollBudget {
    /// Polls this tick may make.
    pub polls: i64,
    /// Shops with nothing live are polled at most this often.
    pub idle_every: std::time::Duration,
}

impl PollBudget {
    /// The polls one tick of `what` may make: its part of the app's daily calls that polling may
    /// spend (`scheduler.etsy_poll_share` of `limits.etsy.per_day`; receipts 4/5 of it, listings
    /// 1/5), over the schedule's `ticks_per_day`. At least one, so every shop is polled some day.
    pub fn for_tick(s: &crate::Settings, what: PollWhat, ticks_per_day: u32) -> Self {
        let (part, calls) = match what {
            PollWhat::Receipts => (0.8, RECEIPTS_CALLS),
            PollWhat::Listings | PollWhat::LowStock => (0.2, LISTINGS_CALLS),
        };
        let day = f64::from(s.limits.etsy.per_day) * s.scheduler.etsy_poll_share * part;
        let polls = (day / f64::from(ticks_per_day.max(1)) / calls).floor() as i64;
        Self {
            polls: polls.max(1),
            idle_every: std::time::Duration::from_secs(
                u64::from(s.scheduler.etsy_idle_poll_minutes) * 60,
            ),
        }
    }
}

/// The connected Etsy accounts one tick of `what` polls, most deserving first, at most
/// `budget.polls`. A shop's claim is the time since its last poll of that kind, weighted by how
/// likely a sale is there: ×4 with live listings and a sale in the last week, ×2 with live
/// listings, ×1 with live listings when Etsy pushed to it in the last day (webhooks see its
/// sales; polling is only the safety net), ×¼ with nothing live. Shops with nothing live are only
/// polled for receipts (a cancellation still gives stock back), at most every `idle_every`. Never-polled shops come
/// first. Weighting waiting time (not ranking tiers) means no shop starves: a shop passed over
/// waits longer and so outweighs the shops polled meanwhile.
pub async fn due_accounts(
    pool: &sqlx::PgPool,
    what: PollWhat,
    budget: PollBudget,
) -> sqlx::Result<Vec<i64>> {
    let last = match what {
        PollWhat::Receipts => "a.last_poll_at",
        PollWhat::Listings | PollWhat::LowStock => "a.last_listings_poll_at",
    };
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH s AS (
           SELECT a.id,
                  coalesce(extract(epoch FROM now() - {last}), 1e12) AS waited,
                  EXISTS (SELECT 1 FROM listings l WHERE l.account_id = a.id AND l.status = 'published') AS live,
                  EXISTS (SELECT 1 FROM orders o WHERE o.account_id = a.id
                           AND o.created_at > now() - interval '7 days') AS selling,
                  coalesce(a.last_push_at > now() - interval '1 day', false) AS pushed
             FROM marketplace_accounts a
            WHERE a.marketplace = 'etsy' AND a.status = 'connected')
         SELECT id FROM s
          WHERE live OR ($1 AND waited >= $2)
          ORDER BY waited * CASE WHEN NOT live THEN 0.25 WHEN pushed THEN 1 WHEN selling THEN 4 ELSE 2 END DESC, id
          LIMIT $3"
    )))
    .bind(what == PollWhat::Receipts)
    .bind(budget.idle_every.as_secs_f64())
    .bind(budget.polls)
    .fetch_all(pool)
    .await
}

/// Reads every listing of the shop (all states, 100 a page) and records on our listing rows what
/// Etsy says of them; a listing we published that Etsy no longer shows as active is reported.
async fn listings(ctx: &JobContext, account: &accounts::Account) -> Result<Value, JobError> {
    let shop = account.etsy_shop()?;
    let token = accounts::access_token(&ctx.pool, &ctx.market, account.id).await?;
    let mut remote: HashMap<String, (&'static str, i32)> = HashMap::new();
    for state in [
        ListingState::Active,
        ListingState::SoldOut,
        ListingState::Inactive,
        ListingState::Expired,
        ListingState::Draft,
    ] {
        let mut offset = 0;
        loop {
            let page = ctx
                .market
                .etsy
                .listings_by_shop(&token, shop, state, MAX_PAGE, offset)
                .await?;
            let n = page.results.len() as u32;
            for l in page.results {
                remote.insert(
                    l.listing_id.to_string(),
                    (state.as_str(), l.quantity as i32),
                );
            }
            offset += n;
            if n == 0 || u64::from(offset) >= page.count {
                break;
            }
        }
    }
    let ids: Vec<String> = remote.keys().cloned().collect();
    let states: Vec<&str> = ids.iter().map(|i| remote[i].0).collect();
    let quantities: Vec<i32> = ids.iter().map(|i| remote[i].1).collect();
    // Our Etsy listings: those Etsy showed get its state; published ones it did not show are gone.
    let changed: Vec<(i64, String)> = sqlx::query_as(
        "WITH seen AS (SELECT * FROM unnest($2::text[], $3::text[], $4::int[]) AS s(remote_id, state, quantity)),
              upd AS (
                UPDATE listings l SET remote_state = coalesce(s.state, 'missing'), remote_quantity = s.quantity,
                       remote_checked_at = now()
                  FROM listings l2 LEFT JOIN seen s ON s.remote_id = l2.remote_listing_id
                 WHERE l.id = l2.id AND l.account_id = $1 AND l.marketplace = 'etsy'
                   AND l.remote_listing_id IS NOT NULL
                   AND l.remote_state IS DISTINCT FROM coalesce(s.state, 'missing')
                RETURNING l.id, l.remote_state)
         SELECT id, remote_state FROM upd",
    )
    .bind(account.id)
    .bind(&ids)
    .bind(&states)
    .bind(&quantities)
    .fetch_all(&ctx.pool)
    .await?;
    sqlx::query("UPDATE marketplace_accounts SET last_listings_poll_at = now() WHERE id = $1")
        .bind(account.id)
        .execute(&ctx.pool)
        .await?;
    Ok(json!({
        "listings_on_etsy": remote.len(),
        "changed": changed.iter().map(|(id, s)| json!({"listing": id, "remote_state": s})).collect::<Vec<_>>(),
    }))
}

/// Products listed on this account whose stock is at or below the threshold, by our catalogue
/// and by Etsy's last polled quantity, so the seller can restock before they sell out.
async fn low_stock(ctx: &JobContext, account: &accounts::Account) -> Result<Value, JobError> {
    let threshold = ctx.settings.marketplaces.etsy.low_stock_threshold as i32;
    let rows: Vec<(i64, String, i32, Option<i32>)> = sqlx::query_as(
        "SELECT p.id, p.sku, p.stock_quantity, l.remote_quantity FROM listings l JOIN products p ON p.id = l.product_id
          WHERE l.account_id = $1 AND l.marketplace = 'etsy' AND l.status = 'published' AND p.deleted_at IS NULL
            AND (p.stock_quantity <= $2 OR l.remote_quantity <= $2)
          ORDER BY p.id",
    )
    .bind(account.id)
    .bind(threshold)
    .fetch_all(&ctx.pool)
    .await?;
    Ok(json!({
        "threshold": threshold,
        "low_stock": rows.iter().map(|(id, sku, stock, remote)| json!({
            "product_id": id, "sku": sku, "stock": stock, "etsy_quantity": remote,
        })).collect::<Vec<_>>(),
    }))
}
