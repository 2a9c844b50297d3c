//! The browser extension ("plugin") that runs Vinted tasks with the seller's session:
//! connecting a Vinted account (which issues the plugin's device token, shown once), and the
//! plugin API under `/api/plugin` (lease a task, post its result, report the session), which
//! authenticates with `Authorization: Bearer <plugin token>` and only ever sees its own account's
//! tasks. The task life cycle is in `jobs::plugin`.
//!
//! The same task routes also serve Stoflow's existing browser extension (seed 002, see
//! `jobs::extension`): a caller with the seller's access token (JWT) instead of a plugin token
//! gets that contract — a list of tasks, `{success, result | error_message, error_details}`
//! results — plus `/api/plugin/health`, `/api/plugin/platforms` and `/api/plugin/sync`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem::http::header;
use poem::{Request, RequestBody};
use poem_openapi::auth::Bearer;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::registry::Registry;
use poem_openapi::types::ParseFromJSON;
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
    SecurityScheme, Tags, Union,
};
use serde_json::Value;

use jobs::extension::{self, ExtOutcome, TaskType};
use jobs::plugin::{self, Action, ErrorType, LeaseOutcome, PluginError, Report, TaskView};
use jobs::vinted_sales::{ClosedItem, Sales, SoldOrder};

use crate::problem::{Problem, ProblemBody};
use crate::state::AppState;

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

/// Who calls a task route: the reference runner with its device token (`sfp_…`: the leased
/// protocol), or the seller's extension with their access token (seed 002's contract).
pub enum PluginCaller {
    Device(i64),
    Seller(i64),
}

impl<'a> ApiExtractor<'a> for PluginCaller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <PluginToken as ApiExtractor>::register(registry);
        <crate::auth::Seller as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut v = <PluginToken as ApiExtractor>::security_schemes();
        v.extend(<crate::auth::Seller as ApiExtractor>::security_schemes());
        v
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        match token {
            Some(t) if t.starts_with("sfp_") => {
                let st = req.data::<Arc<AppState>>().ok_or_else(|| {
                    poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                })?;
                match plugin::authenticate(&st.pool, t).await {
                    Ok(Some(account)) => Ok(Self::Device(account)),
                    Ok(None) => Err(crate::auth::unauthorized(
                        "the plugin token is unknown or was replaced: connect the Vinted account again (POST /v1/connections/vinted)",
                    )),
                    Err(e) => Err(poem::Error::from_response(
                        poem::IntoResponse::into_response(Problem::from(e)),
                    )),
                }
            }
            _ => Ok(Self::Seller(
                crate::auth::authenticate(req).await?.tenant_id,
            )),
        }
    }
}

