//! How [`crate::kinds::HandleWebhook`] runs: its policy and handler.

use super::sync_orders::{connected_account, from_ebay, from_etsy};
use crate::accounts;
use crate::context::JobContext;
use crate::kinds::{EBAY_ORDER_TOPIC, HandleWebhook};
use crate::orders;
use crate::publishing::failed;
use engine::Kind;
use engine::{Job, JobError, Policy, RunInfo};
use marketplaces::Marketplace;
use serde_json::{Value, json};

impl Job for HandleWebhook {
    const POLICY: Policy = Policy::new(5, 120, 8).backoff(1_000, 600);
    // Internal: never accepted from a client, names no seller's object.
    type Context = JobContext;

    async fn run(self, ctx: JobContext, run: RunInfo) -> Result<Value, JobError> {
        let row: Option<(String, String, Option<String>, bool)> = sqlx::query_as(
            "SELECT marketplace, topic, body, handled_at IS NOT NULL FROM webhook_inbox WHERE id = $1",
        )
        .bind(self.inbox_id)
        .fetch_optional(&ctx.pool)
        .await?;
        let Some((marketplace, topic, body, handled)) = row else {
            return Err(JobError::permanent(format!(
                "inbox row {} does not exist",
                self.inbox_id
            )));
        };
        if handled {
            return Ok(json!({ "already_handled": true }));
        }
        let body: Value = body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        let (accounts, outcome) = match (marketplace.as_str(), topic.as_str()) {
            ("etsy", "order.paid") => etsy_order_paid(&ctx, run, &body).await?,
            ("ebay", EBAY_ORDER_TOPIC) => ebay_order(&ctx, run, &body).await?,
            ("ebay", "MARKETPLACE_ACCOUNT_DELETION") => {
                ebay_account_deletion(&ctx, self.inbox_id, &body).await?
            }
            _ => (
                vec![],
                json!({ "ignored": format!("{marketplace} topic {topic} is not handled") }),
            ),
        };
        // One statement: the inbox row and the accounts' "last push" (the dashboard shows it).
        sqlx::query(
            "WITH inbox AS (
                UPDATE webhook_inbox SET handled_at = now(), outcome = $2, account_ids = $3
                 WHERE id = $1 RETURNING received_at)
             UPDATE marketplace_accounts a SET last_push_at = greatest(a.last_push_at, i.received_at)
               FROM inbox i WHERE a.id = ANY($3)",
        )
        .bind(self.inbox_id)
        .bind(&outcome)
        .bind(&accounts)
        .execute(&ctx.pool)
        .await?;
        Ok(outcome)
    }
}

/// `(shop_id, receipt_id)` from `.../shops/{shop_id}/receipts/{receipt_id}`.
fn receipt_path(url: &str) -> Option<(u64, u64)> {
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let receipt = parts.next()?.parse().ok()?;
    (parts.next()? == "receipts").then_some(())?;
    let shop = parts.next()?.parse().ok()?;
    (parts.next()? == "shops").then_some((shop, receipt))
}

/// What a handler did: the accounts the notification concerned, and its outcome.
type Handled = (Vec<i64>, Value);

async fn etsy_order_paid(
    ctx: &JobContext,
    run: RunInfo,
    body: &Value,
) -> Result<Handled, JobError> {
    let Some((shop, receipt_id)) = body["resource_url"].as_str().and_then(receipt_path) else {
        return Err(JobError::permanent(
            "resource_url does not name a shop's receipt",
        ));
    };
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM marketplace_accounts WHERE marketplace = 'etsy' AND shop_id = $1
            AND status = 'connected' ORDER BY id",
    )
    .bind(shop.to_string())
    .fetch_all(&ctx.pool)
    .await?;
    let mut imported = Vec::new();
    for &id in &ids {
        let Ok(account) = connected_account(ctx, id).await else {
            continue;
        };
        let fetch = |token: String| async move {
            Ok(from_etsy(
                ctx.market.etsy.receipt(&token, shop, receipt_id).await?,
            ))
        };
        imported.push(import_one(ctx, run, Marketplace::Etsy, &account, fetch).await?);
    }
    let outcome = json!({ "receipt_id": receipt_id, "shop_id": shop, "accounts": imported });
    Ok((ids, outcome))
}

