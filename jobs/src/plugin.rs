//! The browser-extension ("plugin") flow for Vinted, which has no API: the seller's extension
//! leases tasks over `/api/plugin/*` with its device token, runs them with the seller's own
//! session, and posts the result back.
//!
//! A task: pending → leased (until `lease_expires_at`) → succeeded | failed | timed_out.
//! Tasks create, update or delete one listing, or (`sync_sales`) read the account's Vinted sales,
//! which the task's job then imports as orders (`crate::vinted_sales`).
//! - transient failure or an expired lease: back to pending, the lease counted, and not leased
//!   again before `available_at` (exponential backoff with jitter); failed after `max_attempts`
//!   leases;
//! - validation failure: failed at once, Vinted's message kept;
//! - blocked (DataDome, expired session): back to pending with its lease given back, and the
//!   account `broken` — nothing more is leased until the extension reports the session works
//!   (`POST /api/plugin/session {"ok": true}`) or the seller reconnects;
//! - pending and not leased by `pickup_deadline`: timed_out.
//!
//! The deadlines are applied by [`settle`], which every reader of a task runs first (the lease
//! endpoint, and the jobs that follow the task), so no sweeper is needed. Jobs follow a task by
//! snoozing until its next deadline; a result wakes them at once ([`wake`]).
//! One account's tasks are leased one at a time, oldest first (Vinted blocks bursts).

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::config::PluginSettings;
use crate::context::JobContext;
use crate::kinds::DispatchPluginTask;
use crate::publishing::vinted;
use engine::queue::{self, NewJob};
use engine::{Job, JobError, Kind};

