//! The queue table seen from outside a worker: enqueue (single, batch, bulk), read, retry, cancel,
//! statistics, retention, and the coalescing wake-up notifier.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::mpsc;

/// LISTEN/NOTIFY channel; the payload is the kind that has new work.
pub const CHANNEL: &str = "stoflow_jobs";
/// LISTEN/NOTIFY channel of operator switches (pause/resume); the payload is the kind.
pub const CONTROL_CHANNEL: &str = "stoflow_control";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("job not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
}

/// A job as seen by people: the stored state refined by run time and attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum JobState {
    /// Waiting for a run time in the future (first run).
    Scheduled,
    /// Ready to run, not yet claimed.
    Pending,
    Running,
    /// Failed at least once, waiting for its next run.
    Retrying,
    Done,
    /// Failed permanently or out of attempts.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        Self::Scheduled,
        Self::Pending,
        Self::Running,
        Self::Retrying,
        Self::Done,
        Self::Dead,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Done => "done",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// SQL condition (on table alias `j`) selecting rows in this state.
    pub fn sql_condition(self) -> &'static str {
        self.sql()
    }

    fn sql(self) -> &'static str {
        match self {
            Self::Scheduled => "(j.state = 'available' AND j.attempt = 0 AND j.run_at > now())",
            Self::Pending => "(j.state = 'available' AND j.attempt = 0 AND j.run_at <= now())",
            Self::Retrying => "(j.state = 'available' AND j.attempt > 0)",
            Self::Running => "(j.state = 'running')",
            Self::Done => "(j.state = 'done')",
            Self::Dead => "(j.state = 'dead')",
            Self::Cancelled => "(j.state = 'cancelled')",
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub args: Value,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub snoozes: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub idempotency_key: Option<String>,
    pub result: Option<Value>,
    pub last_error: Option<Value>,
    pub errors: Value,
}

impl JobRow {
    pub fn public_state(&self, now: DateTime<Utc>) -> JobState {
        match self.state.as_str() {
            "running" => JobState::Running,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            _ if self.attempt > 0 => JobState::Retrying,
            _ if self.run_at > now => JobState::Scheduled,
            _ => JobState::Pending,
        }
    }
}

const COLUMNS: &str = "j.id, j.kind, j.state, j.args, j.priority, j.attempt, j.max_attempts, j.snoozes, \
     j.run_at, j.created_at, j.attempted_at, j.finished_at, j.locked_by, j.idempotency_key, \
     j.result, j.last_error, j.errors";

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: &'static str,
    pub args: Value,
    pub priority: i16,
    /// None: now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// A job of kind `J` to run now with its policy's attempts (`overrides`: `[kinds.*]`).
    pub fn of<J: crate::Job>(
        job: &J,
        overrides: &std::collections::BTreeMap<String, crate::settings::PolicyOverride>,
        key: Option<String>,
    ) -> Self {
        Self {
            kind: J::KIND,
            args: serde_json::to_value(job).expect("job args serialize"),
            priority: 0,
            run_at: None,
            max_attempts: J::POLICY.resolved(J::KIND, overrides).max_attempts,
            idempotency_key: key,
        }
    }
}

/// Wakes workers for jobs inserted outside the API (follow-up jobs, schedules): one NOTIFY per
/// kind, after the inserting transaction committed.
pub async fn wake(pool: &PgPool, kinds: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k")
        .bind(CHANNEL)
        .bind(kinds)
        .execute(pool)
        .await
        .map(drop)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub id: i64,
    /// False when the idempotency key named a job that already existed.
    pub created: bool,
}

