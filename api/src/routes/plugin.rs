//! The browser extension ("plugin") that runs Vinted tasks with the seller's session:
//! connecting a Vinted account (which issues the plugin's device token, shown once), and the
//! plugin API under `/api/plugin` (lease a task, post its result, report the session), which
//! authenticates with `Authorization: Bearer <plugin token>` and only ever sees its own account's
//! tasks. The task life cycle is in `jobs::plugin`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::auth::Bearer;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, Tags};
use serde_json::Value;

use jobs::plugin::{self, Action, ErrorType, LeaseOutcome, PluginError, Report, TaskView};
use jobs::vinted_sales::{ClosedItem, Sales, SoldOrder};

use crate::AppState;
use crate::problem::{Problem, ProblemBody};

#[derive(Tags)]
enum PluginTag {
    /// The seller's browser extension: lease Vinted tasks, post results (device token auth).
    Plugin,
}

/// The plugin's device token, issued by `POST /v1/connections/vinted`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "plugin token")]
pub struct PluginToken(Bearer);

/// Errors of the plugin API (RFC 9457 problem details, like every error of this API).
#[derive(Debug, ApiResponse)]
pub enum PluginProblem {
    /// Malformed request: unparsable JSON, a missing or mistyped field, a bad id.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<ProblemBody>),
    /// No token, or a token that is unknown or was replaced by a reconnect.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<ProblemBody>),
    /// No such task for this plugin (other accounts' tasks are never revealed).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemBody>),
    /// The lease is not the task's current one, or it expired: the result changes nothing.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<ProblemBody>),
    /// Well-formed but incomplete (success without a remote id, failure without an error).
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<ProblemBody>),
    /// Over a request rate; retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<ProblemBody>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<ProblemBody>),
    /// The database cannot be reached right now; retry after `Retry-After` seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<ProblemBody>, #[oai(header = "Retry-After")] u64),
}

fn body(status: u16, title: &str, detail: impl Into<String>) -> Json<ProblemBody> {
    Json(ProblemBody {
        type_: format!(
            "https://stoflow.dev/problems/{}",
            title.to_lowercase().replace(' ', "-")
        ),
        title: title.into(),
        status,
        detail: detail.into(),
    })
}

impl PluginProblem {
    fn unauthorized() -> Self {
        Self::Unauthorized(body(
            401,
            "Unauthorized",
            "the plugin token is unknown or was replaced: connect the Vinted account again (POST /v1/connections/vinted)",
        ))
    }
}

impl From<Problem> for PluginProblem {
    fn from(p: Problem) -> Self {
        match p {
            Problem::BadRequest(b) => Self::BadRequest(b),
            Problem::NotFound(b) => Self::NotFound(b),
            Problem::Conflict(b) => Self::Conflict(b),
            Problem::Unprocessable(b) => Self::Unprocessable(b),
            Problem::Unauthorized(b) | Problem::Forbidden(b) => Self::Unauthorized(b),
            Problem::TooManyRequests(b, s) => Self::TooManyRequests(b, s),
            Problem::Unavailable(b, s) => Self::Unavailable(b, s),
            Problem::PayloadTooLarge(b) | Problem::Internal(b) => Self::Internal(b),
        }
    }
}

impl From<sqlx::Error> for PluginProblem {
    fn from(e: sqlx::Error) -> Self {
        Problem::from(e).into()
    }
}

impl From<PluginError> for PluginProblem {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::NotFound(d) => Problem::not_found(d).into(),
            PluginError::Conflict(d) => Problem::conflict(d).into(),
            PluginError::Invalid(d) => Problem::unprocessable(d).into(),
            PluginError::Database(e) => Problem::from(e).into(),
            PluginError::Queue(e) => Problem::from(e).into(),
        }
    }
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ConnectVinted {
    /// The seller's Vinted user id (the `user_id` claim of `access_token_web`).
    #[oai(validator(pattern = "^[0-9]{1,20}$"))]
    pub vinted_user_id: String,
    /// The seller's Vinted login.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub login: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct VintedConnection {
    pub account_id: i64,
    pub marketplace: String,
    pub status: String,
    /// The browser extension's device token. Shown only here, once: store it in the extension.
    /// Connecting again issues a new one and revokes this one.
    pub plugin_token: String,
}

#[derive(ApiResponse)]
pub enum Connected {
    #[oai(status = 201)]
    Created(Json<VintedConnection>),
}