/// Fetches one order with the account's token and imports it, as polling would; a failure is
/// recorded against the account like any marketplace failure.
async fn import_one<F, Fut>(
    ctx: &JobContext,
    run: RunInfo,
    m: Marketplace,
    account: &accounts::Account,
    fetch: F,
) -> Result<Value, JobError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<orders::RemoteOrder, JobError>>,
{
    let got = async {
        let token = accounts::access_token(&ctx.pool, &ctx.market, account.id).await?;
        let order = fetch(token).await?;
        orders::import(&ctx.pool, &ctx.settings, m, account.id, &[order])
            .await
            .map_err(JobError::retry)
    }
    .await;
    match got {
        Ok(i) => Ok(json!({ "account_id": account.id, "imported": i })),
        Err(e) => Err(failed(ctx, run, HandleWebhook::KIND, m, account, None, e).await),
    }
}

/// The eBay accounts of the user a notification names (by the user id recorded at connect).
async fn ebay_accounts_of(ctx: &JobContext, data: &Value) -> Result<Vec<i64>, JobError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM marketplace_accounts WHERE marketplace = 'ebay'
            AND (setup->>'ebay_user_id' = $1 OR setup->>'ebay_username' = $2) ORDER BY id",
    )
    .bind(data["userId"].as_str())
    .bind(data["username"].as_str())
    .fetch_all(&ctx.pool)
    .await?)
}

async fn ebay_order(ctx: &JobContext, run: RunInfo, body: &Value) -> Result<Handled, JobError> {
    let data = &body["notification"]["data"];
    let Some(order_id) = data["orderId"].as_str() else {
        return Err(JobError::permanent("notification.data.orderId is missing"));
    };
    let mut imported = Vec::new();
    let ids = ebay_accounts_of(ctx, data).await?;
    for &id in &ids {
        let Ok(account) = connected_account(ctx, id).await else {
            continue;
        };
        let fetch = |token: String| async move {
            Ok(from_ebay(ctx.market.ebay.order(&token, order_id).await?))
        };
        imported.push(import_one(ctx, run, Marketplace::Ebay, &account, fetch).await?);
    }
    Ok((ids, json!({ "order_id": order_id, "accounts": imported })))
}

/// Erases what we hold of a deleted eBay user: their accounts' tokens (disconnected), the eBay
/// identity recorded at connect, the raw copies of their orders, and the notifications naming
/// them (this one included). Orders keep only ids, amounts and stock effects.
async fn ebay_account_deletion(
    ctx: &JobContext,
    inbox_id: i64,
    body: &Value,
) -> Result<Handled, JobError> {
    let data = &body["notification"]["data"];
    let notification = body["notification"]["notificationId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ids = ebay_accounts_of(ctx, data).await?;
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "UPDATE marketplace_accounts SET status = 'disconnected',
                status_reason = 'the eBay account was deleted (MARKETPLACE_ACCOUNT_DELETION)',
                access_token = NULL, refresh_token = NULL, access_expires_at = NULL,
                refresh_expires_at = NULL, setup = setup - 'ebay_user_id' - 'ebay_username',
                updated_at = now()
          WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE orders SET raw = '{}'::jsonb WHERE account_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE webhook_inbox SET body = NULL, headers = '{}'::jsonb
          WHERE id = $1 OR (marketplace = 'ebay' AND body IS NOT NULL
                AND (body::jsonb #>> '{notification,data,userId}') = $2)",
    )
    .bind(inbox_id)
    .bind(data["userId"].as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    crate::audit::record(
        &ctx.pool,
        &crate::audit::Action {
            actor: "ebay",
            action: "marketplace_account_deletion",
            target: Some(format!("accounts {ids:?}")),
            filter: Some(json!({ "notification_id": notification })),
            count: ids.len() as i64,
            reason: Some("eBay user asked for their data to be deleted"),
        },
    )
    .await?;
    let outcome = json!({ "erased_accounts": ids });
    Ok((ids, outcome))
}

#[cfg(test)]
mod tests {
    #[test]
    fn receipt_path_reads_shop_and_receipt() {
        let url = "https://openapi.etsy.com/v3/application/shops/12345/receipts/54321";
        assert_eq!(super::receipt_path(url), Some((12345, 54321)));
        assert_eq!(super::receipt_path("https://x/shops/1/listings/2"), None);
        assert_eq!(super::receipt_path("54321"), None);
    }
}