/// A task as Stoflow's browser extension receives it (seed 002).
#[derive(Debug, Object)]
pub struct ExtTaskView {
    pub id: i64,
    pub task_type: TaskType,
    /// vinted_publish / vinted_update: product_id, vinted_product_id, vinted_id (update), title,
    /// description, price (a number), mapped_attributes {brand_id, color_id, condition_id,
    /// size_id, category_id, gender, is_bottom}, product_data {brand, category, size, color,
    /// condition, images (comma-separated URLs)}. vinted_delete: product_id, vinted_product_id,
    /// vinted_id. vinted_sync_sales: user_id, since, max_pages, orders_per_page, wardrobe_per_page.
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// The leased protocol's lease (device token), or the extension's task list (access token).
/// Its schema is written by hand: the `Union` derive declared it an object, which the list is not.
#[derive(Debug)]
pub enum TasksBody {
    Lease(LeaseView),
    Tasks(Vec<ExtTaskView>),
}

impl poem_openapi::types::Type for TasksBody {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "TasksBody".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        poem_openapi::registry::MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        LeaseView::register(registry);
        Vec::<ExtTaskView>::register(registry);
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| {
            poem_openapi::registry::MetaSchema {
                description: Some(
                    "The leased protocol's lease (device token), or the extension's task list (access token).",
                ),
                one_of: vec![LeaseView::schema_ref(), Vec::<ExtTaskView>::schema_ref()],
                ..poem_openapi::registry::MetaSchema::ANY
            }
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ToJSON for TasksBody {
    fn to_json(&self) -> Option<Value> {
        match self {
            Self::Lease(l) => l.to_json(),
            Self::Tasks(t) => t.to_json(),
        }
    }
}

/// A result in the extension's vocabulary (seed 002).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ExtResultRequest {
    pub success: bool,
    /// Listing tasks: `{vinted_id, url, image_ids}` (vinted_id required for publish and update).
    /// vinted_sync_sales: `{orders, closed_items}` as in the leased protocol.
    pub result: Option<Value>,
    #[oai(validator(max_length = 4000))]
    pub error_message: Option<String>,
    /// `{error_type: mapping_error | api_error | image_error | blocked, error_details}`.
    pub error_details: Option<ExtErrorDetails>,
}

#[derive(Debug, Object)]
pub struct ExtErrorDetails {
    #[oai(validator(max_length = 100))]
    pub error_type: Option<String>,
    pub error_details: Option<Value>,
}

/// A task after the extension's result, in its vocabulary.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ExtTaskStatus {
    pub id: i64,
    pub task_type: TaskType,
    /// pending (retried later), processing, completed, failed or timeout.
    pub status: String,
    pub retry_count: i32,
    pub result: Option<Value>,
    pub error_message: Option<String>,
}

impl From<TaskView> for ExtTaskStatus {
    fn from(t: TaskView) -> Self {
        let failures = t.errors.as_array().map_or(0, |e| e.len()) as i32;
        Self {
            id: t.id,
            task_type: Action::parse(&t.action)
                .unwrap_or(Action::CreateListing)
                .into(),
            status: extension::status_word(&t.state).into(),
            retry_count: failures,
            error_message: t
                .error
                .as_ref()
                .and_then(|e| e["message"].as_str())
                .map(String::from),
            result: t.result,
        }
    }
}

#[derive(Debug, Union)]
pub enum ResultBody {
    Task(PluginTaskView),
    Extension(ExtTaskStatus),
}

#[derive(Debug, Object)]
pub struct ExtHealth {
    pub status: String,
    pub api_version: String,
    pub plugin_compatible: Vec<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ExtPlatform {
    pub name: String,
    pub display_name: String,
    /// cookies (the extension works with the browser's session) or oauth2 (the platform's).
    pub auth_method: String,
    /// Whether the extension runs tasks for it.
    pub supported: bool,
    pub features: Vec<String>,
    pub note: Option<String>,
}

#[derive(Debug, Object)]
pub struct ExtPlatforms {
    pub platforms: Vec<ExtPlatform>,
}

#[derive(Debug, Object)]
pub struct ExtPlatformCookies {
    #[oai(validator(min_length = 1, max_length = 20))]
    pub platform: String,
    /// Read only to see whether a session exists: never stored nor logged.
    #[oai(validator(max_properties = 200))]
    pub cookies: std::collections::BTreeMap<String, String>,
    #[oai(validator(max_length = 1000))]
    pub user_agent: Option<String>,
}

#[derive(Debug, Object)]
pub struct ExtSyncRequest {
    #[oai(validator(max_items = 10))]
    pub platforms: Vec<ExtPlatformCookies>,
    #[oai(validator(max_length = 50))]
    pub plugin_version: String,
    #[oai(validator(max_length = 50))]
    pub browser: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ExtPlatformStatus {
    pub platform: String,
    pub connected: bool,
    /// The seller's Vinted account: account_id, vinted_user_id, login.
    pub user: Option<Value>,
    pub error: Option<String>,
    pub last_sync: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct ExtSyncResponse {
    pub success: bool,
    pub platforms_synced: u32,
    pub platforms_status: Vec<ExtPlatformStatus>,
    pub message: String,
}

/// Parses `v` as `T`, a failure being a 400 problem naming the field.
fn parse_body<T: ParseFromJSON>(v: Value) -> Result<T, PluginProblem> {
    T::parse_from_json(Some(v))
        .map_err(|e| PluginProblem::BadRequest(body(400, "Bad Request", e.into_message())))
}

/// The extension's result as an outcome for task `action` (422 when a required part is missing).
fn ext_outcome(action: Action, r: ExtResultRequest) -> Result<ExtOutcome, PluginProblem> {
    let invalid = |d: &str| PluginProblem::from(Problem::unprocessable(d.to_string()));
    if !r.success {
        let message = r
            .error_message
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| invalid("error_message is required when success is false"))?;
        let d = r.error_details;
        let error_type = d
            .as_ref()
            .and_then(|d| d.error_type.clone())
            .unwrap_or_else(|| "api_error".into());
        let detail = d.and_then(|d| d.error_details).map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        });
        let message = match detail {
            Some(x) => format!("{message} ({error_type}: {x})"),
            None => format!("{message} ({error_type})"),
        };
        return Ok(ExtOutcome::Failed {
            error_type,
            message,
        });
    }
    let result = r.result.unwrap_or(Value::Null);
    if action == Action::SyncSales {
        let orders: Vec<SoldOrder> = parse_body(result["orders"].clone()).map_err(|_| {
            invalid("result.orders (and result.closed_items) are required when a vinted_sync_sales task succeeded")
        })?;
        let closed_items: Vec<ClosedItem> = match &result["closed_items"] {
            Value::Null => Vec::new(),
            v => parse_body(v.clone())?,
        };
        return Ok(ExtOutcome::Sales(Sales {
            orders,
            closed_items,
        }));
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let vinted_id = text(&result["vinted_id"]);
    if vinted_id.is_none() && action != Action::DeleteListing {
        return Err(invalid(
            "result.vinted_id is required when a publish or update succeeded",
        ));
    }
    Ok(ExtOutcome::Published {
        vinted_id,
        url: result["url"].as_str().map(String::from),
        image_ids: text(&result["image_ids"]),
    })
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

    /// Leases a task for `account`; with nothing to do, holds on up to `wait` for one to become
    /// pending (woken by LISTEN, and rechecked every few seconds for a missed notification or a
    /// retried task whose backoff ends).
    async fn lease_waiting(
        &self,
        account: i64,
        wait: Duration,
    ) -> Result<LeaseOutcome, PluginError> {
        const RECHECK: Duration = Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribed before the first lease, so a task made in between still wakes us.
        let mut wakeups = self.st.plugin_wakeups.subscribe();
        loop {
            let (out, woken) =
                plugin::lease(&self.st.pool, &self.st.settings.plugin, account).await?;
            self.wake(woken);
            let now = tokio::time::Instant::now();
            if !matches!(out, LeaseOutcome::Idle) || now >= deadline {
                return Ok(out);
            }
            let recheck = tokio::time::sleep_until((now + RECHECK).min(deadline));
            tokio::pin!(recheck);
            loop {
                tokio::select! {
                    r = wakeups.recv() => match r {
                        Ok(a) if a != account => continue,
                        // Ours, or lagged (it may have been ours).
                        _ => break,
                    },
                    _ = &mut recheck => break,
                }
            }
        }
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

    /// Lease the next task (device token), or fetch the extension's tasks (access token)
    ///
    /// With the plugin token: the oldest pending task, leased for `timeout` seconds; `task_id`
    /// is null when there is nothing to do, when a task is already leased (one at a time per
    /// account), or when the account is paused (`paused` says why).
    ///
    /// With the seller's access token (Stoflow's browser extension, seed 002): a list of at most
    /// `limit` tasks `{id, task_type, payload, created_at}`, each now executing for the extension
    /// (one per Vinted account at a time).
    #[oai(path = "/api/plugin/tasks", method = "get", tag = "PluginTag::Plugin")]
    async fn lease(
        &self,
        auth: PluginCaller,
        /// The extension's page size (default 10).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Device token: with nothing to do, hold the request up to this many seconds and answer
        /// as soon as a task is pending (long polling; default 0: answer at once). At most 25,
        /// under the server's 30 s limit on a request's handling.
        #[oai(validator(minimum(value = "0"), maximum(value = "25")))]
        wait: Query<Option<u32>>,
    ) -> Result<Json<TasksBody>, PluginProblem> {
        let account = match auth {
            PluginCaller::Device(account) => account,
            PluginCaller::Seller(tenant) => {
                let (tasks, woken) = extension::poll(
                    &self.st.pool,
                    &self.st.settings.plugin,
                    tenant,
                    limit.0.unwrap_or(10) as usize,
                )
                .await?;
                self.wake(woken);
                return Ok(Json(TasksBody::Tasks(
                    tasks
                        .into_iter()
                        .map(|t| ExtTaskView {
                            id: t.id,
                            task_type: t.task_type,
                            payload: t.payload,
                            created_at: t.created_at,
                        })
                        .collect(),
                )));
            }
        };
        let out = self
            .lease_waiting(account, Duration::from_secs(wait.0.unwrap_or(0).into()))
            .await?;
        Ok(Json(TasksBody::Lease(match out {
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
        })))
    }

    /// Post the result of a leased task (device token) or of a fetched task (access token)
    ///
    /// Refused with 409, changing nothing, when the lease is not the task's current one or
    /// expired (access token: when the task is not executing for the extension).
    #[oai(
        path = "/api/plugin/tasks/:id/result",
        method = "post",
        tag = "PluginTag::Plugin"
    )]
    async fn result(
        &self,
        auth: PluginCaller,
        id: Path<i64>,
        /// Device token: `ResultRequest` (lease_id, success, data | error). Access token: the
        /// extension's `ExtResultRequest` (success, result | error_message, error_details).
        body: Json<Value>,
    ) -> Result<Json<ResultBody>, PluginProblem> {
        let account = match auth {
            PluginCaller::Device(account) => account,
            PluginCaller::Seller(tenant) => {
                let r: ExtResultRequest = parse_body(body.0)?;
                let action = extension::action_of(&self.st.pool, tenant, id.0)
                    .await?
                    .ok_or_else(|| {
                        PluginProblem::from(Problem::not_found(format!(
                            "no task {} for this seller",
                            id.0
                        )))
                    })?;
                let outcome = ext_outcome(action, r)?;
                let t = extension::report(
                    &self.st.pool,
                    &self.st.settings.plugin,
                    tenant,
                    id.0,
                    outcome,
                )
                .await?;
                self.wake(t.job_ids.clone());
                return Ok(Json(ResultBody::Extension(t.into())));
            }
        };
        let b: ResultRequest = parse_body(body.0)?;
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
            image_ids: None,
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
        Ok(Json(ResultBody::Task(t.into())))
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

    /// The extension's health check (seed 002; no login needed)
    #[oai(path = "/api/plugin/health", method = "get", tag = "PluginTag::Plugin")]
    async fn ext_health(&self) -> Json<ExtHealth> {
        Json(ExtHealth {
            status: "healthy".into(),
            api_version: env!("CARGO_PKG_VERSION").into(),
            plugin_compatible: vec!["1.0.0".into(), "1.0.1".into()],
        })
    }

    /// The platforms the extension works on (seed 002)
    #[oai(
        path = "/api/plugin/platforms",
        method = "get",
        tag = "PluginTag::Plugin"
    )]
    async fn ext_platforms(&self, _auth: crate::auth::Seller) -> Json<ExtPlatforms> {
        let oauth = |name: &str, display: &str| ExtPlatform {
            name: name.into(),
            display_name: display.into(),
            auth_method: "oauth2".into(),
            supported: false,
            features: vec![],
            note: Some(format!(
                "connected by OAuth on the platform (GET /v1/connections/{name}/connect), not through the extension"
            )),
        };
        Json(ExtPlatforms {
            platforms: vec![
                ExtPlatform {
                    name: "vinted".into(),
                    display_name: "Vinted".into(),
                    auth_method: "cookies".into(),
                    supported: true,
                    features: ["publish", "update", "delete", "sync_sales"]
                        .map(String::from)
                        .to_vec(),
                    note: None,
                },
                oauth("ebay", "eBay"),
                oauth("etsy", "Etsy"),
            ],
        })
    }

