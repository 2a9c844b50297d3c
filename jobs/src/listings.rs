//! The (product, marketplace) listing rows: the remote ids that make publishing idempotent, the
//! listing's state as the seller sees it, and its last error.

use serde_json::json;
use sqlx::PgPool;

use engine::JobError;
use marketplaces::Marketplace;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Listing {
    pub id: i64,
    pub product_id: i64,
    pub marketplace: String,
    pub account_id: Option<i64>,
    pub sku: String,
    pub remote_offer_id: Option<String>,
    pub remote_listing_id: Option<String>,
    pub status: String,
}

const COLUMNS: &str =
    "id, product_id, marketplace, account_id, sku, remote_offer_id, remote_listing_id, status";

/// The listing row of (product, marketplace), created on first publish. A failed or withdrawn
/// listing being published again goes back to `publishing`; remote ids are kept (they are what
/// a retry resumes from).
pub async fn upsert(
    pool: &PgPool,
    product_id: i64,
    m: Marketplace,
    account: i64,
    sku: &str,
) -> Result<Listing, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO listings (product_id, marketplace, account_id, sku, tenant_id)
         VALUES ($1, $2, $3, $4, (SELECT tenant_id FROM products WHERE id = $1))
         ON CONFLICT (product_id, marketplace) DO UPDATE SET account_id = excluded.account_id, sku = excluded.sku,
                status = CASE WHEN listings.status IN ('failed', 'withdrawn') THEN 'publishing' ELSE listings.status END,
                updated_at = now()
         RETURNING {COLUMNS}"
    )))
    .bind(product_id)
    .bind(m.as_str())
    .bind(account)
    .bind(sku)
    .fetch_one(pool)
    .await
}

pub async fn get(
    pool: &PgPool,
    product_id: i64,
    m: Marketplace,
) -> Result<Option<Listing>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM listings WHERE product_id = $1 AND marketplace = $2"
    )))
    .bind(product_id)
    .bind(m.as_str())
    .fetch_optional(pool)
    .await
}

/// Records a remote id as soon as the marketplace gave it: a crash after this point resumes
/// from it instead of creating a second listing.
pub async fn set_remote(
    pool: &PgPool,
    id: i64,
    offer_id: Option<&str>,
    listing_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE listings SET remote_offer_id = coalesce($2, remote_offer_id),
                remote_listing_id = coalesce($3, remote_listing_id), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(offer_id)
    .bind(listing_id)
    .execute(pool)
    .await
    .map(drop)
}

pub async fn mark_published(
    pool: &PgPool,
    id: i64,
    listing_id: &str,
    url: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE listings SET status = 'published', remote_listing_id = $2, url = coalesce($3, url),
                last_error = NULL, published_at = coalesce(published_at, now()), withdrawn_at = NULL,
                withdraw_reason = NULL, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(listing_id)
    .bind(url)
    .execute(pool)
    .await
    .map(drop)
}

pub async fn mark_withdrawn(
    pool: &PgPool,
    id: i64,
    reason: &str,
    job: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE listings SET status = 'withdrawn', withdrawn_at = now(), withdraw_reason = $2,
                withdrawn_by_job = $3, last_error = NULL, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .bind(job)
    .execute(pool)
    .await
    .map(drop)
}

/// Keeps a failure on the listing: a permanent one is the listing's state until the seller fixes
/// the product; a transient one leaves the status alone (the job runs again).
pub async fn record_error(pool: &PgPool, id: i64, e: &JobError) -> Result<(), sqlx::Error> {
    let failed = matches!(e, JobError::Permanent { .. });
    sqlx::query(
        "UPDATE listings SET last_error = $2,
                status = CASE WHEN $3 AND status = 'publishing' THEN 'failed' ELSE status END,
                updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(json!({ "at": chrono::Utc::now(), "class": class_of(e), "message": e.to_string() }))
    .bind(failed)
    .execute(pool)
    .await
    .map(drop)
}

pub fn class_of(e: &JobError) -> &str {
    match e {
        JobError::Retry { class, .. }
        | JobError::Snooze { class, .. }
        | JobError::Permanent { class, .. } => class,
    }
}

/// Appends a marketplace failure to the per-marketplace error log (what sellers and ops read to
/// see why a marketplace refused something).
pub async fn log_error(
    pool: &PgPool,
    m: Marketplace,
    account: Option<i64>,
    job_id: i64,
    kind: &str,
    e: &JobError,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO marketplace_errors (marketplace, account_id, job_id, kind, class, message)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(m.as_str())
    .bind(account)
    .bind(job_id)
    .bind(kind)
    .bind(class_of(e))
    .bind(e.to_string())
    .execute(pool)
    .await
    .map(drop)
}
