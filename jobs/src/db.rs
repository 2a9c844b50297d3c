//! Pool and migrations of the platform's own tables (`migrations/` at the workspace root).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url, max_connections, true).await
}

/// `custom_plans`: plan every execution with its real parameters. The worker needs it: a generic
/// plan assumes an array parameter holds 10 elements, which turned a 1,000-row ack into a nested
/// loop that re-ran `unnest` 1,000 times (a second per batch). The API's statements are small and
/// hot (one enqueue per request), where re-planning each time is a tenth of the enqueue's cost.
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    custom_plans: bool,
) -> Result<PgPool, sqlx::Error> {
    let mut opts: PgConnectOptions = url.parse()?;
    opts = opts.application_name("stoflow");
    if custom_plans {
        opts = opts.options([("plan_cache_mode", "force_custom_plan")]);
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // No ping before each use: it is a round trip on every acquire (a quarter of an enqueue's
        // cost). A connection that died is found on use, fails that query (retried by the worker
        // loops, a 5xx for an API request) and is dropped from the pool.
        .test_before_acquire(false)
        .connect_with(opts)
        .await
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether every migration this build knows has been applied (readiness).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot connect to Postgres (database.url / DATABASE_URL): {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool on the configured database, migrated: what every process does at start.
pub async fn connect_migrated(
    settings: &crate::Settings,
    custom_plans: bool,
) -> Result<PgPool, StartError> {
    let url = settings.database_url()?;
    let pool = connect_with(url, settings.database.max_connections, custom_plans)
        .await
        .map_err(StartError::Connect)?;
    migrate(&pool).await?;
    Ok(pool)
}
