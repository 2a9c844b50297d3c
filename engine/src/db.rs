//! Pools, and the engine's tables (`engine/migrations`). An application with tables of its own
//! runs one migrator over both folders (see [`with_engine`]).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The engine's tables alone.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// One migrator for the engine's tables and an application's (`app`), applied in version
/// order. Both sets share sqlx's `_sqlx_migrations` table.
pub fn with_engine(app: &Migrator) -> Migrator {
    Migrator::with_migrations(MIGRATOR.iter().chain(app.iter()).cloned().collect())
}

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url, max_connections, &PoolSpec::WORKER).await
}

/// Run-time parameter names and values (`set_config`), for [`PoolSpec::session`].
pub type SessionParams = Vec<(&'static str, String)>;

/// How a process's pool is set up.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    /// Shown in `pg_stat_activity`.
    pub application_name: &'static str,
    /// Plan every execution with its real parameters (see [`connect_with`]).
    pub custom_plans: bool,
    /// How long a caller waits for a connection; the API keeps it short so that a database
    /// outage is a quick 503, not a hung request.
    pub acquire_timeout: Duration,
    /// Run-time parameters (`set_config`, e.g. a role and the owner row-level security reads)
    /// each acquire gives the connection, read from the acquiring task; see [`connect_with`].
    pub session: Option<fn() -> SessionParams>,
}

impl PoolSpec {
    /// Workers, the scheduler and tools: the owner's role, a patient acquire.
    pub const WORKER: Self = Self {
        application_name: "engine",
        custom_plans: true,
        acquire_timeout: Duration::from_secs(10),
        session: None,
    };
}

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
/// `session`: each acquire sets the parameters it returns (all of them, every time: a pooled
/// connection keeps what the previous task set) in one statement that also proves the
/// connection alive.
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    spec: &PoolSpec,
) -> Result<PgPool, sqlx::Error> {
    let mut opts: PgConnectOptions = url.parse()?;
    opts = opts.application_name(spec.application_name);
    if spec.custom_plans {
        opts = opts.options([("plan_cache_mode", "force_custom_plan")]);
    }
    let session = spec.session;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(spec.acquire_timeout)
        // No ping before each use: it is a round trip on every acquire (a quarter of an enqueue's
        // cost). Only a connection idle for a while is pinged first (a dead one is then replaced,
        // not handed out); the API's pool checks every connection with its role/tenant statement.
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if let Some(session) = session {
                    let (names, values): (Vec<&str>, Vec<String>) = session().into_iter().unzip();
                    let set = sqlx::query(
                        "SELECT set_config(n, v, false) FROM unnest($1::text[], $2::text[]) AS p(n, v)",
                    )
                    .bind(names)
                    .bind(values)
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

/// Whether every migration of `migrator` has been applied (readiness).
pub async fn migrations_applied(pool: &PgPool, migrator: &Migrator) -> Result<bool, sqlx::Error> {
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
    Ok(migrator.iter().all(|m| applied.contains(&m.version)))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::settings::Invalid),
    #[error("cannot connect to Postgres (database.url / DATABASE_URL): {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool on the configured database, migrated by `migrator`: what every process does at start.
pub async fn connect_migrated(
    settings: &crate::Settings,
    spec: &PoolSpec,
    migrator: &Migrator,
) -> Result<PgPool, StartError> {
    let url = settings.database_url()?;
    // Migrations run on a pool of the owner's: a seller-scoped acquire must not apply them.
    let owner = connect_with(url, 2, &PoolSpec::WORKER)
        .await
        .map_err(StartError::Connect)?;
    migrator.run(&owner).await?;
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
    migrator: &Migrator,
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
            _ => connect_migrated(settings, spec, migrator).await,
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
