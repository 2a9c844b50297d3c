//! What every Stoflow job handler reaches: the pool, the settings, the marketplace clients.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Settings;

#[derive(Clone)]
pub struct JobContext {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub market: Arc<crate::marketplace::Marketplaces>,
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
