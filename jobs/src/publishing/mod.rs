//! What publishing, updating and withdrawing a listing does on each marketplace, in an order that
//! a retry can always resume, and where a marketplace failure is recorded ([`failed`]). The
//! `publish_listing` and `withdraw_listing` handlers own the listing row.

pub mod ebay;
pub mod etsy;
pub mod vinted;

use crate::images::ImageFetcher;
use crate::{accounts, listings};
use engine::JobError;
use marketplaces::InvalidField;

/// A listing live on a marketplace.
#[derive(Debug, Clone)]
pub struct Published {
    pub offer_id: Option<String>,
    pub listing_id: String,
    pub url: Option<String>,
}

/// The product's image URLs (stored as a JSON array).
pub fn image_urls(images: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(images.clone()).unwrap_or_default()
}

/// Fetches one product image for marketplaces that take bytes, through
/// [`crate::images::ImageFetcher`] (public addresses only). The seller's error names the image
/// and a neutral reason; what actually happened goes to the log. Not public, not an image, too
/// large or refused by its host: permanent; network trouble or a 5xx: retried.
pub async fn fetch_image(
    fetcher: &ImageFetcher,
    marketplace: &'static str,
    index: usize,
    url: &str,
) -> Result<(Vec<u8>, String), JobError> {
    let image = fetcher.fetch(url).await.map_err(|e| {
        tracing::warn!(marketplace, image = index, url, error = %e, "image fetch failed");
        let message = e.seller_reason(index, url);
        if e.is_retryable() {
            JobError::Retry {
                class: "image_unavailable".into(),
                message,
            }
        } else {
            JobError::from(InvalidField {
                marketplace,
                field: "images",
                message,
            })
        }
    })?;
    let name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("image.jpg")
        .to_string();
    Ok((image.bytes, name))
}

/// Records a marketplace failure where sellers and ops look (the listing row, the marketplace
/// error log) and hands the error back for the queue to act on. A token refused before its
/// recorded expiry is marked expired so the next run refreshes it.
pub async fn failed(
    ctx: &crate::context::JobContext,
    run: engine::RunInfo,
    kind: &str,
    m: marketplaces::Marketplace,
    account: &accounts::Account,
    listing: Option<i64>,
    e: JobError,
) -> JobError {
    let record = async {
        if matches!(&e, JobError::Snooze { class, .. } if class == "auth_expired") {
            accounts::mark_access_expired(&ctx.pool, account.id).await?;
        }
        if let Some(id) = listing {
            listings::record_error(&ctx.pool, id, &e).await?;
        }
        listings::log_error(&ctx.pool, m, Some(account.id), run.job_id, kind, &e).await
    };
    match record.await {
        Ok(()) => e,
        // Could not record: let the job run again rather than lose the record.
        Err(db) => JobError::from(db),
    }
}
