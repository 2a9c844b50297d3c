//! Clients for the marketplaces Stoflow lists on: eBay's REST Sell APIs and Etsy's Open API v3
//! (OAuth on the `oauth2` crate), with the error taxonomy every answer is classified into
//! (retry, snooze, permanent: [`error::classify`]). HTTP only, no database: base URLs and
//! credentials come from the settings they are given, so pointing a client at the real eBay or
//! Etsy is a configuration change; fleet-wide rate limits plug in as a [`http::Gate`]. Vinted has
//! no API we may call: the seller's browser extension does (Stoflow's `jobs::plugin`).
//!
//! Every request goes out through [`http::send`], which classifies every non-success once.

pub mod ebay;
pub mod error;
pub mod etsy;
pub mod http;
pub mod marketplace;
pub mod oauth;

pub use error::{MarketplaceError, classify};
pub use http::{InvalidField, http_client, json, send};
pub use marketplace::{CONDITIONS, Marketplace};

/// A section of the published defaults (`jobs/config.default.toml`), for the unit tests.
#[cfg(test)]
pub(crate) fn default_settings<T: serde::de::DeserializeOwned>(key: &str) -> T {
    use figment::providers::{Format, Toml};
    figment::Figment::new()
        .merge(Toml::string(include_str!("../../jobs/config.default.toml")))
        .extract_inner(key)
        .expect("the published defaults hold this section")
}
