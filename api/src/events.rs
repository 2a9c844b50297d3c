//! Live job status: one LISTEN connection per API process fans job-change notifications out to
//! every open event stream (no polling loop per client); another wakes long-polling extensions.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

/// Starts the listener of `channel` (payloads: comma-separated ids); subscribe to the returned
/// sender for the ids: changed jobs on [`engine::queue::EVENTS_CHANNEL`], accounts with a new plugin task on
/// [`jobs::plugin::WAKEUP_CHANNEL`].
pub fn spawn_listener(pool: PgPool, channel: &'static str) -> broadcast::Sender<i64> {
    let (tx, _) = broadcast::channel(8192);
    let out = tx.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = listen(&pool, channel, &tx).await {
                tracing::warn!(error = %e, channel, "listener lost; reconnecting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    out
}

async fn listen(
    pool: &PgPool,
    channel: &str,
    tx: &broadcast::Sender<i64>,
) -> Result<(), sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    l.listen(channel).await?;
    loop {
        let n = l.recv().await?;
        for id in n.payload().split(',').filter_map(|s| s.parse::<i64>().ok()) {
            // No subscriber is fine: nobody is watching.
            let _ = tx.send(id);
        }
    }
}

/// A job's new state, as sent on the per-tenant stream `GET /v1/events`.
#[derive(Debug, Clone, poem_openapi::Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobChange {
    pub id: i64,
    pub kind: String,
    pub state: engine::queue::JobState,
    pub attempt: i32,
    /// The owning tenant (None: system jobs, seen by ops only); streams are filtered on it.
    #[oai(skip)]
    pub tenant: Option<i64>,
}

/// What one stream receives: a caller's tenant (set by auth) and an optional kind.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// None: every tenant (ops); a seller's own tenant otherwise.
    pub tenant: Option<i64>,
    pub kind: Option<String>,
}

impl Scope {
    pub fn admits(&self, c: &JobChange) -> bool {
        self.tenant.is_none_or(|t| c.tenant == Some(t))
            && self.kind.as_deref().is_none_or(|k| c.kind == k)
    }
}

/// Resolves changed ids into [`JobChange`]s once per batch for every open stream (one query per
/// batch whatever the number of clients; none while nobody listens).
pub fn spawn_feed(
    pool: PgPool,
    ids: &broadcast::Sender<i64>,
) -> broadcast::Sender<std::sync::Arc<Vec<JobChange>>> {
    use broadcast::error::RecvError;
    let (tx, _) = broadcast::channel(1024);
    let out = tx.clone();
    let mut rx = ids.subscribe();
    tokio::spawn(async move {
        loop {
            let first = match rx.recv().await {
                Ok(id) => id,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            let mut batch = vec![first];
            while batch.len() < 5_000 {
                match rx.try_recv() {
                    Ok(id) => batch.push(id),
                    Err(_) => break,
                }
            }
            if tx.receiver_count() == 0 {
                continue;
            }
            batch.sort_unstable();
            batch.dedup();
            #[derive(sqlx::FromRow)]
            struct Changed {
                #[sqlx(flatten)]
                row: engine::queue::JobRow,
                tenant_id: Option<i64>,
            }
            let rows: Result<Vec<Changed>, _> = sqlx::query_as(
                "SELECT j.id, j.kind, j.state, j.args, j.priority, j.attempt, j.max_attempts,
                        j.snoozes, j.run_at, j.created_at, j.attempted_at, j.finished_at,
                        j.locked_by, j.idempotency_key, NULL::jsonb AS result,
                        NULL::jsonb AS last_error, '[]'::jsonb AS errors, j.tenant_id
                   FROM jobs j WHERE j.id = ANY($1) ORDER BY j.id",
            )
            .bind(&batch)
            .fetch_all(&pool)
            .await;
            match rows {
                Ok(rows) => {
                    let now = chrono::Utc::now();
                    let changes = rows
                        .into_iter()
                        .map(|c| JobChange {
                            state: c.row.public_state(now),
                            id: c.row.id,
                            kind: c.row.kind,
                            attempt: c.row.attempt,
                            tenant: c.tenant_id,
                        })
                        .collect::<Vec<_>>();
                    let _ = tx.send(std::sync::Arc::new(changes));
                }
                Err(e) => tracing::warn!(error = %e, "reading changed jobs failed"),
            }
        }
    });
    out
}
