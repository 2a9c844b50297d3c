//! Marketplace integration shared by the clients: the one place HTTP outcomes are classified.
//! The eBay, Etsy and Vinted-plugin clients arrive with the marketplaces issue.

pub mod error;

pub use error::{MarketplaceError, classify};
