//! Pool and migrations of the platform's own tables (`migrations/` at the workspace root).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url, max_connections, &PoolSpec::WORKER).await
}

/// How a process's pool is set up.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    /// Plan every execution with its real parameters (see [`connect_with`]).
    pub custom_plans: bool,
    /// How long a caller waits for a connection; the API keeps it short so that a database
    /// outage is a quick 503, not a hung request.
    pub acquire_timeout: Duration,
    /// Where a connection's tenant comes from, if the pool runs sellers' queries.
    pub tenant_of_task: Option<fn() -> Option<i64>>,
}

impl PoolSpec {
    /// Workers, the scheduler and tools: the owner's role, a patient acquire.
    pub const WORKER: Self = Self {
        custom_plans: true,
        acquire_timeout: Duration::from_secs(10),
        tenant_of_task: None,
    };
}

/// The role a seller's queries run as: row-level security applies to it (migration
/// 20261206000900), so a query that forgets its tenant filter sees only that tenant's rows.
pub const SELLER_ROLE: &str = "stoflow_seller";

/// Whether an error says the database could not be reached or the connection broke (a server
/// stopped or restarted), as opposed to a statement Postgres refused.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 57P01-03: the server is shutting down or restarting; 08xxx: connection exceptions.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// A pooled connection idle this long is checked before use: after a quiet spell the server
/// may have restarted without this process noticing.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(2);

/// `custom_plans`: plan every execution with its real parameters. The worker needs it: a generic
/// plan assumes an array parameter holds 10 elements, which turned a 1,000-row ack into a nested
/// loop that re-ran `unnest` 1,000 times (a second per batch). The API's statements are small and
/// hot (one enqueue per request), where re-planning each time is a tenth of the enqueue's cost.
///
/// `tenant_of_task`: each acquire sets the connection's role and tenant from it — the seller
/// role and the tenant inside a seller's request, the owner's role (and no tenant) otherwise —
/// in one statement that also proves the connection alive.
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    spec: &PoolSpec,
) -> Result<PgPool, sqlx::Error> {
    let mut opts: PgConnectOptions = url.parse()?;
    opts = opts.application_name("stoflow");
    if spec.custom_plans {
        opts = opts.options([("plan_cache_mode", "force_custom_plan")]);
    }
    let tenant_of_task = spec.tenant_of_task;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(spec.acquire_timeout)
        // No ping before each use: it is a round trip on every acquire (a quarter of an enqueue's
        // cost). Only a connection idle for a while is pinged first (a dead one is then replaced,
        // not handed out); the API's pool checks every connection with its role/tenant statement.
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if let Some(tenant_of_task) = tenant_of_task {
                    let tenant = tenant_of_task();
                    let set = sqlx::query(
                        "SELECT set_config('role', $1, false), set_config('stoflow.tenant_id', $2, false)",
                    )
                    .bind(if tenant.is_some() { SELLER_ROLE } else { "none" })
                    .bind(tenant.map(|t| t.to_string()).unwrap_or_default())
                    .execute(&mut *conn)
                    .await;
                    return Ok(set.is_ok());
                }
                if meta.idle_for >= CHECK_IDLE_AFTER {
                    use sqlx::Connection as _;
                    return Ok(conn.ping().await.is_ok());
                }
                Ok(true)
            })
        })
        .connect_with(opts)
        .await
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether every migration this build knows has been applied (readiness).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(v) => v,
            // No migrations table yet: nothing applied.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P01") => {
                vec![]
            }
            Err(e) => return Err(e),
        };
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
    spec: &PoolSpec,
) -> Result<PgPool, StartError> {
    let url = settings.database_url()?;
    // Migrations run on a pool of the owner's: a seller-scoped acquire must not apply them.
    let owner = connect_with(url, 2, &PoolSpec::WORKER)
        .await
        .map_err(StartError::Connect)?;
    migrate(&owner).await?;
    owner.close().await;
    connect_with(url, settings.database.max_connections, spec)
        .await
        .map_err(StartError::Connect)
}

/// [`connect_migrated`], waiting for the database while it cannot be reached (a process started
/// before Postgres, or restarted during an outage, comes up when Postgres does).
pub async fn connect_migrated_waiting(
    settings: &crate::Settings,
    spec: &PoolSpec,
) -> Result<PgPool, StartError> {
    let mut wait = Duration::from_millis(200);
    loop {
        // A quick probe first: building the pool against a dead server waits out the whole
        // acquire timeout (10 s for workers), which would delay the restart after an outage.
        let probe = match settings.database_url() {
            Ok(url) => tokio::time::timeout(Duration::from_secs(1), async {
                use sqlx::Connection as _;
                sqlx::PgConnection::connect(url).await?.close().await
            })
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut)),
            Err(e) => return Err(e.into()),
        };
        let result = match probe {
            Err(e) if is_unavailable(&e) => Err(StartError::Connect(e)),
            _ => connect_migrated(settings, spec).await,
        };
        match result {
            Err(StartError::Connect(e)) if is_unavailable(&e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "database unreachable; waiting for it");
            }
            Err(StartError::Migrate(sqlx::migrate::MigrateError::Execute(e)))
                if is_unavailable(&e) =>
            {
                tracing::warn!(error = %e, "database went away while migrating; waiting for it");
            }
            other => return other,
        }
        tokio::time::sleep(wait).await;
        // Short steps: processing should resume within a second or two of the database's return.
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}
