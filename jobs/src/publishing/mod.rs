//! What publishing, updating and withdrawing a listing does on each marketplace. The
//! `publish_listing` and `withdraw_listing` kinds own the listing row and error recording; the
//! functions here own the marketplace calls, in an order that a retry can always resume.

pub mod ebay;
pub mod etsy;

use crate::config::ImageSettings;
use crate::job::JobError;
use crate::marketplace::InvalidField;

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

/// Fetches one product image for marketplaces that take bytes. An image the host says does
/// not exist (4xx) is the seller's to fix: permanent, naming the image; anything else is
/// transient.
pub async fn fetch_image(
    http: &reqwest::Client,
    s: &ImageSettings,
    marketplace: &'static str,
    index: usize,
    url: &str,
) -> Result<(Vec<u8>, String), JobError> {
    let fetch_url = match url.strip_prefix(s.fetch_rewrite_from.as_str()) {
        Some(rest) if !s.fetch_rewrite_from.is_empty() => format!("{}{rest}", s.fetch_rewrite_to),
        _ => url.to_string(),
    };
    let bad = |message: String| {
        JobError::from(InvalidField {
            marketplace,
            field: "images",
            message,
        })
    };
    let r = http
        .get(&fetch_url)
        .timeout(std::time::Duration::from_millis(s.timeout_ms))
        .send()
        .await
        .map_err(|e| JobError::Retry {
            class: "image_unavailable".into(),
            message: format!("image {index} ({url}) could not be fetched: {e}"),
        })?;
    if r.status().is_client_error() {
        return Err(bad(format!(
            "image {index} ({url}) is not available: HTTP {}",
            r.status().as_u16()
        )));
    }
    if !r.status().is_success() {
        return Err(JobError::Retry {
            class: "image_unavailable".into(),
            message: format!("image {index} ({url}): HTTP {}", r.status().as_u16()),
        });
    }
    let bytes = r.bytes().await.map_err(|e| JobError::Retry {
        class: "image_unavailable".into(),
        message: format!("image {index} ({url}) could not be read: {e}"),
    })?;
    if bytes.len() > s.max_bytes {
        return Err(bad(format!(
            "image {index} ({url}) is {} bytes; at most {} are accepted",
            bytes.len(),
            s.max_bytes
        )));
    }
    let name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("image.jpg")
        .to_string();
    Ok((bytes.to_vec(), name))
}