/// Inserts jobs in the caller's transaction (so they commit with the domain write, or not at all).
/// Jobs without an idempotency key go in one multi-row INSERT; keyed jobs one by one, each
/// answering with the existing job when its key is taken. Call [`Notifier::poke`] after commit.
pub async fn insert(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<Inserted>, QueueError> {
    insert_for(conn, None, jobs).await
}

/// [`insert`] on behalf of `tenant` (the caller's; None: a system job only ops users see).
pub async fn insert_for(
    conn: &mut PgConnection,
    tenant: Option<i64>,
    jobs: &[NewJob],
) -> Result<Vec<Inserted>, QueueError> {
    let mut out = vec![
        Inserted {
            id: 0,
            created: true
        };
        jobs.len()
    ];
    let plain: Vec<usize> = (0..jobs.len())
        .filter(|i| jobs[*i].idempotency_key.is_none())
        .collect();
    if !plain.is_empty() {
        let ids = bulk_insert_for(conn, tenant, plain.iter().map(|i| &jobs[*i])).await?;
        for (slot, id) in plain.iter().zip(ids) {
            out[*slot].id = id;
        }
    }
    for (i, job) in jobs.iter().enumerate() {
        if let Some(key) = &job.idempotency_key {
            out[i] = insert_keyed(conn, tenant, job, key).await?;
        }
    }
    Ok(out)
}

/// One multi-row INSERT over arrays (a handful of parameters whatever the row count).
/// Returns ids in input order: RETURNING follows the order of the ordered SELECT feeding it.
pub async fn bulk_insert<'a>(
    conn: &mut PgConnection,
    jobs: impl Iterator<Item = &'a NewJob>,
) -> Result<Vec<i64>, QueueError> {
    bulk_insert_for(conn, None, jobs).await
}

pub async fn bulk_insert_for<'a>(
    conn: &mut PgConnection,
    tenant: Option<i64>,
    jobs: impl Iterator<Item = &'a NewJob>,
) -> Result<Vec<i64>, QueueError> {
    let trace = crate::telemetry::current_trace_id();
    insert_rows(&mut *conn, jobs.map(|j| (j, tenant, trace.as_deref()))).await
}

/// The one multi-row INSERT behind [`bulk_insert_for`] and [`crate::coalesce`]: each row with its
/// own tenant and trace id. Returns ids in input order (RETURNING follows the ordered SELECT).
pub async fn insert_rows<'a>(
    conn: impl sqlx::PgExecutor<'_>,
    rows: impl Iterator<Item = (&'a NewJob, Option<i64>, Option<&'a str>)>,
) -> Result<Vec<i64>, QueueError> {
    let (mut kinds, mut args, mut prios, mut runs, mut maxes, mut tenants, mut traces) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (j, tenant, trace) in rows {
        kinds.push(j.kind);
        args.push(&j.args);
        prios.push(j.priority);
        runs.push(j.run_at);
        maxes.push(j.max_attempts);
        tenants.push(tenant);
        traces.push(trace);
    }
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO jobs (kind, args, priority, run_at, max_attempts, trace_id, tenant_id)
         SELECT k, a, p, coalesce(r, now()), m, t, tn
           FROM unnest($1::text[], $2::jsonb[], $3::smallint[], $4::timestamptz[], $5::int[],
                       $6::text[], $7::bigint[])
                WITH ORDINALITY AS u(k, a, p, r, m, t, tn, ord)
          ORDER BY ord
         RETURNING id",
    )
    .bind(&kinds)
    .bind(&args)
    .bind(&prios)
    .bind(&runs)
    .bind(&maxes)
    .bind(&traces)
    .bind(&tenants)
    .fetch_all(conn)
    .await?;
    Ok(ids)
}

async fn insert_keyed(
    conn: &mut PgConnection,
    tenant: Option<i64>,
    job: &NewJob,
    key: &str,
) -> Result<Inserted, QueueError> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO jobs (kind, args, priority, run_at, max_attempts, idempotency_key, trace_id, tenant_id)
         VALUES ($1, $2, $3, coalesce($4, now()), $5, $6, $7, $8)
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(job.kind)
    .bind(&job.args)
    .bind(job.priority)
    .bind(job.run_at)
    .bind(job.max_attempts)
    .bind(key)
    .bind(crate::telemetry::current_trace_id())
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = id {
        return Ok(Inserted { id, created: true });
    }
    let existing: Option<(i64, String, Value, Option<i64>)> =
        sqlx::query_as("SELECT id, kind, args, tenant_id FROM jobs WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    match existing {
        // Keys are unique across tenants: another tenant's job is neither returned nor named.
        Some((.., owner)) if owner != tenant => Err(QueueError::Conflict(format!(
            "idempotency key {key:?} is taken; choose another"
        ))),
        Some((id, kind, args, _)) if kind == job.kind && args == job.args => {
            Ok(Inserted { id, created: false })
        }
        Some((id, ..)) => Err(QueueError::Conflict(format!(
            "idempotency key {key:?} was used for job {id} with a different kind or arguments"
        ))),
        // The key's job was deleted between the two statements (retention): rare; ask to retry.
        None => Err(QueueError::Conflict(format!(
            "idempotency key {key:?} is being reused; retry the request"
        ))),
    }
}

