//! Queries behind the ops dashboard. Every one is bounded by an index, so pages stay fast with a
//! million retained jobs: counts are index-only scans of `jobs_state_kind_id_idx`, lists are
//! keyset pages that stop after `limit` rows, the last-hour charts walk `jobs_finished_idx` from
//! an hour ago, and a text search scans a bounded window of ids per request.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool};

use engine::queue::{JobRow, JobState, QueueError};

/// Ids a text search examines per request; a page with fewer matches says where it stopped.
pub const TEXT_WINDOW: i64 = 50_000;
/// Most recent finished runs the percentiles are computed over.
const PERCENTILE_SAMPLE: i64 = 10_000;
/// Most ids a bulk action announces on the live-status channel (the dashboard re-reads anyway).
pub const BULK_NOTIFY_MAX: usize = 10_000;
const BULK_BATCH: i64 = 5_000;

/// One minute of the last hour.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct MinutePoint {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    pub kind: String,
    pub done: i64,
    pub dead: i64,
}

/// Run-time and start-latency percentiles of one kind over its most recent finished runs.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct Percentiles {
    pub kind: String,
    /// Runs the figures are computed over (the last hour, at most 10,000).
    pub runs: i64,
    pub run_p50_ms: Option<f64>,
    pub run_p95_ms: Option<f64>,
    pub run_p99_ms: Option<f64>,
    pub start_p50_ms: Option<f64>,
    pub start_p95_ms: Option<f64>,
    pub start_p99_ms: Option<f64>,
}

/// Done and dead per minute and kind over the last hour (minutes without runs are absent).
pub async fn throughput(pool: &PgPool) -> Result<Vec<MinutePoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT date_trunc('minute', finished_at) AS minute, kind,
                count(*) FILTER (WHERE state = 'done') AS done,
                count(*) FILTER (WHERE state = 'dead') AS dead
           FROM jobs
          WHERE state IN ('done', 'dead', 'cancelled') AND finished_at > now() - interval '1 hour'
          GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
}

/// Percentiles per kind over runs finished in the last hour (the newest 10,000 at most).
/// Run time: claim to finish of the last attempt; start latency: due to claimed.
pub async fn percentiles(pool: &PgPool) -> Result<Vec<Percentiles>, sqlx::Error> {
    sqlx::query_as(
        "WITH recent AS (
            SELECT kind,
                   extract(epoch FROM finished_at - attempted_at) * 1000 AS run_ms,
                   extract(epoch FROM attempted_at - run_at) * 1000 AS start_ms
              FROM jobs
             WHERE state IN ('done', 'dead', 'cancelled') AND finished_at > now() - interval '1 hour'
               AND attempted_at IS NOT NULL
             ORDER BY finished_at DESC LIMIT $1)
         SELECT kind, count(*) AS runs,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY run_ms)::float8 AS run_p50_ms,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY run_ms)::float8 AS run_p95_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY run_ms)::float8 AS run_p99_ms,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY greatest(start_ms, 0))::float8 AS start_p50_ms,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY greatest(start_ms, 0))::float8 AS start_p95_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY greatest(start_ms, 0))::float8 AS start_p99_ms
           FROM recent GROUP BY kind ORDER BY kind",
    )
    .bind(PERCENTILE_SAMPLE)
    .fetch_all(pool)
    .await
}

/// A worker process as the dashboard shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub kinds: Vec<String>,
    /// Slots per kind.
    pub concurrency: Value,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub metrics_url: Option<String>,
    /// Jobs it holds right now.
    pub in_flight: i64,
    /// live; stopped (deregistered cleanly); dead (silent past the lease timeout).
    pub status: String,
}

/// Live and dead worker processes, live first, then by last heartbeat (at most 200).
pub async fn workers(
    pool: &PgPool,
    lease_timeout: std::time::Duration,
) -> Result<Vec<WorkerInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT w.id, w.host, w.pid, w.kinds, w.concurrency, w.started_at, w.heartbeat_at,
                w.stopped_at, w.metrics_url,
                (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.locked_by = w.id) AS in_flight,
                CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
                     WHEN w.heartbeat_at < now() - make_interval(secs => $1) THEN 'dead'
                     ELSE 'live' END AS status
           FROM workers w
          ORDER BY (w.stopped_at IS NULL AND w.heartbeat_at >= now() - make_interval(secs => $1)) DESC,
                   w.heartbeat_at DESC
          LIMIT 200",
    )
    .bind(lease_timeout.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// What the jobs page filters on.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub kind: Option<String>,
    pub state: Option<JobState>,
    /// Matches a job id, its arguments, its idempotency key, trace id or last error message.
    pub text: Option<String>,
}

