//! Pool and migrations of the platform's own tables (`migrations/` at the workspace root).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // Plan every execution with its real parameters: a generic plan assumes an array
        // parameter holds 10 elements, which turned a 1,000-row ack into a nested loop that
        // re-ran `unnest` 1,000 times (a second per batch). Planning costs well under 1 ms here.
        .connect_with(
            opts.application_name("stoflow")
                .options([("plan_cache_mode", "force_custom_plan")]),
        )
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
pub async fn connect_migrated(settings: &crate::Settings) -> Result<PgPool, StartError> {
    let url = settings.database_url()?;
    let pool = connect(url, settings.database.max_connections)
        .await
        .map_err(StartError::Connect)?;
    migrate(&pool).await?;
    Ok(pool)
}