pub async fn get(pool: &PgPool, id: i64) -> Result<JobRow, QueueError> {
    get_for(pool, None, id).await
}

/// A job; with `tenant`, only that tenant's (another tenant's job is NotFound).
pub async fn get_for(pool: &PgPool, tenant: Option<i64>, id: i64) -> Result<JobRow, QueueError> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs j WHERE j.id = $1 AND ($2::bigint IS NULL OR j.tenant_id = $2)"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    .ok_or(QueueError::NotFound)
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub kind: Option<String>,
    pub state: Option<JobState>,
    /// Keyset cursor: only ids below this one (newest first).
    pub before_id: Option<i64>,
    pub limit: u32,
    /// Only this tenant's jobs (sellers always; ops when they ask).
    pub tenant: Option<i64>,
}

/// Newest first, keyset-paginated by id.
pub async fn list(pool: &PgPool, f: &ListFilter) -> Result<Vec<JobRow>, QueueError> {
    let state = f.state.map(JobState::sql).unwrap_or("true");
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs j
          WHERE ($1::text IS NULL OR j.kind = $1) AND ($2::bigint IS NULL OR j.id < $2) AND {state}
            AND ($4::bigint IS NULL OR j.tenant_id = $4)
          ORDER BY j.id DESC LIMIT $3"
    )))
    .bind(&f.kind)
    .bind(f.before_id)
    .bind(i64::from(f.limit))
    .bind(f.tenant)
    .fetch_all(pool)
    .await
    .map_err(Into::into)
}

/// Runs a dead or cancelled job again now, granting one more attempt if it had used them all.
pub async fn retry(pool: &PgPool, id: i64) -> Result<JobRow, QueueError> {
    retry_for(pool, None, id).await
}

/// [`retry`] of one of `tenant`'s jobs (None: any job).
pub async fn retry_for(pool: &PgPool, tenant: Option<i64>, id: i64) -> Result<JobRow, QueueError> {
    transition(
        pool,
        tenant,
        id,
        "state = 'available', run_at = now(), finished_at = NULL, result = NULL,
         max_attempts = greatest(j.max_attempts, j.attempt + 1)",
        "j.state IN ('dead', 'cancelled')",
        "only dead or cancelled jobs can be retried",
    )
    .await
}

/// Cancels a job that has not started (scheduled, pending or retrying); it will never run.
pub async fn cancel(pool: &PgPool, id: i64) -> Result<JobRow, QueueError> {
    cancel_for(pool, None, id).await
}

/// [`cancel`] of one of `tenant`'s jobs (None: any job).
pub async fn cancel_for(pool: &PgPool, tenant: Option<i64>, id: i64) -> Result<JobRow, QueueError> {
    transition(
        pool,
        tenant,
        id,
        "state = 'cancelled', finished_at = now()",
        "j.state = 'available'",
        "only scheduled, pending or retrying jobs can be cancelled",
    )
    .await
}

/// Cancels those of `ids` still waiting, in the caller's transaction (running or finished ones
/// are left alone). Returns how many were cancelled.
pub async fn cancel_waiting(conn: &mut PgConnection, ids: &[i64]) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE id = ANY($1) AND state = 'available'",
    )
    .bind(ids)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// Applies `set` to job `id` if it is in a state matching `allowed`; otherwise a conflict that