/// A page of jobs and where the next page starts.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<(JobRow, Option<String>)>,
    /// Ids below this one come next; None when the table is exhausted.
    pub next_before: Option<i64>,
}

const COLS: &str = "j.id, j.kind, j.state, j.args, j.priority, j.attempt, j.max_attempts, j.snoozes, \
     j.run_at, j.created_at, j.attempted_at, j.finished_at, j.locked_by, j.idempotency_key, \
     j.result, j.last_error, j.errors, j.trace_id";

#[derive(sqlx::FromRow)]
struct RowWithTrace {
    #[sqlx(flatten)]
    row: JobRow,
    trace_id: Option<String>,
}

/// Escapes LIKE wildcards so the text is matched literally.
fn like_pattern(t: &str) -> String {
    let esc = t
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{esc}%")
}

/// The WHERE conditions of a filter ($1 kind, $2 text pattern, $3 exact text), on alias `j`.
fn conditions(f: &JobFilter, with_kind: bool) -> Vec<String> {
    let mut c = vec![];
    if with_kind && f.kind.is_some() {
        c.push("j.kind = $1".to_string());
    }
    if let Some(s) = f.state {
        c.push(s.sql_condition().to_string());
    }
    if f.text.is_some() {
        c.push(
            "(j.args::text ILIKE $2 OR j.idempotency_key ILIKE $2 OR j.trace_id = $3
              OR j.last_error->>'message' ILIKE $2 OR j.id::text = $3)"
                .to_string(),
        );
    }
    c
}

/// Newest first, keyset-paginated. Without text every page is one ordered index scan (by kind,
/// by state and kind, or the primary key) that stops after `limit` rows; with text each request
/// examines at most [`TEXT_WINDOW`] ids, so a rare match costs pages, not a full scan.
pub async fn list(
    pool: &PgPool,
    f: &JobFilter,
    kinds: &[&str],
    before_id: Option<i64>,
    limit: u32,
) -> Result<Page, QueueError> {
    let before = match before_id {
        Some(b) => b,
        None => {
            let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM jobs")
                .fetch_one(pool)
                .await?;
            max.unwrap_or(0) + 1
        }
    };
    let floor = if f.text.is_some() {
        (before - TEXT_WINDOW).max(0)
    } else {
        0
    };
    let text = f.text.as_deref().unwrap_or("");
    let mut cond = conditions(f, true);
    cond.push("j.id < $4 AND j.id >= $5".into());
    // A state without a kind: one ordered index scan per kind on (state, kind, id), merged.
    // A kind without a state: one per state, merged (states are literals so that the partial
    // index applies; running rows come from their own index).
    let sql = if f.state.is_none() && f.kind.is_some() {
        let parts: Vec<String> = ["available", "running", "done", "dead", "cancelled"]
            .iter()
            .map(|s| {
                format!(
                    "(SELECT {COLS} FROM jobs j WHERE j.state = '{s}' AND {} ORDER BY j.id DESC LIMIT $6)",
                    cond.join(" AND ")
                )
            })
            .collect();
        format!(
            "SELECT * FROM ({}) j ORDER BY j.id DESC LIMIT $6",
            parts.join(" UNION ALL ")
        )
    } else if f.state.is_some() && f.kind.is_none() {
        let mut inner = conditions(f, false);
        inner.push("j.kind = k.kind AND j.id < $4 AND j.id >= $5".into());
        format!(
            "SELECT j.* FROM unnest($7::text[]) AS k(kind) CROSS JOIN LATERAL (
                 SELECT {COLS} FROM jobs j WHERE {} ORDER BY j.id DESC LIMIT $6) j
              ORDER BY j.id DESC LIMIT $6",
            inner.join(" AND ")
        )
    } else {
        format!(
            "SELECT {COLS} FROM jobs j WHERE {} ORDER BY j.id DESC LIMIT $6",
            cond.join(" AND ")
        )
    };
    let rows: Vec<RowWithTrace> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(&f.kind)
        .bind(like_pattern(text))
        .bind(text)
        .bind(before)
        .bind(floor)
        .bind(i64::from(limit))
        .bind(kinds)
        .fetch_all(pool)
        .await?;
    let full = rows.len() == limit as usize;
    let next_before = if full {
        rows.last().map(|r| r.row.id)
    } else if floor > 0 {
        Some(floor)
    } else {
        None
    };
    Ok(Page {
        rows: rows.into_iter().map(|r| (r.row, r.trace_id)).collect(),
        next_before,
    })
}

