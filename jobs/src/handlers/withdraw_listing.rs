//! How [`crate::kinds::WithdrawListing`] runs: its policy and handler.

use crate::context::JobContext;
use crate::kinds::WithdrawListing;
use crate::publishing::failed;
use crate::{accounts, listings, publishing};
use engine::Kind;
use engine::{Job, JobError, Policy, RunInfo};
use marketplaces::Marketplace;
use serde_json::{Value, json};

impl Job for WithdrawListing {
    const POLICY: Policy = Policy::new(8, 120, 8).backoff(2_000, 3_600);
    type Context = JobContext;

    async fn run(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        let m = self.marketplace;
        let Some(listing) = listings::get(&ctx.pool, self.product_id, m).await? else {
            return Ok(json!({ "withdrawn": false, "why": "never listed there" }));
        };
        if let Some(wait) = publish_in_flight(&ctx, self.product_id, m).await? {
            // That publish would put the listing (back) on sale after this withdrawal: let it
            // finish (or die, for a deleted product) first.
            return Err(JobError::snooze(
                wait,
                "a publish of this listing is waiting or under way",
            ));
        }
        if listing.status == "withdrawn" {
            return Ok(json!({ "withdrawn": true, "already": true }));
        }
        if m == Marketplace::Vinted {
            crate::plugin::withdraw(&ctx, run.job_id, &listing).await?;
            let reason = self.reason.as_deref().unwrap_or("withdrawn on request");
            listings::mark_withdrawn(&ctx.pool, listing.id, reason, run.job_id).await?;
            return Ok(
                json!({ "withdrawn": true, "marketplace": "vinted", "listing_id": listing.remote_listing_id }),
            );
        }
        let account = match listing.account_id {
            Some(id) => accounts::get(&ctx.pool, id).await?,
            None => None,
        }
        .ok_or_else(|| JobError::permanent("the listing's marketplace account is gone"))?;
        let result = match m {
            Marketplace::Ebay => publishing::ebay::withdraw(&ctx, &account, &listing).await,
            Marketplace::Etsy => publishing::etsy::withdraw(&ctx, &account, &listing).await,
            Marketplace::Vinted => unreachable!("handled above"),
        };
        match result {
            Ok(()) => {
                let reason = self.reason.as_deref().unwrap_or("withdrawn on request");
                listings::mark_withdrawn(&ctx.pool, listing.id, reason, run.job_id).await?;
                Ok(
                    json!({ "withdrawn": true, "marketplace": m.as_str(), "listing_id": listing.remote_listing_id }),
                )
            }
            Err(e) => Err(failed(&ctx, run, Self::KIND, m, &account, Some(listing.id), e).await),
        }
    }
}

/// How long to wait for a `publish_listing` job of (product, marketplace) that is waiting or
/// running: a little past its next run (at most 5 minutes), or None when there is none.
async fn publish_in_flight(
    ctx: &JobContext,
    product_id: i64,
    m: Marketplace,
) -> Result<Option<std::time::Duration>, sqlx::Error> {
    let ms: Option<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM min(CASE WHEN state = 'running' THEN now() ELSE run_at END) - now())
                * 1000)::float8
           FROM jobs WHERE kind = 'publish_listing' AND state IN ('available', 'running')
            AND (args->>'product_id')::bigint = $1 AND args->>'marketplace' = $2",
    )
    .bind(product_id)
    .bind(m.as_str())
    .fetch_one(&ctx.pool)
    .await?;
    Ok(ms.map(|ms| std::time::Duration::from_millis(ms.clamp(0.0, 300_000.0) as u64 + 1_000)))
}

/// Wakes the withdrawals of (product, marketplace) that sleep behind a publish: called when that
/// publish ends, so they need not wait for the deadline they read before it ended. Best effort:
/// a withdrawal not woken still runs at its own deadline.
pub(crate) async fn wake_waiting(pool: &sqlx::PgPool, product_id: i64, m: Marketplace) {
    let woken = sqlx::query(
        "UPDATE jobs SET run_at = now()
          WHERE kind = 'withdraw_listing' AND state = 'available' AND run_at > now()
            AND (args->>'product_id')::bigint = $1 AND args->>'marketplace' = $2",
    )
    .bind(product_id)
    .bind(m.as_str())
    .execute(pool)
    .await;
    match woken {
        Ok(r) if r.rows_affected() > 0 => {
            if let Err(e) = engine::queue::wake(pool, &[WithdrawListing::KIND]).await {
                tracing::warn!(error = %e, "waking withdrawals failed");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "waking withdrawals failed"),
    }
}