/// says which state it is in and `rule`. (Both SQL fragments are constants of this module.)
async fn transition(
    pool: &PgPool,
    tenant: Option<i64>,
    id: i64,
    set: &str,
    allowed: &str,
    rule: &str,
) -> Result<JobRow, QueueError> {
    let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE jobs j SET {set}
          WHERE j.id = $1 AND ($2::bigint IS NULL OR j.tenant_id = $2) AND {allowed}
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(r) => Ok(r),
        None => {
            let state = get_for(pool, tenant, id).await?.public_state(Utc::now());
            Err(QueueError::Conflict(format!(
                "job {id} is {}; {rule}",
                state.as_str()
            )))
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct KindStats {
    pub kind: String,
    pub scheduled: i64,
    pub pending: i64,
    pub running: i64,
    pub retrying: i64,
    pub done: i64,
    pub dead: i64,
    pub cancelled: i64,
    /// True when a done, dead or cancelled count is over 1,000 and estimated from statistics
    /// (waiting and running counts are always exact).
    pub counts_estimated: bool,
    /// Age in seconds of the oldest job ready to run and not yet claimed.
    pub oldest_pending_age_s: Option<f64>,
    /// Paused kinds are not fetched by any worker process.
    pub paused: bool,
}

/// Counts per kind and state. Every known kind appears, with zeros when it has no jobs.
///
/// Bounded by the backlog, not the retained history: waiting and running rows are counted
/// exactly on their partial indexes; done, dead and cancelled are counted exactly up to
/// [`EXACT_COUNT_CAP`] per kind and state (a capped index-only scan), and beyond that estimated
/// from the `(kind, state)` statistics ANALYZE keeps (`counts_estimated` is then true).
pub async fn stats(pool: &PgPool, kinds: &[&str]) -> Result<Vec<KindStats>, QueueError> {
    sqlx::query_as(
        "WITH waiting AS (
            SELECT j.kind,
                   count(*) FILTER (WHERE j.attempt = 0 AND j.run_at > now()) AS scheduled,
                   count(*) FILTER (WHERE j.attempt = 0 AND j.run_at <= now()) AS pending,
                   count(*) FILTER (WHERE j.attempt > 0) AS retrying,
                   min(j.run_at) FILTER (WHERE j.run_at <= now()) AS oldest
              FROM jobs j WHERE j.state = 'available' GROUP BY j.kind),
         running AS (
            SELECT j.kind, count(*) AS running FROM jobs j WHERE j.state = 'running' GROUP BY j.kind),
         estimated AS (
            SELECT e.most_common_vals[i][1] AS kind, e.most_common_vals[i][2] AS state,
                   (e.most_common_freqs[i] * greatest(c.reltuples, 0))::bigint AS n
              FROM pg_stats_ext e CROSS JOIN LATERAL generate_subscripts(e.most_common_freqs, 1) AS i,
                   pg_class c
             WHERE e.statistics_name = 'jobs_kind_state_stats' AND c.oid = 'jobs'::regclass),
         finished AS (
            -- The literal IN lets the planner prove the partial index (state, kind, id) applies.
            SELECT k.kind, s.state,
                   (SELECT count(*) FROM (SELECT 1 FROM jobs j WHERE j.state = s.state AND j.kind = k.kind
                                             AND j.state IN ('done', 'dead', 'cancelled')
                                           LIMIT $2 + 1) x) AS exact
              FROM unnest($1::text[]) AS k(kind),
                   unnest(ARRAY['done', 'dead', 'cancelled']) AS s(state)),
         counted AS (
            SELECT f.kind, f.state, f.exact > $2 AS capped,
                   CASE WHEN f.exact > $2 THEN greatest(f.exact, coalesce(e.n, 0)) ELSE f.exact END AS n
              FROM finished f LEFT JOIN estimated e ON e.kind = f.kind AND e.state = f.state),
         other AS (
            SELECT kind, sum(n) FILTER (WHERE state = 'done')::bigint AS done,
                   sum(n) FILTER (WHERE state = 'dead')::bigint AS dead,
                   sum(n) FILTER (WHERE state = 'cancelled')::bigint AS cancelled,
                   bool_or(capped) AS estimated
              FROM counted GROUP BY kind)
         SELECT k.kind,
                coalesce(w.scheduled, 0) AS scheduled, coalesce(w.pending, 0) AS pending,
                coalesce(r.running, 0) AS running, coalesce(w.retrying, 0) AS retrying,
                coalesce(o.done, 0) AS done, coalesce(o.dead, 0) AS dead,
                coalesce(o.cancelled, 0) AS cancelled,
                coalesce(o.estimated, false) AS counts_estimated,
                extract(epoch FROM now() - w.oldest)::float8 AS oldest_pending_age_s,
                coalesce(c.paused, false) AS paused
           FROM unnest($1::text[]) AS k(kind)
           LEFT JOIN waiting w ON w.kind = k.kind
           LEFT JOIN running r ON r.kind = k.kind
           LEFT JOIN other o ON o.kind = k.kind
           LEFT JOIN kind_controls c ON c.kind = k.kind
          ORDER BY k.kind",
    )
    .bind(kinds)
    .bind(EXACT_COUNT_CAP)
    .fetch_all(pool)
    .await
    .map_err(Into::into)
}

/// Done, dead and cancelled jobs per kind counted exactly up to this many; estimated beyond.
pub const EXACT_COUNT_CAP: i64 = 1_000;

/// Pauses or resumes a kind for every worker process, which hear it at once (NOTIFY) or at
/// their next heartbeat. Running jobs finish; a paused kind's jobs wait, nothing is lost.
pub async fn set_paused(
    pool: &PgPool,
    kind: &str,
    paused: bool,
    reason: Option<&str>,
) -> Result<(), QueueError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO kind_controls (kind, paused, reason) VALUES ($1, $2, $3)
         ON CONFLICT (kind) DO UPDATE SET paused = $2, reason = $3, changed_at = now()",
    )
    .bind(kind)
    .bind(paused)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CONTROL_CHANNEL)
        .bind(kind)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn paused_kinds(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT kind FROM kind_controls WHERE paused")
        .fetch_all(pool)
        .await
}

