//! Stoflow's pools and migrations: the engine's tables (`engine/migrations`) and the platform's
//! own (`migrations/` at the workspace root), one migrator over both.

use std::sync::LazyLock;

use engine::db::{PoolSpec, StartError};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use engine::db::{connect_with, is_unavailable};

static APP: Migrator = sqlx::migrate!("../migrations");

/// Every table: the engine's and the platform's, in version order.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| engine::db::with_engine(&APP));

/// Workers, the scheduler and tools: the owner's role, a patient acquire.
pub const WORKER: PoolSpec = PoolSpec {
    application_name: "stoflow",
    ..PoolSpec::WORKER
};

/// The role a seller's queries run as: row-level security applies to it (migration
/// 20261206000900), so a query that forgets its tenant filter sees only that tenant's rows.
pub const SELLER_ROLE: &str = "stoflow_seller";

/// The connection parameters for `tenant`'s queries: the seller role and the tenant inside a
/// seller's request, the owner's role (and no tenant) otherwise ([`PoolSpec::session`]).
pub fn tenant_session(tenant: Option<i64>) -> engine::db::SessionParams {
    vec![
        (
            "role",
            if tenant.is_some() {
                SELLER_ROLE
            } else {
                "none"
            }
            .to_string(),
        ),
        (
            "stoflow.tenant_id",
            tenant.map(|t| t.to_string()).unwrap_or_default(),
        ),
    ]
}

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url, max_connections, &WORKER).await
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether every migration this build knows has been applied (readiness).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    engine::db::migrations_applied(pool, &MIGRATOR).await
}

/// A pool on the configured database, migrated: what every process does at start.
pub async fn connect_migrated(
    settings: &crate::Settings,
    spec: &PoolSpec,
) -> Result<PgPool, StartError> {
    engine::db::connect_migrated(&settings.engine(), spec, &MIGRATOR).await
}

/// [`connect_migrated`], waiting for the database while it cannot be reached.
pub async fn connect_migrated_waiting(
    settings: &crate::Settings,
    spec: &PoolSpec,
) -> Result<PgPool, StartError> {
    engine::db::connect_migrated_waiting(&settings.engine(), spec, &MIGRATOR).await
}
