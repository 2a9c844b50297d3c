//! What publishing, updating and withdrawing a listing does on each marketplace. The
//! `publish_listing` and `withdraw_listing` kinds own the listing row and error recording; the
//! functions here own the marketplace calls, in an order that a retry can always resume.

pub mod ebay;
pub mod etsy;

use crate::images::ImageFetcher;
use crate::marketplace::InvalidField;
use engine::JobError;

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