/// Deletes up to `batch` rows per statement of `state` finished more than `hours` ago, until none
/// are left. Returns how many were deleted.
pub async fn prune(pool: &PgPool, state: &str, hours: u32, batch: u32) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM jobs WHERE id = ANY(ARRAY(
                SELECT id FROM jobs WHERE state = $1 AND finished_at < now() - make_interval(hours => $2)
                 LIMIT $3))",
        )
        .bind(state)
        .bind(hours as i32)
        .bind(i64::from(batch))
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < u64::from(batch) {
            return Ok(total);
        }
    }
}

/// Sends NOTIFYs outside the transactions that caused them: a NOTIFY inside every enqueue
/// transaction would serialise enqueue commits on Postgres' notify lock. Items that arrive while
/// one NOTIFY is in flight are coalesced into the next one.
///
/// Two uses: [`Notifier::spawn`] wakes idle workers (channel [`CHANNEL`], one payload per kind);
/// [`Notifier::job_events`] tells listeners (the API's live job status) which jobs changed
/// (channel [`EVENTS_CHANNEL`], payloads of comma-separated ids under Postgres' 8000-byte limit).
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::UnboundedSender<String>,
}

/// LISTEN/NOTIFY channel of job state changes; the payload is a comma-separated list of ids.
pub const EVENTS_CHANNEL: &str = "stoflow_job_events";

impl Notifier {
    /// Wakes the fetchers of a kind: `poke(kind)`.
    pub fn spawn(pool: PgPool) -> Self {
        Self::start(pool, CHANNEL, false)
    }

    /// Announces job state changes: `changed(ids)`.
    pub fn job_events(pool: PgPool) -> Self {
        Self::start(pool, EVENTS_CHANNEL, true)
    }

    fn start(pool: PgPool, channel: &'static str, join: bool) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = BTreeSet::from([first]);
                while let Ok(k) = rx.try_recv() {
                    items.insert(k);
                }
                let payloads = if join {
                    joined(items)
                } else {
                    items.into_iter().collect()
                };
                let res = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                    .bind(channel)
                    .bind(&payloads)
                    .execute(&pool)
                    .await;
                if let Err(e) = res {
                    // Workers still poll and live status re-reads; a lost notification only delays.
                    tracing::warn!(error = %e, channel, "notify failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self { tx }
    }

    pub fn poke(&self, kind: &'static str) {
        let _ = self.tx.send(kind.to_string());
    }

    pub fn changed(&self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            let _ = self.tx.send(id.to_string());
        }
    }
}

/// Joins items with commas into payloads of at most 7,000 bytes.
fn joined(items: BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for i in items {
        match out.last_mut() {
            Some(p) if p.len() + i.len() < 7_000 => {
                p.push(',');
                p.push_str(&i);
            }
            _ => out.push(i),
        }
    }
    out
}