/// The trace id a job was enqueued with.
pub async fn trace_id(pool: &PgPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT trace_id FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
}

/// The listing and marketplace account a job concerns, read from its arguments
/// (`product_id` + `marketplace`, `account_id`). Tokens are never read.
pub async fn related(
    pool: &PgPool,
    args: &Value,
) -> Result<(Option<Value>, Option<Value>), sqlx::Error> {
    let listing = match (
        args.get("product_id").and_then(Value::as_i64),
        args.get("marketplace").and_then(Value::as_str),
    ) {
        (Some(p), Some(m)) => {
            sqlx::query_scalar(
                "SELECT jsonb_build_object('id', id, 'product_id', product_id, 'marketplace', marketplace,
                        'account_id', account_id, 'sku', sku, 'remote_offer_id', remote_offer_id,
                        'remote_listing_id', remote_listing_id, 'status', status,
                        'last_error', last_error, 'published_at', published_at, 'updated_at', updated_at)
                   FROM listings WHERE product_id = $1 AND marketplace = $2",
            )
            .bind(p)
            .bind(m)
            .fetch_optional(pool)
            .await?
        }
        _ => None,
    };
    let account_id = args.get("account_id").and_then(Value::as_i64).or_else(|| {
        listing
            .as_ref()
            .and_then(|l: &Value| l.get("account_id"))
            .and_then(Value::as_i64)
    });
    let account = match account_id {
        Some(a) => {
            sqlx::query_scalar(ACCOUNT_JSON)
                .bind(a)
                .fetch_optional(pool)
                .await?
        }
        None => None,
    };
    Ok((listing, account))
}

const ACCOUNT_JSON: &str = "SELECT jsonb_build_object('id', id, 'marketplace', marketplace,
        'external_user_id', external_user_id, 'shop_id', shop_id, 'status', status,
        'status_reason', status_reason, 'access_expires_at', access_expires_at,
        'refresh_expires_at', refresh_expires_at, 'scopes', scopes)
   FROM marketplace_accounts WHERE id = $1";

/// The marketplaces page: accounts with token expiry (never tokens), when each last received a
/// push and was last polled, whether a Vinted seller's extension is online; listings per status,
/// the most recent listing errors and marketplace failures (429s, 5xx, refusals), the plugin
/// tasks waiting per Vinted account, and the double-sell window of the last hour.
#[derive(Debug, Clone, Serialize)]
pub struct Marketplaces {
    pub accounts: Vec<Value>,
    pub listings: Vec<Value>,
    pub listing_errors: Vec<Value>,
    pub recent_errors: Vec<Value>,
    pub plugin_waiting: Vec<Value>,
    pub double_sell: Vec<Value>,
}

/// An extension that called within this long is online.
const EXTENSION_ONLINE: &str = "interval '3 minutes'";

/// What ops read of an error (SQL over the given class and message columns): our own database
/// failing reads "internal error (database)" (its raw text names tables and columns, and says
/// nothing about the marketplace).
fn error_message(class: &str, message: &str) -> String {
    format!("CASE WHEN {class} = 'database' THEN 'internal error (database)' ELSE {message} END")
}

