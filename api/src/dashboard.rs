//! The ops dashboard: pages at `/dashboard` (one embedded HTML page, script and stylesheet; no
//! CDN) and the JSON they read under `/v1/dashboard/*`, all in the OpenAPI document.
//!
//! Access: [`guard`] is the one gate in front of every dashboard operation: an ops user's bearer
//! token, else 401 (none) or 403 (a seller). The page logs in with `/v1/auth/login` and keeps
//! the tokens in `sessionStorage`.

use crate::auth::Actor;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use serde_json::{Value, json};

use engine::queue::{self, JobState, KindStats};
use jobs::dashboard::{self as dash, BulkAction, JobFilter, MinutePoint, Percentiles, WorkerInfo};
use jobs::kinds::ALL_KINDS;

use crate::problem::Problem;
use crate::routes::Tag;
use crate::routes::jobs::{ErrorEntry, JobView};
use crate::state::AppState;

/// Whether a path is the dashboard's data (its pages are static and public: they hold nothing
/// until the browser logs in and calls these with a bearer token).
pub fn is_dashboard_api(path: &str) -> bool {
    path.starts_with("/v1/dashboard/")
}

/// THE dashboard guard: every `/v1/dashboard/*` request needs an ops user's access token (401
/// without one, 403 for a seller); the user becomes the audit log's actor.
pub async fn guard<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    if is_dashboard_api(req.uri().path()) {
        let user = crate::auth::authenticate(&req).await?;
        crate::auth::require_ops(&user)?;
        req.extensions_mut().insert(Actor(Actor::user(&user)));
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

const HTML: &str = include_str!("../assets/dashboard.html");
const JS: &str = include_str!("../assets/dashboard.js");
const CSS: &str = include_str!("../assets/dashboard.css");

/// The page routes: `/dashboard` (one page; views are `#/…` fragments) and its two assets.
pub fn pages() -> poem::Route {
    fn asset(body: &'static str, ct: &'static str) -> impl Endpoint<Output = Response> {
        poem::endpoint::make_sync(move |_| {
            Response::builder()
                .status(StatusCode::OK)
                .content_type(ct)
                .header("cache-control", "no-cache")
                .body(body)
        })
    }
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        let config = json!({ "kinds": ALL_KINDS, "states": states }).to_string();
        HTML.replace("__CONFIG__", &config.replace('<', "\\u003c"))
    });
    poem::Route::new()
        .at("/", poem::get(asset(page, "text/html; charset=utf-8")))
        .at(
            "/app.js",
            poem::get(asset(JS, "text/javascript; charset=utf-8")),
        )
        .at("/app.css", poem::get(asset(CSS, "text/css; charset=utf-8")))
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Overview {
    /// Per kind: counts per state, oldest waiting age, paused.
    pub queues: Vec<KindStats>,
    /// Done and dead per minute and kind over the last hour.
    pub throughput: Vec<MinutePoint>,
    /// Run time and start latency percentiles per kind over the last hour.
    pub percentiles: Vec<Percentiles>,
    pub workers_live: i64,
    pub generated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Workers {
    pub workers: Vec<WorkerInfo>,
    /// A process silent this long is dead.
    pub lease_timeout_ms: u64,
}

/// A job in the list.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobSummary {
    pub id: i64,
    pub kind: String,
    pub state: JobState,
    pub attempt: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The arguments, secrets redacted.
    pub args: Value,
    pub last_error: Option<ErrorEntry>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; absent when nothing older is left.
    pub next_cursor: Option<String>,
    /// With a text filter, a page examines a bounded window of ids: this is where it stopped.
    pub searched_down_to: Option<i64>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Timings {
    /// Enqueue to the last run's start.
    pub queued_ms: Option<i64>,
    /// The last run's start to its end.
    pub run_ms: Option<i64>,
    /// Enqueue to the end.
    pub total_ms: Option<i64>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobDetail {
    /// The job; `args` has every secret-named key redacted.
    pub job: JobView,
    /// The trace id of the request that enqueued it (on every log line of its runs).
    pub trace_id: Option<String>,
    pub timings: Timings,
    /// The listing it publishes (product and marketplace), if any.
    pub listing: Option<Value>,
    /// The marketplace account it uses, if any (never its tokens).
    pub account: Option<Value>,
}

#[derive(Debug, Clone, Copy, Enum, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum BulkKind {
    /// Dead or cancelled jobs run again now.
    Retry,
    /// Scheduled, pending or retrying jobs never run.
    Cancel,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct BulkRequest {
    pub action: BulkKind,
    pub kind: Option<crate::routes::KindName>,
    /// Must be a state the action applies to; absent means all of them.
    pub state: Option<JobState>,
    /// Same text filter as the jobs list (id, arguments, idempotency key, trace id, error).
    #[oai(validator(min_length = 1, max_length = 200))]
    pub q: Option<String>,
    /// Why, for the audit log.
    #[oai(validator(max_length = 500))]
    pub reason: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BulkPreview {
    /// Jobs the action would change if applied now.
    pub count: i64,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BulkResult {
    /// Jobs it changed.
    pub changed: i64,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditPage {
    pub entries: Vec<jobs::audit::Entry>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MarketplacesView {
    /// Connected accounts with status and token expiry (never tokens), the last push received
    /// and the last poll of their sales, and (Vinted) whether the extension is online.
    pub accounts: Vec<Value>,
    /// Listings per marketplace and status.
    pub listings: Vec<Value>,
    /// The most recent listings with an error.
    pub listing_errors: Vec<Value>,
    /// The most recent marketplace failures (429s, 5xx, refusals) with their class.
    pub recent_errors: Vec<Value>,
    /// Plugin tasks waiting (pending or leased) per Vinted account.
    pub plugin_waiting: Vec<Value>,
    /// Per marketplace a sale happened on, over the last hour: products sold out there, and the
    /// time from the sale to the last other listing withdrawn (`p50_ms`, `max_ms`; `open`: not
    /// all withdrawn yet).
    pub double_sell: Vec<Value>,
}

pub struct DashboardApi {
    pub st: Arc<AppState>,
}

fn ms(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<i64> {
    Some((b? - a?).num_milliseconds())
}

impl DashboardApi {
    fn bulk_filter(&self, b: &BulkRequest) -> Result<(BulkAction, JobFilter), Problem> {
        let action = match b.action {
            BulkKind::Retry => BulkAction::Retry,
            BulkKind::Cancel => BulkAction::Cancel,
        };
        if let Some(s) = b.state
            && !action.states().contains(&s)
        {
            let allowed: Vec<&str> = action.states().iter().map(|s| s.as_str()).collect();
            return Err(Problem::unprocessable(format!(
                "state {:?} cannot be {}: {} applies to {}",
                s.as_str(),
                if action == BulkAction::Retry {
                    "retried"
                } else {
                    "cancelled"
                },
                if action == BulkAction::Retry {
                    "retry"
                } else {
                    "cancel"
                },
                allowed.join(", ")
            )));
        }
        Ok((
            action,
            JobFilter {
                kind: b.kind.clone().map(|k| k.0),
                state: b.state,
                text: b.q.clone(),
            },
        ))
    }
}

#[OpenApi(tag = "Tag::Dashboard")]
impl DashboardApi {
    /// Overview: counts per kind and state, last hour's throughput and failures, percentiles
    #[oai(path = "/v1/dashboard/overview", method = "get")]
    async fn overview(&self) -> Result<Json<Overview>, Problem> {
        let pool = &self.st.pool;
        let lease = self.st.settings.worker.lease_timeout();
        let (queues, throughput, percentiles, live) = tokio::try_join!(
            async { queue::stats(pool, ALL_KINDS).await.map_err(Problem::from) },
            async { dash::throughput(pool).await.map_err(Problem::from) },
            async { dash::percentiles(pool).await.map_err(Problem::from) },
            async {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM workers WHERE stopped_at IS NULL
                       AND heartbeat_at >= now() - make_interval(secs => $1)",
                )
                .bind(lease.as_secs_f64())
                .fetch_one(pool)
                .await
                .map_err(Problem::from)
            },
        )?;
        Ok(Json(Overview {
            queues,
            throughput,
            percentiles,
            workers_live: live,
            generated_at: Utc::now(),
        }))
    }

    /// Worker processes: host, pid, kinds, concurrency, in-flight jobs, heartbeat, dead ones marked
    #[oai(path = "/v1/dashboard/workers", method = "get")]
    async fn workers(&self) -> Result<Json<Workers>, Problem> {
        let lease = self.st.settings.worker.lease_timeout();
        Ok(Json(Workers {
            workers: dash::workers(&self.st.pool, lease).await?,
            lease_timeout_ms: lease.as_millis() as u64,
        }))
    }

    /// Jobs, newest first, filtered by kind, state and text
    ///
    /// `q` matches a job id, text in its arguments or last error, its idempotency key or trace
    /// id. A text search examines at most 50,000 ids per page: follow `next_cursor` for more.
    #[oai(path = "/v1/dashboard/jobs", method = "get")]
    async fn jobs(
        &self,
        kind: Query<Option<crate::routes::KindName>>,
        state: Query<Option<JobState>>,
        #[oai(validator(min_length = 1, max_length = 200))] q: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))] limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page (a positive id).
        #[oai(validator(pattern = r"^[1-9][0-9]{0,17}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<JobPage>, Problem> {
        let before = crate::routes::parse_cursor(cursor.0.as_deref())?;
        let has_text = q.0.is_some();
        let filter = JobFilter {
            kind: kind.0.map(|k| k.0),
            state: state.0,
            text: q.0.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
        };
        let page = dash::list(
            &self.st.pool,
            &filter,
            ALL_KINDS,
            before,
            limit.0.unwrap_or(50),
        )
        .await?;
        let searched_down_to = if has_text { page.next_before } else { None };
        let jobs = page
            .rows
            .into_iter()
            .map(|(r, _trace)| {
                let v = JobView::from_row(r);
                JobSummary {
                    id: v.id,
                    kind: v.kind,
                    state: v.state,
                    attempt: v.attempt,
                    max_attempts: v.max_attempts,
                    created_at: v.created_at,
                    next_run_at: v.next_run_at,
                    finished_at: v.finished_at,
                    args: dash::redact(&v.args),
                    last_error: v.last_error,
                }
            })
            .collect();
        Ok(Json(JobPage {
            jobs,
            next_cursor: page.next_before.map(|b| b.to_string()),
            searched_down_to,
        }))
    }

    /// One job in detail: redacted arguments, attempts and errors, timings, listing and account
    #[oai(path = "/v1/dashboard/jobs/:id", method = "get")]
    async fn job(&self, id: Path<i64>) -> Result<Json<JobDetail>, Problem> {
        let row = queue::get(&self.st.pool, id.0).await?;
        let (trace_id, (listing, account)) = tokio::try_join!(
            dash::trace_id(&self.st.pool, id.0),
            dash::related(&self.st.pool, &row.args)
        )?;
        let mut job = JobView::from_row(row);
        job.args = dash::redact(&job.args);
        let timings = Timings {
            queued_ms: ms(Some(job.created_at), job.attempted_at),
            run_ms: if job.state == JobState::Running {
                ms(job.attempted_at, Some(Utc::now()))
            } else {
                ms(job.attempted_at, job.finished_at)
            },
            total_ms: ms(Some(job.created_at), job.finished_at),
        };
        Ok(Json(JobDetail {
            job,
            trace_id,
            timings,
            listing,
            account,
        }))
    }

    /// How many jobs a bulk retry or cancel would change now
    #[oai(path = "/v1/dashboard/bulk/preview", method = "post")]
    async fn bulk_preview(&self, body: Json<BulkRequest>) -> Result<Json<BulkPreview>, Problem> {
        let (action, filter) = self.bulk_filter(&body.0)?;
        Ok(Json(BulkPreview {
            count: dash::bulk_count(&self.st.pool, action, &filter).await?,
        }))
    }

    /// Retry or cancel every job matching a filter (recorded in the audit log)
    #[oai(path = "/v1/dashboard/bulk", method = "post")]
    async fn bulk(
        &self,
        req: &Request,
        body: Json<BulkRequest>,
    ) -> Result<Json<BulkResult>, Problem> {
        let (action, filter) = self.bulk_filter(&body.0)?;
        let (changed, ids, kinds) = dash::bulk_apply(&self.st.pool, action, &filter).await?;
        self.st.job_events.changed(ids);
        if action == BulkAction::Retry {
            for k in kinds {
                self.st.notifier.poke(crate::routes::jobs::kind_name(&k));
            }
        }
        let b = &body.0;
        jobs::audit::record(
            &self.st.pool,
            &jobs::audit::Action {
                actor: &Actor::of(req),
                action: if action == BulkAction::Retry {
                    "bulk_retry"
                } else {
                    "bulk_cancel"
                },
                target: None,
                filter: Some(json!({
                    "kind": b.kind.as_ref().map(|k| &k.0), "state": b.state.map(JobState::as_str), "q": b.q,
                })),
                count: changed,
                reason: b.reason.as_deref(),
            },
        )
        .await?;
        Ok(Json(BulkResult { changed }))
    }

    /// The audit log, newest first
    #[oai(path = "/v1/dashboard/audit", method = "get")]
    async fn audit(
        &self,
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))] limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page (a positive id).
        #[oai(validator(pattern = r"^[1-9][0-9]{0,17}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<AuditPage>, Problem> {
        let before = crate::routes::parse_cursor(cursor.0.as_deref())?;
        let limit = limit.0.unwrap_or(50);
        let entries = jobs::audit::list(&self.st.pool, before, limit).await?;
        let next_cursor = (entries.len() == limit as usize)
            .then(|| entries.last().map(|e| e.id.to_string()))
            .flatten();
        Ok(Json(AuditPage {
            entries,
            next_cursor,
        }))
    }

    /// Marketplace accounts (status, token expiry, last push and poll), listing errors and the
    /// double-sell window
    ///
    /// Rate-limit budgets and circuit state come from `GET /v1/limits`.
    #[oai(path = "/v1/dashboard/marketplaces", method = "get")]
    async fn marketplaces(&self) -> Result<Json<MarketplacesView>, Problem> {
        let m = dash::marketplaces(&self.st.pool).await?;
        Ok(Json(MarketplacesView {
            accounts: m.accounts,
            listings: m.listings,
            listing_errors: m.listing_errors,
            recent_errors: m.recent_errors,
            plugin_waiting: m.plugin_waiting,
            double_sell: m.double_sell,
        }))
    }
}
