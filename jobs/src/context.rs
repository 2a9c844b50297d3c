//! What every Stoflow job handler reaches: the pool, the settings, the marketplace clients and
//! the token cipher.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Settings;

#[derive(Clone)]
pub struct JobContext {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub market: Arc<Marketplaces>,
}

impl engine::Context for JobContext {
    /// Each run has its own limiter scope: calls spent so far, the seller it acts for.
    fn scope<F>(&self, run: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send,
    {
        crate::limits::scoped(run)
    }
}

/// The clients and the token cipher every marketplace job uses, built once per process.
pub struct Marketplaces {
    pub ebay: marketplaces::ebay::EbayClient,
    pub etsy: marketplaces::etsy::EtsyClient,
    pub cipher: crate::secrets::TokenCipher,
}

impl Marketplaces {
    pub fn new(
        ebay: &marketplaces::ebay::EbaySettings,
        etsy: &marketplaces::etsy::EtsySettings,
        security: &crate::secrets::SecuritySettings,
    ) -> Result<Self, crate::secrets::CipherError> {
        Ok(Self {
            ebay: marketplaces::ebay::EbayClient::new(ebay),
            etsy: marketplaces::etsy::EtsyClient::new(etsy),
            cipher: crate::secrets::TokenCipher::new(security)?,
        })
    }
}