pub async fn marketplaces(pool: &PgPool) -> Result<Marketplaces, sqlx::Error> {
    let rows = |sql: String| async move {
        sqlx::query_scalar::<_, Value>(AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
    };
    let last_seen = "(SELECT max(p.last_used_at) FROM plugin_tokens p
                       WHERE p.account_id = a.id AND p.revoked_at IS NULL)";
    Ok(Marketplaces {
        accounts: rows(format!(
            "SELECT jsonb_build_object('id', a.id, 'marketplace', a.marketplace, 'tenant_id', a.tenant_id,
                    'external_user_id', a.external_user_id, 'shop_id', a.shop_id, 'status', a.status,
                    'status_reason', a.status_reason, 'access_expires_at', a.access_expires_at,
                    'refresh_expires_at', a.refresh_expires_at, 'last_push_at', a.last_push_at,
                    'last_poll_at', a.last_poll_at,
                    'extension_online', CASE WHEN a.marketplace = 'vinted'
                        THEN coalesce({last_seen} > now() - {EXTENSION_ONLINE}, false) END)
               FROM marketplace_accounts a ORDER BY a.marketplace, a.id LIMIT 500"
        ))
        .await?,
        listings: rows(
            "SELECT jsonb_build_object('marketplace', marketplace, 'status', status, 'count', count(*))
               FROM listings GROUP BY marketplace, status ORDER BY marketplace, status"
                .into(),
        )
        .await?,
        listing_errors: rows(format!(
            "SELECT jsonb_build_object('id', id, 'product_id', product_id, 'marketplace', marketplace,
                    'status', status, 'class', last_error->>'class',
                    'message', {}, 'updated_at', updated_at)
               FROM listings WHERE last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 50",
            error_message("last_error->>'class'", "last_error->>'message'")
        ))
        .await?,
        recent_errors: rows(format!(
            "SELECT jsonb_build_object('marketplace', marketplace, 'account_id', account_id, 'job_id', job_id,
                    'kind', kind, 'class', class, 'message', {}, 'at', at)
               FROM marketplace_errors ORDER BY at DESC LIMIT 50",
            error_message("class", "message")
        ))
        .await?,
        plugin_waiting: rows(format!(
            "SELECT jsonb_build_object('account_id', a.id, 'tenant_id', a.tenant_id,
                    'seller', a.external_user_id, 'account_status', a.status,
                    'plugin_last_seen_at', {last_seen},
                    'extension_online', coalesce({last_seen} > now() - {EXTENSION_ONLINE}, false),
                    'pending', count(*) FILTER (WHERE t.state = 'pending'),
                    'leased', count(*) FILTER (WHERE t.state = 'leased'),
                    'oldest_at', min(t.created_at))
               FROM plugin_tasks t JOIN marketplace_accounts a ON a.id = t.account_id
              WHERE t.state IN ('pending', 'leased')
              GROUP BY a.id ORDER BY min(t.created_at) LIMIT 200"
        ))
        .await?,
        double_sell: double_sell(pool).await?,
    })
}

/// The double-sell window of the last hour, per marketplace the sale happened on: for each
/// product sold out by a sale placed in the last hour (and not given back), the time from the
/// sale on the marketplace to the finish of the last withdrawal it caused; p50 and max over the
/// sales whose withdrawals all finished, and how many are still open.
pub async fn double_sell(pool: &PgPool) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH sales AS (
            SELECT o.marketplace,
                   (SELECT CASE WHEN bool_and(j.state = 'done')
                                THEN extract(epoch FROM max(j.finished_at) - o.placed_at) * 1000 END
                      FROM jobs j WHERE j.id = ANY(l.withdraw_jobs)) AS window_ms
              FROM orders o JOIN order_lines l ON l.order_id = o.id
             WHERE o.placed_at > now() - interval '1 hour' AND l.sold_out_from IS NOT NULL
               AND l.returned_at IS NULL AND cardinality(l.withdraw_jobs) > 0)
         SELECT jsonb_build_object('marketplace', marketplace, 'sales', count(*),
                    'open', count(*) FILTER (WHERE window_ms IS NULL),
                    'p50_ms', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY greatest(window_ms, 0))::numeric),
                    'max_ms', round(max(greatest(window_ms, 0))::numeric))
           FROM sales GROUP BY marketplace ORDER BY marketplace",
    )
    .fetch_all(pool)
    .await
}