/// LISTEN/NOTIFY channel of tasks that became pending; the payload is the account id (a trigger,
/// migration `plugin_task_wakeups`, sends it).
pub const WAKEUP_CHANNEL: &str = "stoflow_plugin_tasks";

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Queue(#[from] queue::QueueError),
    /// No such task for this plugin (other accounts' tasks are not revealed).
    #[error("{0}")]
    NotFound(String),
    /// The task is not in a state (or lease) that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but incomplete (e.g. success without a remote id).
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum Action {
    CreateListing,
    UpdateListing,
    DeleteListing,
    /// Read the seller's sold orders and closed wardrobe items (no listing of its own).
    SyncSales,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateListing => "create_listing",
            Self::UpdateListing => "update_listing",
            Self::DeleteListing => "delete_listing",
            Self::SyncSales => "sync_sales",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::CreateListing,
            Self::UpdateListing,
            Self::DeleteListing,
            Self::SyncSales,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// What went wrong on the extension's side, as it classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum ErrorType {
    /// Vinted 5xx, a dropped connection, 429: try again (costs an attempt).
    Transient,
    /// Vinted refused the listing (400 code 99): fails at once.
    Validation,
    /// DataDome or an expired session: the seller must act; the account is paused.
    Blocked,
}

// ---- device tokens ----------------------------------------------------------------------

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates or renews the Vinted account `vinted_user_id` and issues its plugin token (returned
/// once; only its SHA-256 is stored). Earlier tokens of the account are revoked, and the
/// account is connected again (a reconnect also lifts a `blocked` pause).
pub async fn connect(
    pool: &PgPool,
    tenant: i64,
    vinted_user_id: &str,
    login: &str,
) -> Result<(i64, String), sqlx::Error> {
    let token = format!(
        "sfp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    let mut tx = pool.begin().await?;
    let account: i64 = sqlx::query_scalar(
        "INSERT INTO marketplace_accounts (marketplace, external_user_id, shop_id, tenant_id)
         VALUES ('vinted', $1, $2, $3)
         ON CONFLICT (tenant_id, marketplace, external_user_id) DO UPDATE SET
            shop_id = excluded.shop_id, status = 'connected', status_reason = NULL, updated_at = now()
         RETURNING id",
    )
    .bind(vinted_user_id)
    .bind(login)
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE plugin_tokens SET revoked_at = now() WHERE account_id = $1 AND revoked_at IS NULL",
    )
    .bind(account)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO plugin_tokens (account_id, token_sha256) VALUES ($1, $2)")
        .bind(account)
        .bind(token_hash(&token))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((account, token))
}

/// The Vinted account a plugin token belongs to, if the token is live.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<i64>, sqlx::Error> {
    // Touch last_used_at at most once a minute: the extension polls every few seconds.
    sqlx::query_scalar(
        "WITH t AS (SELECT id, account_id FROM plugin_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL),
              touch AS (UPDATE plugin_tokens p SET last_used_at = now() FROM t
                         WHERE p.id = t.id AND (p.last_used_at IS NULL OR p.last_used_at < now() - interval '1 minute'))
         SELECT account_id FROM t",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await
}

/// The extension says whether the seller's Vinted session works; `ok = false` pauses the
/// account like a `blocked` result, `ok = true` resumes it. Returns (status, reason).
pub async fn report_session(
    pool: &PgPool,
    account: i64,
    ok: bool,
    reason: Option<&str>,
) -> Result<(String, Option<String>), sqlx::Error> {
    sqlx::query_as(
        "UPDATE marketplace_accounts SET status = CASE WHEN $2 THEN 'connected' ELSE 'broken' END,
                status_reason = CASE WHEN $2 THEN NULL ELSE $3 END, updated_at = now()
          WHERE id = $1 AND status <> 'disconnected'
         RETURNING status, status_reason",
    )
    .bind(account)
    .bind(ok)
    .bind(
        reason
            .map(|r| format!("the extension reported the Vinted session broken: {r}"))
            .unwrap_or_else(|| "the extension reported the Vinted session broken".into()),
    )
    .fetch_optional(pool)
    .await
    .map(|r| r.unwrap_or_else(|| ("disconnected".into(), None)))
}

// ---- deadlines --------------------------------------------------------------------------

/// The wait after failed attempt `attempts` (an SQL expression), as SQL: `d/2 + random·d/2` with
/// `d = least(cap, base·2^(attempts-1))`, base and cap the SQL parameters named (milliseconds).
/// Half fixed, so attempts are always at least `d/2` apart; half random, so they spread.
fn backoff_sql(attempts: &str, base: &str, cap: &str) -> String {
    format!(
        "make_interval(secs => least({cap}::float8, {base}::float8 * power(2::float8, (greatest({attempts}, 1) - 1)::float8))
                              * (0.5 + random() * 0.5) / 1000.0)"
    )
}

/// Applies the deadlines that passed to the tasks selected by `filter` (a constant SQL
/// condition on alias `t` with `$1` as its parameter): a pending task past its pickup deadline
/// times out; an expired lease costs an attempt (failed once they are spent) and backs off. Listings of tasks
/// that end this way record the error. Returns the job ids of tasks that changed, to wake.
async fn settle(
    conn: &mut PgConnection,
    s: &PluginSettings,
    filter: &str,
    arg: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let rows: Vec<(Vec<i64>,)> = sqlx::query_as(AssertSqlSafe(format!(
        "WITH due AS (
            SELECT t.id, CASE WHEN t.state = 'pending' THEN
                    jsonb_build_object('type', 'timeout', 'attempt', t.attempts, 'at', now(),
                      'message', format('no extension picked the task up within %s s', $3::bigint))
                  ELSE
                    jsonb_build_object('type', 'lease_expired', 'attempt', t.attempts, 'at', now(),
                      'message', format('the extension leased the task but posted no result within its %s s lease (attempt %s/%s)',
                                        $4::bigint, t.attempts, t.max_attempts))
                  END AS entry,
                  now() + {backoff} AS available_at
              FROM plugin_tasks t
             WHERE {filter}
               AND ((t.state = 'pending' AND t.pickup_deadline <= now())
                 OR (t.state = 'leased' AND t.lease_expires_at <= now()))
             FOR UPDATE),
         changed AS (
            UPDATE plugin_tasks t SET
                state = CASE WHEN t.state = 'pending' THEN 'timed_out'
                             WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
                error = due.entry,
                errors = t.errors || jsonb_build_array(due.entry),
                lease_id = CASE WHEN t.state = 'leased' AND t.attempts < t.max_attempts THEN NULL ELSE t.lease_id END,
                lease_expires_at = NULL,
                available_at = CASE WHEN t.state = 'leased' THEN due.available_at ELSE t.available_at END,
                pickup_deadline = CASE WHEN t.state = 'leased' THEN due.available_at + make_interval(secs => $2) ELSE t.pickup_deadline END,
                finished_at = CASE WHEN t.state = 'pending' OR t.attempts >= t.max_attempts THEN now() END,
                updated_at = now()
              FROM due
             WHERE t.id = due.id
            RETURNING t.id, t.state, t.listing_id, t.error, t.job_ids),
         listing AS (
            UPDATE listings l SET last_error = c.error,
                   status = CASE WHEN l.status = 'publishing' THEN 'failed' ELSE l.status END, updated_at = now()
              FROM changed c WHERE l.id = c.listing_id AND c.state IN ('failed', 'timed_out'))
         SELECT job_ids FROM changed",
        backoff = backoff_sql("t.attempts", "$5", "$6"),
    )))
    .bind(arg)
    .bind(s.pickup_timeout().as_secs_f64())
    .bind(s.pickup_timeout().as_secs() as i64)
    .bind(s.lease_timeout().as_secs() as i64)
    .bind(s.backoff_base_ms as f64)
    .bind(s.backoff_cap_ms as f64)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().flat_map(|(ids,)| ids).collect())
}

