//! What every request handler reaches: the pool, settings, the enqueue coalescer, the event
//! feeds, the marketplace clients, the token signer and the request budgets.

use std::sync::Arc;

use engine::queue::Notifier;
use jobs::Settings;

use crate::{events, throttle};

pub struct AppState {
    pub pool: sqlx::PgPool,
    pub settings: Arc<Settings>,
    pub notifier: Notifier,
    /// Batches concurrent single-job enqueues into one INSERT and commit.
    pub enqueuer: engine::coalesce::Coalescer,
    pub metrics: &'static engine::metrics::Metrics,
    /// Ids of jobs whose state changed (from every worker process, via LISTEN).
    pub job_changes: tokio::sync::broadcast::Sender<i64>,
    /// Vinted accounts that have a new pending plugin task (wakes long-polling extensions).
    pub plugin_wakeups: tokio::sync::broadcast::Sender<i64>,
    /// Announces changes this process makes (retry, cancel).
    pub job_events: Notifier,
    /// Changed jobs resolved to their new state, for `GET /v1/events` and the dashboard.
    pub job_feed: tokio::sync::broadcast::Sender<Arc<Vec<events::JobChange>>>,
    /// Marketplace clients and the token cipher.
    pub market: jobs::context::Marketplaces,
    /// Signs and verifies access tokens.
    pub signer: jobs::auth::Signer,
    /// Per-user and per-login request budgets.
    pub limiters: throttle::Limiters,
    /// eBay's notification signing keys by `kid`.
    pub ebay_keys: jobs::webhooks::EbayKeys,
}