/// Replaces the value of every key that names a secret (token, secret, password, authorization,
/// api key, cookie), at any depth, with `"[redacted]"`.
pub fn redact(v: &Value) -> Value {
    fn secret_key(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        [
            "token",
            "secret",
            "password",
            "passwd",
            "authorization",
            "api_key",
            "apikey",
            "cookie",
        ]
        .iter()
        .any(|s| k.contains(s))
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if secret_key(k) {
                        Value::String("[redacted]".into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// A bulk action over every job matching a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Dead or cancelled jobs run again now.
    Retry,
    /// Waiting jobs (scheduled, pending, retrying) never run.
    Cancel,
}

impl BulkAction {
    /// The states this action applies to; a filter's state must be one of them.
    pub fn states(self) -> &'static [JobState] {
        match self {
            Self::Retry => &[JobState::Dead, JobState::Cancelled],
            Self::Cancel => &[JobState::Scheduled, JobState::Pending, JobState::Retrying],
        }
    }

    fn set(self) -> &'static str {
        match self {
            Self::Retry => {
                "state = 'available', run_at = now(), finished_at = NULL, result = NULL,
                 max_attempts = greatest(j.max_attempts, j.attempt + 1)"
            }
            Self::Cancel => "state = 'cancelled', finished_at = now()",
        }
    }
}

/// The rows a bulk action would touch: the filter's state, or every state the action allows.
fn bulk_where(action: BulkAction, f: &JobFilter) -> String {
    let mut c = conditions(f, true);
    if f.state.is_none() {
        let any: Vec<&str> = action.states().iter().map(|s| s.sql_condition()).collect();
        c.push(format!("({})", any.join(" OR ")));
    }
    c.join(" AND ")
}

/// How many jobs a bulk action would touch now.
pub async fn bulk_count(
    pool: &PgPool,
    action: BulkAction,
    f: &JobFilter,
) -> Result<i64, sqlx::Error> {
    let text = f.text.as_deref().unwrap_or("");
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM jobs j WHERE {}",
        bulk_where(action, f)
    )))
    .bind(&f.kind)
    .bind(like_pattern(text))
    .bind(text)
    .fetch_one(pool)
    .await
}

/// Applies a bulk action in batches (short transactions; workers keep claiming meanwhile).
/// Returns how many jobs changed, the first [`BULK_NOTIFY_MAX`] ids and the kinds touched.
pub async fn bulk_apply(
    pool: &PgPool,
    action: BulkAction,
    f: &JobFilter,
) -> Result<(i64, Vec<i64>, Vec<String>), sqlx::Error> {
    let text = f.text.as_deref().unwrap_or("");
    let sql = format!(
        "UPDATE jobs j SET {} WHERE j.id = ANY(ARRAY(
             SELECT j.id FROM jobs j WHERE {} LIMIT $4 FOR UPDATE SKIP LOCKED))
         RETURNING j.id, j.kind",
        action.set(),
        bulk_where(action, f)
    );
    let (mut total, mut ids, mut kinds) = (0i64, vec![], std::collections::BTreeSet::new());
    loop {
        let rows: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(&f.kind)
            .bind(like_pattern(text))
            .bind(text)
            .bind(BULK_BATCH)
            .fetch_all(pool)
            .await?;
        total += rows.len() as i64;
        for (id, kind) in &rows {
            if ids.len() < BULK_NOTIFY_MAX {
                ids.push(*id);
            }
            kinds.insert(kind.clone());
        }
        if (rows.len() as i64) < BULK_BATCH {
            return Ok((total, ids, kinds.into_iter().collect()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = json!({"account_id": 1, "access_token": "a", "nested": {"Authorization": "Bearer x",
            "list": [{"client_secret": "s", "ok": 2}]}, "password": "p", "title": "t"});
        let r = redact(&v);
        assert_eq!(r["account_id"], 1);
        assert_eq!(r["access_token"], "[redacted]");
        assert_eq!(r["nested"]["Authorization"], "[redacted]");
        assert_eq!(r["nested"]["list"][0]["client_secret"], "[redacted]");
        assert_eq!(r["nested"]["list"][0]["ok"], 2);
        assert_eq!(r["password"], "[redacted]");
        assert_eq!(r["title"], "t");
    }

    #[test]
    fn like_wildcards_in_search_text_are_literal() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }
}