/// Makes the waiting jobs among `ids` run now. A job that is running right now (about to snooze
/// on what it read before the change) is retried until it is waiting again or done, for a few
/// seconds; if that fails, it still wakes at its own deadline.
pub async fn wake(pool: &PgPool, ids: Vec<i64>) {
    if ids.is_empty() {
        return;
    }
    for _ in 0..200 {
        // One statement, so the wake and the "still running?" check see the same snapshot: with
        // two, a job could finish its snooze between them and be left asleep until its deadline.
        let res: Result<(Vec<String>, bool), sqlx::Error> = sqlx::query_as(
            "WITH woken AS (
                UPDATE jobs SET run_at = now() WHERE id = ANY($1) AND state = 'available' AND run_at > now()
                RETURNING kind)
             SELECT coalesce((SELECT array_agg(kind) FROM woken), '{}'),
                    EXISTS (SELECT 1 FROM jobs WHERE id = ANY($1) AND state = 'running')",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await;
        match res {
            Ok((kinds, running)) => {
                if !kinds.is_empty() {
                    let _ = sqlx::query("SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k")
                        .bind(queue::CHANNEL)
                        .bind(&kinds)
                        .execute(pool)
                        .await;
                }
                if !running {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "waking plugin task jobs failed"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---- the plugin's side: lease, result ---------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct Leased {
    pub task_id: i64,
    pub lease_id: String,
    pub action: Action,
    pub params: Value,
    /// Seconds the plugin has to post the result.
    pub timeout: u64,
    pub lease_expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum LeaseOutcome {
    Task(Leased),
    /// Nothing to do now (no pending task, or one is already leased).
    Idle,
    /// The account is paused (blocked session); the reason says what the seller must do.
    Paused(String),
}

/// Leases the oldest pending task of `account` to its plugin. Returns the outcome and job ids
/// to [`wake`] (tasks whose deadlines passed on the way).
pub async fn lease(
    pool: &PgPool,
    s: &PluginSettings,
    account: i64,
) -> Result<(LeaseOutcome, Vec<i64>), PluginError> {
    lease_as(pool, s, account, hex(&rand::random::<[u8; 16]>())).await
}

/// [`lease`] under the given lease id (the extension protocol marks its leases with a prefix).
pub(crate) async fn lease_as(
    pool: &PgPool,
    s: &PluginSettings,
    account: i64,
    lease_id: String,
) -> Result<(LeaseOutcome, Vec<i64>), PluginError> {
    let mut tx = pool.begin().await?;
    // The account row lock serialises two polls of one account: one lease at a time.
    let (status, reason): (String, Option<String>) = sqlx::query_as(
        "SELECT status, status_reason FROM marketplace_accounts WHERE id = $1 FOR UPDATE",
    )
    .bind(account)
    .fetch_one(&mut *tx)
    .await?;
    let woken = settle(&mut tx, s, "t.account_id = $1", account).await?;
    if status != "connected" {
        tx.commit().await?;
        let why = reason.unwrap_or_else(|| format!("the account is {status}"));
        return Ok((LeaseOutcome::Paused(why), woken));
    }
    let busy: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM plugin_tasks WHERE account_id = $1 AND state = 'leased')",
    )
    .bind(account)
    .fetch_one(&mut *tx)
    .await?;
    if busy {
        tx.commit().await?;
        return Ok((LeaseOutcome::Idle, woken));
    }
    let row: Option<LeasedRow> = sqlx::query_as(
        "UPDATE plugin_tasks SET state = 'leased', attempts = attempts + 1, lease_id = $2,
                lease_expires_at = now() + make_interval(secs => $3), picked_at = coalesce(picked_at, now()),
                updated_at = now()
          WHERE id = (SELECT id FROM plugin_tasks WHERE account_id = $1 AND state = 'pending'
                         AND available_at <= now()
                       ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING id, action, params, lease_expires_at, job_ids",
    )
    .bind(account)
    .bind(&lease_id)
    .bind(s.lease_timeout().as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut woken = woken;
    let out = match row {
        None => LeaseOutcome::Idle,
        // Its jobs now wait for the lease deadline, not the pickup deadline.
        Some((task_id, action, params, lease_expires_at, jobs)) => {
            woken.extend(jobs);
            LeaseOutcome::Task(Leased {
                task_id,
                lease_id,
                action: Action::parse(&action).unwrap_or(Action::CreateListing),
                params,
                timeout: s.lease_timeout().as_millis().div_ceil(1000) as u64,
                lease_expires_at,
            })
        }
    };
    Ok((out, woken))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the plugin reports for a leased task.
#[derive(Debug, Clone)]
pub struct Report {
    pub lease_id: String,
    pub success: bool,
    pub remote_id: Option<String>,
    pub url: Option<String>,
    /// Vinted's photo ids, comma-separated (the extension protocol reports them; kept in the result).
    pub image_ids: Option<String>,
    pub error: Option<(ErrorType, String)>,
    /// What a `sync_sales` task read (required when it succeeded).
    pub sales: Option<crate::vinted_sales::Sales>,
    pub execution_time_ms: Option<u64>,
    pub executed_at: Option<DateTime<Utc>>,
}

/// A task as the plugin and people see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TaskView {
    pub id: i64,
    pub account_id: i64,
    /// None for a `sync_sales` task (it concerns the account).
    pub product_id: Option<i64>,
    pub listing_id: Option<i64>,
    pub action: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub errors: Value,
    pub job_ids: Vec<i64>,
    /// A pending task is not leased before this (the backoff after a failed attempt).
    pub available_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub picked_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const VIEW: &str = "id, account_id, product_id, listing_id, action, state, attempts, max_attempts, result, error, \
                    errors, job_ids, available_at, created_at, picked_at, finished_at";

/// A task by id; with `tenant`, only that tenant's (another's is as absent).
pub async fn get(
    pool: &PgPool,
    tenant: Option<i64>,
    id: i64,
) -> Result<Option<TaskView>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {VIEW} FROM plugin_tasks WHERE id = $1 AND ($2::bigint IS NULL OR account_id IN
           (SELECT id FROM marketplace_accounts WHERE tenant_id = $2))"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

/// Records the plugin's result for task `id` under lease `r.lease_id`. Refused (and nothing
/// changes) when the task is another account's (not found), or the lease is not the task's
/// current one or has expired (conflict). Repeating the result of a finished task under its
/// last lease answers the task as it is.
pub async fn report(
    pool: &PgPool,
    s: &PluginSettings,
    account: i64,
    id: i64,
    r: Report,
) -> Result<TaskView, PluginError> {
    let mut tx = pool.begin().await?;
    type Row = (
        i64,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        i32,
        i32,
        Option<i64>,
        String,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT account_id, state, lease_id, lease_expires_at, attempts, max_attempts, listing_id, action
           FROM plugin_tasks WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((owner, state, lease_id, expires, attempts, max_attempts, listing, action)) =
        row.filter(|r| r.0 == account)
    else {
        return Err(PluginError::NotFound(format!(
            "no task {id} for this plugin"
        )));
    };
    let current = lease_id.as_deref() == Some(r.lease_id.as_str());
    if current && matches!(state.as_str(), "succeeded" | "failed" | "timed_out") {
        drop(tx);
        return get(pool, None, id)
            .await?
            .ok_or_else(|| PluginError::NotFound(format!("no task {id}")));
    }
    if state != "leased" || !current {
        return Err(PluginError::Conflict(format!(
            "task {id} is {state} and lease {:?} is not its current lease: the result is refused and changes nothing",
            r.lease_id
        )));
    }
    if expires.is_none_or(|e| e <= Utc::now()) {
        return Err(PluginError::Conflict(format!(
            "the lease of task {id} expired at {}: the result is refused and changes nothing (the task will be offered again)",
            expires.map(|e| e.to_rfc3339()).unwrap_or_default()
        )));
    }
    debug_assert_eq!(owner, account);
    let action = Action::parse(&action).unwrap_or(Action::CreateListing);
    if r.success && action == Action::SyncSales {
        // The sales are imported by the task's job (retried there if the import fails).
        let sales = r.sales.ok_or_else(|| {
            PluginError::Invalid(
                "data.orders (and data.closed_items) are required when a sync_sales task succeeded"
                    .into(),
            )
        })?;
        let result = json!({
            "sales": sales,
            "execution_time_ms": r.execution_time_ms, "executed_at": r.executed_at,
        });
        mark_succeeded(&mut tx, id, &result).await?;
    } else if r.success {
        let remote_id = r.remote_id.filter(|x| !x.trim().is_empty());
        if remote_id.is_none() && action != Action::DeleteListing {
            return Err(PluginError::Invalid(
                "data.remote_id is required when success is true".into(),
            ));
        }
        let mut result = json!({
            "remote_id": remote_id, "url": r.url,
            "execution_time_ms": r.execution_time_ms, "executed_at": r.executed_at,
        });
        if let Some(ids) = &r.image_ids {
            result["image_ids"] = json!(ids);
        }
        mark_succeeded(&mut tx, id, &result).await?;
        if action == Action::DeleteListing {
            sqlx::query(
                "UPDATE listings SET status = 'withdrawn', last_error = NULL, updated_at = now() WHERE id = $1",
            )
            .bind(listing)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE listings SET status = 'published', remote_listing_id = $2, remote_url = coalesce($3, remote_url),
                        last_error = NULL, published_at = coalesce(published_at, now()), updated_at = now()
                  WHERE id = $1",
            )
            .bind(listing)
            .bind(&remote_id)
            .bind(&r.url)
            .execute(&mut *tx)
            .await?;
        }
    } else {
        let (ty, message) = r.error.ok_or_else(|| {
            PluginError::Invalid("error {type, message} is required when success is false".into())
        })?;
        let entry = json!({
            "type": ty, "message": message, "attempt": attempts, "at": Utc::now(),
            "execution_time_ms": r.execution_time_ms, "executed_at": r.executed_at,
        });
        let next = match ty {
            ErrorType::Validation => "failed",
            ErrorType::Transient if attempts >= max_attempts => "failed",
            ErrorType::Transient | ErrorType::Blocked => "pending",
        };
        // A transient failure backs off before the next lease; a blocked one gives its attempt
        // back and waits for the account to resume instead.
        sqlx::query(AssertSqlSafe(format!(
            "WITH w AS (SELECT now() + CASE WHEN $4 THEN interval '0' ELSE {backoff} END AS at)
             UPDATE plugin_tasks SET state = $2, error = $3, errors = errors || jsonb_build_array($3),
                    attempts = attempts - CASE WHEN $4 THEN 1 ELSE 0 END,
                    lease_id = CASE WHEN $2 = 'pending' THEN NULL ELSE lease_id END, lease_expires_at = NULL,
                    available_at = CASE WHEN $2 = 'pending' THEN w.at ELSE available_at END,
                    pickup_deadline = CASE WHEN $2 = 'pending' THEN w.at + make_interval(secs => $5) ELSE pickup_deadline END,
                    finished_at = CASE WHEN $2 = 'failed' THEN now() END, updated_at = now()
               FROM w
              WHERE id = $1",
            backoff = backoff_sql("$6::int", "$7", "$8"),
        )))
        .bind(id)
        .bind(next)
        .bind(&entry)
        .bind(ty == ErrorType::Blocked)
        .bind(s.pickup_timeout().as_secs_f64())
        .bind(attempts)
        .bind(s.backoff_base_ms as f64)
        .bind(s.backoff_cap_ms as f64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE listings SET last_error = $2,
                    status = CASE WHEN $3 AND status = 'publishing' THEN 'failed' ELSE status END, updated_at = now()
              WHERE id = $1",
        )
        .bind(listing)
        .bind(&entry)
        .bind(next == "failed")
        .execute(&mut *tx)
        .await?;
        if ty == ErrorType::Blocked {
            sqlx::query(
                "UPDATE marketplace_accounts SET status = 'broken', status_reason = $2, updated_at = now() WHERE id = $1",
            )
            .bind(account)
            .bind(format!(
                "Vinted blocked the session ({message}): log in to Vinted in the browser; the extension resumes with POST /api/plugin/session {{\"ok\": true}}"
            ))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    get(pool, None, id)
        .await?
        .ok_or_else(|| PluginError::NotFound(format!("no task {id}")))
}

// ---- the jobs' side ---------------------------------------------------------------------

/// Creates the task of `action` for a listing, or joins the open one (whose parameters are
/// refreshed while nobody holds it), and makes job `follower` follow it. A new task gets its
/// `dispatch_plugin_task` job in the same transaction. Returns the task id.
#[allow(clippy::too_many_arguments)]
pub async fn create_or_join(
    pool: &PgPool,
    s: &crate::Settings,
    account: i64,
    product: i64,
    listing: i64,
    action: Action,
    params: &Value,
    follower: Option<i64>,
) -> Result<i64, PluginError> {
    let followers: Vec<i64> = follower.into_iter().collect();
    let mut tx = pool.begin().await?;
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO plugin_tasks (account_id, product_id, listing_id, action, params, max_attempts, pickup_deadline, job_ids)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), $8)
         ON CONFLICT (listing_id, action) WHERE state IN ('pending', 'leased') DO NOTHING
         RETURNING id",
    )
    .bind(account)
    .bind(product)
    .bind(listing)
    .bind(action.as_str())
    .bind(params)
    .bind(s.plugin.max_attempts)
    .bind(s.plugin.pickup_timeout().as_secs_f64())
    .bind(&followers)
    .fetch_optional(&mut *tx)
    .await?;
    let id = match created {
        Some(id) => {
            add_dispatch_job(&mut tx, s, account, id).await?;
            id
        }
        None => {
            let joined: Option<i64> = sqlx::query_scalar(
                "UPDATE plugin_tasks SET
                    job_ids = CASE WHEN job_ids @> $3 THEN job_ids ELSE job_ids || $3 END,
                    params = CASE WHEN state = 'pending' THEN $4 ELSE params END, updated_at = now()
                  WHERE listing_id = $1 AND action = $2 AND state IN ('pending', 'leased')
                 RETURNING id",
            )
            .bind(listing)
            .bind(action.as_str())
            .bind(&followers)
            .bind(params)
            .fetch_optional(&mut *tx)
            .await?;
            // It finished between the two statements: the caller runs again and creates anew.
            joined.ok_or_else(|| {
                PluginError::Conflict("the open task finished meanwhile; retry".into())
            })?
        }
    };
    tx.commit().await?;
    Ok(id)
}

/// Enqueues the `dispatch_plugin_task` job of new task `id`, in the task's transaction.
async fn add_dispatch_job(
    tx: &mut PgConnection,
    s: &crate::Settings,
    account: i64,
    id: i64,
) -> Result<(), PluginError> {
    let policy = DispatchPluginTask::POLICY.resolved(DispatchPluginTask::KIND, &s.kinds);
    let job = NewJob {
        kind: DispatchPluginTask::KIND,
        args: serde_json::to_value(DispatchPluginTask { plugin_task_id: id })
            .expect("args serialize"),
        priority: 0,
        run_at: None,
        max_attempts: policy.max_attempts,
        idempotency_key: Some(format!("plugin_task:{id}")),
    };
    let tenant: Option<i64> =
        sqlx::query_scalar("SELECT tenant_id FROM marketplace_accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await?;
    let inserted = queue::insert_for(tx, tenant, &[job]).await?;
    sqlx::query("UPDATE plugin_tasks SET job_ids = job_ids || $2 WHERE id = $1")
        .bind(id)
        .bind(inserted[0].id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Creates the account's `sync_sales` task, or joins the open one (one at a time per account: a
/// tick while the extension is away adds nothing). Its `dispatch_plugin_task` job imports what the
/// extension reports. Returns (task id, created).
pub async fn sync_sales(
    pool: &PgPool,
    s: &crate::Settings,
    account: i64,
) -> Result<(i64, bool), PluginError> {
    let mut tx = pool.begin().await?;
    // The newest order already imported: the extension reads pages back to it, no further.
    let since: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(coalesce(placed_at, created_at)) FROM orders WHERE account_id = $1",
    )
    .bind(account)
    .fetch_one(&mut *tx)
    .await?;
    let user: String =
        sqlx::query_scalar("SELECT external_user_id FROM marketplace_accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await?;
    let params = json!({
        "user_id": user, "since": since, "max_pages": s.plugin.sales_max_pages,
        "orders_per_page": 20, "wardrobe_per_page": 96,
    });
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO plugin_tasks (account_id, action, params, max_attempts, pickup_deadline)
         VALUES ($1, 'sync_sales', $2, $3, now() + make_interval(secs => $4))
         ON CONFLICT (account_id, action) WHERE listing_id IS NULL AND state IN ('pending', 'leased') DO NOTHING
         RETURNING id",
    )
    .bind(account)
    .bind(&params)
    .bind(s.plugin.max_attempts)
    .bind(s.plugin.pickup_timeout().as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    let out = match created {
        Some(id) => {
            add_dispatch_job(&mut tx, s, account, id).await?;
            (id, true)
        }
        None => {
            let open: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM plugin_tasks WHERE account_id = $1 AND action = 'sync_sales'
                    AND listing_id IS NULL AND state IN ('pending', 'leased')",
            )
            .bind(account)
            .fetch_optional(&mut *tx)
            .await?;
            let id = open.ok_or_else(|| {
                PluginError::Conflict("the open sales sync finished meanwhile; retry".into())
            })?;
            (id, false)
        }
    };
    tx.commit().await?;
    Ok(out)
}

/// Where a followed task stands, after applying its passed deadlines.
#[derive(Debug, Clone)]
pub enum Status {
    /// Nothing to report before `until` (its next deadline).
    Waiting {
        until: DateTime<Utc>,
        what: String,
    },
    Succeeded(Value),
    /// A `sync_sales` task succeeded: what it read, for the account's import.
    Sales {
        account: i64,
        result: Value,
    },
    Failed {
        class: String,
        message: String,
    },
    TimedOut(String),
}

/// The current status of task `id` (None: no such task). Wakes the task's other jobs when a
/// deadline changed it.
pub async fn status(
    pool: &PgPool,
    s: &PluginSettings,
    id: i64,
    me: i64,
) -> Result<Option<Status>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let woken = settle(&mut tx, s, "t.id = $1", id).await?;
    type Row = (
        String,
        String,
        i32,
        i32,
        Option<Value>,
        Option<Value>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        i64,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT state, action, attempts, max_attempts, result, error, pickup_deadline, lease_expires_at, account_id
           FROM plugin_tasks WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let others: Vec<i64> = woken.into_iter().filter(|j| *j != me).collect();
    if !others.is_empty() {
        let pool = pool.clone();
        tokio::spawn(async move { wake(&pool, others).await });
    }
    let Some((state, action, attempts, max, result, error, pickup, lease, account)) = row else {
        return Ok(None);
    };
    let message = |e: &Option<Value>| {
        e.as_ref()
            .and_then(|e| e["message"].as_str())
            .unwrap_or("no message")
            .to_string()
    };
    Ok(Some(match state.as_str() {
        "succeeded" if action == Action::SyncSales.as_str() => Status::Sales {
            account,
            result: result.unwrap_or_default(),
        },
        "succeeded" => {
            let r = result.unwrap_or_default();
            Status::Succeeded(json!({
                "marketplace": "vinted", "plugin_task_id": id, "action": action,
                "remote_listing_id": r["remote_id"], "url": r["url"],
            }))
        }
        "timed_out" => Status::TimedOut(format!("plugin task {id}: {}", message(&error))),
        "failed" => {
            let ty = error
                .as_ref()
                .and_then(|e| e["type"].as_str())
                .unwrap_or("failed");
            Status::Failed {
                class: match ty {
                    "validation" => "rejected".into(),
                    _ => "plugin_failed".into(),
                },
                message: format!(
                    "plugin task {id} failed after {attempts}/{max} attempts: {ty}: {}",
                    message(&error)
                ),
            }
        }
        "leased" => Status::Waiting {
            until: lease.unwrap_or_else(Utc::now),
            what: format!(
                "plugin task {id} ({action}) leased by the extension (attempt {attempts}/{max})"
            ),
        },
        _ => {
            let paused: Option<String> = sqlx::query_scalar(
                "SELECT status_reason FROM marketplace_accounts WHERE id = $1 AND status <> 'connected'",
            )
            .bind(account)
            .fetch_optional(pool)
            .await?
            .flatten();
            Status::Waiting {
                until: pickup,
                what: match paused {
                    Some(why) => {
                        format!("plugin task {id} ({action}) waits: account paused: {why}")
                    }
                    None => format!(
                        "plugin task {id} ({action}) waits for the browser extension to pick it up"
                    ),
                },
            }
        }
    }))
}

/// A job's outcome while it follows task `id`: done, dead, or snoozing until the next deadline.
pub async fn follow(ctx: &JobContext, job: i64, id: i64) -> Result<Value, JobError> {
    let st = status(&ctx.pool, &ctx.settings.plugin, id, job)
        .await?
        .ok_or_else(|| JobError::permanent(format!("no plugin task {id}")))?;
    match st {
        Status::Succeeded(v) => Ok(v),
        Status::Sales { account, result } => {
            let sales: crate::vinted_sales::Sales = serde_json::from_value(result["sales"].clone())
                .map_err(|e| {
                    JobError::permanent(format!("plugin task {id}: unreadable sales: {e}"))
                })?;
            let imported =
                crate::vinted_sales::import(&ctx.pool, &ctx.settings, account, &sales).await?;
            Ok(json!({
                "marketplace": "vinted", "plugin_task_id": id, "action": "sync_sales",
                "imported": imported,
            }))
        }
        Status::Failed { class, message } => {
            release(ctx, job, id).await?;
            let e = JobError::Permanent {
                class: class.into(),
                message,
            };
            log_failure(ctx, job, id, &e).await?;
            Err(e)
        }
        // Nobody read the sales (the extension was away): nothing is lost, the next sync reads
        // them; the dashboard shows the extension offline.
        Status::TimedOut(message) if is_sales_task(ctx, id).await? => Ok(json!({
            "marketplace": "vinted", "plugin_task_id": id, "action": "sync_sales",
            "picked_up": false, "message": message,
        })),
        Status::TimedOut(message) => {
            release(ctx, job, id).await?;
            let e = JobError::Permanent {
                class: "plugin_timeout".into(),
                message,
            };
            log_failure(ctx, job, id, &e).await?;
            Err(e)
        }
        Status::Waiting { until, what } => {
            // A little past the deadline, so the next run finds it passed.
            let after =
                (until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50);
            Err(JobError::Snooze {
                after,
                class: "waiting_for_plugin".into(),
                message: what,
            })
        }
    }
}

/// A task that failed is a Vinted failure: logged where ops read eBay's and Etsy's.
async fn log_failure(ctx: &JobContext, job: i64, id: i64, e: &JobError) -> Result<(), sqlx::Error> {
    let (account, kind): (i64, Option<String>) = sqlx::query_as(
        "SELECT t.account_id, (SELECT kind FROM jobs WHERE id = $2) FROM plugin_tasks t WHERE t.id = $1",
    )
    .bind(id)
    .bind(job)
    .fetch_one(&ctx.pool)
    .await?;
    crate::listings::log_error(
        &ctx.pool,
        marketplaces::Marketplace::Vinted,
        Some(account),
        job,
        kind.as_deref().unwrap_or("dispatch_plugin_task"),
        e,
    )
    .await
}

/// Job `job` ends on task `id`'s failure and lets go of it: run again (a retry), it starts a
/// fresh task instead of following the failed one.
async fn release(ctx: &JobContext, job: i64, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE plugin_tasks SET released_job_ids = released_job_ids || $2
          WHERE id = $1 AND NOT released_job_ids @> ARRAY[$2]::bigint[]",
    )
    .bind(id)
    .bind(job)
    .execute(&ctx.pool)
    .await?;
    Ok(())
}

async fn is_sales_task(ctx: &JobContext, id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT action = 'sync_sales' FROM plugin_tasks WHERE id = $1")
        .bind(id)
        .fetch_one(&ctx.pool)
        .await
}

/// `publish_listing` to Vinted: upsert the listing row, create (or join) the plugin task that
/// creates or updates it, and follow that task, so this job's outcome says whether the product
/// is on Vinted (done with the remote id, or dead with the task's error).
pub async fn publish(ctx: &JobContext, job: i64, product_id: i64) -> Result<Value, JobError> {
    if let Some(task) = followed_task(ctx, job).await? {
        return follow(ctx, job, task).await;
    }
    let product = crate::catalogue::for_job(&ctx.pool, product_id).await?;
    // A paused (broken) account still takes tasks: they wait for the seller to log in again.
    let account: Option<(i64, Value)> = sqlx::query_as(
        "SELECT id, setup FROM marketplace_accounts
          WHERE tenant_id = $1 AND marketplace = 'vinted' AND status <> 'disconnected'
          ORDER BY id LIMIT 1",
    )
    .bind(product.tenant_id)
    .fetch_optional(&ctx.pool)
    .await?;
    let (account, setup) = account.ok_or_else(|| JobError::Permanent {
        class: "not_connected".into(),
        message: "no connected Vinted account: connect one with POST /v1/connections/vinted".into(),
    })?;
    let row = crate::listings::upsert(
        &ctx.pool,
        product_id,
        marketplaces::Marketplace::Vinted,
        account,
        &product.sku,
    )
    .await?;
    let listing = row.id;
    let remote = row.remote_listing_id.filter(|_| row.status == "published");
    let params = match vinted::listing_params(
        &product,
        &ctx.settings.marketplaces.vinted,
        &setup,
        remote.as_deref(),
    ) {
        Ok(mut p) => {
            // The extension downloads the photos itself: in development it is pointed at the
            // host serving the catalogue's image URLs, as the worker's own fetches are.
            for u in p["photo_urls"].as_array_mut().into_iter().flatten() {
                let images = &ctx.settings.marketplaces.images;
                if let Some(to) = u.as_str().map(|s| crate::images::fetch_url(images, s)) {
                    *u = to.into();
                }
            }
            p
        }
        Err(e) => {
            sqlx::query(
                "UPDATE listings SET status = CASE WHEN status = 'publishing' THEN 'failed' ELSE status END,
                        last_error = $2, updated_at = now() WHERE id = $1",
            )
            .bind(listing)
            .bind(json!({ "at": Utc::now(), "message": e.to_string() }))
            .execute(&ctx.pool)
            .await?;
            return Err(e.into());
        }
    };
    let action = if remote.is_some() {
        Action::UpdateListing
    } else {
        Action::CreateListing
    };
    take_write_budget(account).await?;
    let task = create_or_join(
        &ctx.pool,
        &ctx.settings,
        account,
        product_id,
        listing,
        action,
        &params,
        Some(job),
    )
    .await
    .map_err(|e| match e {
        PluginError::Database(d) => d.into(),
        other => JobError::retry(other),
    })?;
    follow(ctx, job, task).await
}

/// Takes one write from the seller's Vinted budget (`limits.vinted.seller_writes_per_hour`,
/// shared by the fleet) before a write task is handed to the extension: Vinted blocks sellers
/// who write too fast, so over budget the job snoozes until a write is free (no attempt spent).
async fn take_write_budget(account: i64) -> Result<(), JobError> {
    if let Some(l) = crate::limits::installed() {
        l.admit_budgets(
            marketplaces::Marketplace::Vinted,
            &[l.vinted_seller_writes(account)],
        )
        .await?;
    }
    Ok(())
}

/// The plugin task an earlier run of `job` created or joined (a retried run follows it on),
/// unless the job already ended on its failure.
async fn followed_task(ctx: &JobContext, job: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM plugin_tasks WHERE job_ids @> ARRAY[$1]::bigint[]
            AND NOT released_job_ids @> ARRAY[$1]::bigint[]
          ORDER BY id DESC LIMIT 1",
    )
    .bind(job)
    .fetch_optional(&ctx.pool)
    .await
}

/// `withdraw_listing` from Vinted: a `delete_listing` task for the extension, followed like a
/// publish, so the job is done once the item is gone from Vinted.
pub async fn withdraw(
    ctx: &JobContext,
    job: i64,
    listing: &crate::listings::Listing,
) -> Result<Value, JobError> {
    if let Some(task) = followed_task(ctx, job).await? {
        return follow(ctx, job, task).await;
    }
    let (Some(account), Some(remote)) = (listing.account_id, &listing.remote_listing_id) else {
        // Never made it to Vinted: nothing to take down.
        return Ok(json!({ "withdrawn": true, "remote": false }));
    };
    take_write_budget(account).await?;
    let task = create_or_join(
        &ctx.pool,
        &ctx.settings,
        account,
        listing.product_id,
        listing.id,
        Action::DeleteListing,
        &json!({ "remote_id": remote }),
        Some(job),
    )
    .await?;
    follow(ctx, job, task).await
}

impl From<PluginError> for JobError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Database(d) => d.into(),
            other => JobError::retry(other),
        }
    }
}

/// A task as leased: id, action, params, lease deadline, the jobs following it.
type LeasedRow = (i64, String, Value, DateTime<Utc>, Vec<i64>);

/// A task's successful end, with what it reported.
async fn mark_succeeded(
    tx: &mut sqlx::PgConnection,
    id: i64,
    result: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE plugin_tasks SET state = 'succeeded', result = $2, finished_at = now(), lease_expires_at = NULL,
                updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(result)
    .execute(tx)
    .await
    .map(|_| ())
}