    /// The extension reports the browser's sessions (seed 002)
    ///
    /// Our reading of "sync cookies and test the connection": the cookies are never stored nor
    /// logged; a Vinted entry with cookies means the seller's browser has a Vinted session, which
    /// resumes a Vinted account paused by a blocked session (as `POST /api/plugin/session
    /// {"ok": true}`). Each platform's status says whether the seller has a connected account.
    #[oai(path = "/api/plugin/sync", method = "post", tag = "PluginTag::Plugin")]
    async fn ext_sync(
        &self,
        auth: crate::auth::Seller,
        body: Json<ExtSyncRequest>,
    ) -> Result<Json<ExtSyncResponse>, PluginProblem> {
        let mut statuses = Vec::new();
        for p in &body.platforms {
            let name = p.platform.to_lowercase();
            let status = if name == "vinted" {
                let accounts: Vec<(i64, String, Option<String>)> = sqlx::query_as(
                    "SELECT id, external_user_id, shop_id FROM marketplace_accounts
                      WHERE tenant_id = $1 AND marketplace = 'vinted' AND status <> 'disconnected' ORDER BY id",
                )
                .bind(auth.tenant())
                .fetch_all(&self.st.pool)
                .await?;
                match accounts.first() {
                    None => ExtPlatformStatus {
                        platform: name,
                        connected: false,
                        user: None,
                        error: Some(
                            "no Vinted account: connect one with POST /v1/connections/vinted"
                                .into(),
                        ),
                        last_sync: None,
                    },
                    Some(_) if p.cookies.is_empty() => ExtPlatformStatus {
                        platform: name,
                        connected: false,
                        user: None,
                        error: Some("no Vinted cookies: log in to Vinted in the browser".into()),
                        last_sync: None,
                    },
                    Some((id, user, login)) => {
                        for (a, _, _) in &accounts {
                            plugin::report_session(&self.st.pool, *a, true, None).await?;
                        }
                        ExtPlatformStatus {
                            platform: name,
                            connected: true,
                            user: Some(serde_json::json!({
                                "account_id": id, "vinted_user_id": user, "login": login,
                            })),
                            error: None,
                            last_sync: Some(Utc::now()),
                        }
                    }
                }
            } else {
                ExtPlatformStatus {
                    error: Some(format!(
                        "{name}: not synced through the extension (eBay and Etsy connect by OAuth)"
                    )),
                    platform: name,
                    connected: false,
                    user: None,
                    last_sync: None,
                }
            };
            statuses.push(status);
        }
        let synced = statuses.iter().filter(|s| s.connected).count() as u32;
        Ok(Json(ExtSyncResponse {
            success: synced > 0,
            platforms_synced: synced,
            message: format!("{synced}/{} platforms synced successfully", statuses.len()),
            platforms_status: statuses,
        }))
    }
}