/// The next task, or `task_id: null` when there is nothing to do.
#[derive(Debug, Object, Default)]
#[oai(skip_serializing_if_is_none)]
pub struct LeaseView {
    pub task_id: Option<i64>,
    /// Send it back with the result; a result under any other lease is refused.
    pub lease_id: Option<String>,
    pub action: Option<Action>,
    /// Everything the extension needs: title, description, price {amount, currency_code},
    /// brand, size/size_id, color/color_ids, condition/status_id, catalog_id, photo_urls, and
    /// remote_id for updates and deletes. `sync_sales`: user_id, since (the newest order already
    /// imported: older pages need not be read), max_pages, orders_per_page, wardrobe_per_page.
    pub params: Option<Value>,
    /// Seconds the extension has to post the result.
    pub timeout: Option<u64>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Set when the account is paused (blocked session): what the seller must do.
    pub paused: Option<String>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ResultData {
    /// Vinted's item id (listing tasks).
    #[oai(validator(min_length = 1, max_length = 64))]
    pub remote_id: Option<String>,
    #[oai(validator(max_length = 2048))]
    pub url: Option<String>,
    /// `sync_sales`: the sold orders read from `my_orders?type=sold` (required, may be empty).
    #[oai(validator(max_items = 1000))]
    pub orders: Option<Vec<SoldOrder>>,
    /// `sync_sales`: the closed items of the wardrobe.
    #[oai(validator(max_items = 5000))]
    pub closed_items: Option<Vec<ClosedItem>>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ResultError {
    /// transient (retried while attempts remain), validation (fails at once), blocked
    /// (DataDome / expired session: the account pauses; the attempt is given back).
    #[oai(rename = "type")]
    pub type_: ErrorType,
    #[oai(validator(max_length = 4000))]
    pub message: String,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ResultRequest {
    #[oai(validator(min_length = 1, max_length = 64))]
    pub lease_id: String,
    pub success: bool,
    /// Required when `success` is true (remote_id; url when Vinted gave one).
    pub data: Option<ResultData>,
    /// Required when `success` is false.
    pub error: Option<ResultError>,
    #[oai(validator(maximum(value = "86400000")))]
    pub execution_time_ms: Option<u64>,
    pub executed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PluginTaskView {
    pub id: i64,
    pub account_id: i64,
    /// Absent for a `sync_sales` task (it concerns the account).
    pub product_id: Option<i64>,
    pub listing_id: Option<i64>,
    pub action: String,
    /// pending, leased, succeeded, failed or timed_out.
    pub state: String,
    /// A pending task is not leased before this: the backoff after a failed attempt.
    pub available_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub result: Option<Value>,
    pub error: Option<Value>,
    /// Every failure so far: type, message, attempt, time.
    pub errors: Value,
    /// Jobs that follow this task (its dispatch_plugin_task, the publish_listing that made it).
    pub job_ids: Vec<i64>,
    pub created_at: DateTime<Utc>,
    pub picked_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<TaskView> for PluginTaskView {
    fn from(t: TaskView) -> Self {
        Self {
            id: t.id,
            account_id: t.account_id,
            product_id: t.product_id,
            listing_id: t.listing_id,
            action: t.action,
            state: t.state,
            available_at: t.available_at,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            result: t.result,
            error: t.error,
            errors: t.errors,
            job_ids: t.job_ids,
            created_at: t.created_at,
            picked_at: t.picked_at,
            finished_at: t.finished_at,
        }
    }
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SessionReport {
    /// True: the seller's Vinted session works (again); false: it does not.
    pub ok: bool,
    #[oai(validator(max_length = 1000))]
    pub reason: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionView {
    pub account_id: i64,
    /// connected (tasks are leased) or broken (paused until the session works again).
    pub status: String,
    pub status_reason: Option<String>,
}

pub struct PluginApi {
    pub st: Arc<AppState>,
}

impl PluginApi {
    async fn account(&self, t: &PluginToken) -> Result<i64, PluginProblem> {
        plugin::authenticate(&self.st.pool, &t.0.token)
            .await?
            .ok_or_else(PluginProblem::unauthorized)
    }

    /// Wakes the jobs following a task (in the background: it may wait for a running one).
    fn wake(&self, jobs: Vec<i64>) {
        if !jobs.is_empty() {
            let pool = self.st.pool.clone();
            tokio::spawn(async move { plugin::wake(&pool, jobs).await });
        }
    }
}

#[OpenApi]
impl PluginApi {
    /// Connect a Vinted account and issue its browser extension's token
    ///
    /// Creates or renews the account (Vinted has no OAuth: the extension works with the seller's
    /// own session) and returns a new plugin token, once. A reconnect revokes the previous token
    /// and resumes an account paused by a blocked session.
    #[oai(
        path = "/v1/connections/vinted",
        method = "post",
        tag = "crate::routes::Tag::Connections"
    )]
    async fn connect(
        &self,
        auth: crate::auth::Seller,
        body: Json<ConnectVinted>,
    ) -> Result<Connected, Problem> {
        let (account_id, plugin_token) = plugin::connect(
            &self.st.pool,
            auth.tenant(),
            &body.vinted_user_id,
            &body.login,
        )
        .await?;
        Ok(Connected::Created(Json(VintedConnection {
            account_id,
            marketplace: "vinted".into(),
            status: "connected".into(),
            plugin_token,
        })))
    }

    /// A plugin task, as people follow it
    #[oai(
        path = "/v1/plugin-tasks/:id",
        method = "get",
        tag = "crate::routes::Tag::Connections"
    )]
    async fn task(
        &self,
        auth: crate::auth::Seller,
        id: Path<i64>,
    ) -> Result<Json<PluginTaskView>, Problem> {
        plugin::get(&self.st.pool, auth.job_scope(), id.0)
            .await?
            .map(|t| Json(t.into()))
            .ok_or_else(|| Problem::not_found("no plugin task with this id"))
    }

    /// Lease the next task of this plugin's account
    ///
    /// The oldest pending task, leased for `timeout` seconds; `task_id` is null when there is
    /// nothing to do, when a task is already leased (one at a time per account), or when the
    /// account is paused (`paused` says why).
    #[oai(path = "/api/plugin/tasks", method = "get", tag = "PluginTag::Plugin")]
    async fn lease(&self, auth: PluginToken) -> Result<Json<LeaseView>, PluginProblem> {
        let account = self.account(&auth).await?;
        let (out, woken) = plugin::lease(&self.st.pool, &self.st.settings.plugin, account).await?;
        self.wake(woken);
        Ok(Json(match out {
            LeaseOutcome::Task(t) => LeaseView {
                task_id: Some(t.task_id),
                lease_id: Some(t.lease_id),
                action: Some(t.action),
                params: Some(t.params),
                timeout: Some(t.timeout),
                lease_expires_at: Some(t.lease_expires_at),
                paused: None,
            },
            LeaseOutcome::Idle => LeaseView::default(),
            LeaseOutcome::Paused(why) => LeaseView {
                paused: Some(why),
                ..Default::default()
            },
        }))
    }

    /// Post the result of a leased task
    #[oai(
        path = "/api/plugin/tasks/:id/result",
        method = "post",
        tag = "PluginTag::Plugin"
    )]
    async fn result(
        &self,
        auth: PluginToken,
        id: Path<i64>,
        body: Json<ResultRequest>,
    ) -> Result<Json<PluginTaskView>, PluginProblem> {
        let account = self.account(&auth).await?;
        let b = body.0;
        let (remote_id, url, sales) = match b.data {
            Some(d) => {
                let sales = d.orders.map(|orders| Sales {
                    orders,
                    closed_items: d.closed_items.unwrap_or_default(),
                });
                (d.remote_id, d.url, sales)
            }
            None => (None, None, None),
        };
        let report = Report {
            lease_id: b.lease_id,
            success: b.success,
            remote_id,
            url,
            error: b.error.map(|e| (e.type_, e.message)),
            sales,
            execution_time_ms: b.execution_time_ms,
            executed_at: b.executed_at,
        };
        let t = plugin::report(
            &self.st.pool,
            &self.st.settings.plugin,
            account,
            id.0,
            report,
        )
        .await?;
        self.wake(t.job_ids.clone());
        Ok(Json(t.into()))
    }

    /// Report whether the seller's Vinted session works
    ///
    /// `ok: true` resumes an account paused by a blocked session (tasks are leased again);
    /// `ok: false` pauses it.
    #[oai(
        path = "/api/plugin/session",
        method = "post",
        tag = "PluginTag::Plugin"
    )]
    async fn session(
        &self,
        auth: PluginToken,
        body: Json<SessionReport>,
    ) -> Result<Json<SessionView>, PluginProblem> {
        let account = self.account(&auth).await?;
        let (status, status_reason) =
            plugin::report_session(&self.st.pool, account, body.ok, body.reason.as_deref()).await?;
        Ok(Json(SessionView {
            account_id: account,
            status,
            status_reason,
        }))
    }
}
