//! `/v1/jobs`: enqueue typed jobs, follow them, retry and cancel them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use engine::queue::{self, JobRow, JobState, ListFilter, NewJob};
use jobs::kinds::Owned;
use jobs::kinds::{self, ALL_KINDS, AnyJob};

use crate::auth::Seller;
use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

/// One job to enqueue: the kind-tagged arguments plus scheduling options.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The job: `kind` selects the arguments' schema.
    pub job: AnyJob,
    /// Higher runs first among ready jobs of a kind.
    #[oai(validator(minimum(value = "-100"), maximum(value = "100")))]
    pub priority: Option<i16>,
    /// Run no earlier than this instant (RFC 3339). Exclusive with `delay_ms`.
    pub run_at: Option<DateTime<Utc>>,
    /// Run no earlier than this many milliseconds from now (at most 30 days).
    #[oai(validator(maximum(value = "2592000000")))]
    pub delay_ms: Option<u64>,
    /// Overrides the kind's attempts budget.
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    pub max_attempts: Option<i32>,
    /// Same key, same job: a second request returns the first job (200) instead of a new one.
    /// The `Idempotency-Key` header does the same for single requests.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct BatchRequest {
    #[oai(validator(min_items = 1))]
    pub jobs: Vec<EnqueueRequest>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EnqueuedJob {
    pub id: i64,
    pub kind: String,
    pub state: JobState,
    /// False when an idempotency key returned an existing job.
    pub created: bool,
    pub status_url: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BatchResponse {
    pub jobs: Vec<EnqueuedJob>,
}

#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct ErrorEntry {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// What kind of failure: retryable, permanent, timeout, panic, rescued, snoozed, …
    pub class: String,
    pub message: String,
    /// How long the queue waited before the next run (retries and snoozes).
    pub delay_ms: Option<u64>,
    /// A permanent failure (the marketplace refused, the input is wrong): running the job
    /// again as it is fails the same way.
    pub permanent: Option<bool>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobView {
    pub id: i64,
    pub kind: String,
    pub state: JobState,
    pub args: Value,
    pub priority: i16,
    /// Runs started so far (snoozes excluded).
    pub attempt: i32,
    pub max_attempts: i32,
    pub snoozes: i32,
    /// When it runs next, while waiting (scheduled, pending, retrying).
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker process running it, while running.
    pub worker: Option<String>,
    pub idempotency_key: Option<String>,
    pub result: Option<Value>,
    pub last_error: Option<ErrorEntry>,
    /// Every failed attempt, oldest first.
    pub errors: Vec<ErrorEntry>,
}

impl JobView {
    pub(crate) fn from_row(r: JobRow) -> Self {
        let state = r.public_state(Utc::now());
        let waiting = matches!(
            state,
            JobState::Scheduled | JobState::Pending | JobState::Retrying
        );
        Self {
            next_run_at: waiting.then_some(r.run_at),
            last_error: r.last_error.and_then(|v| serde_json::from_value(v).ok()),
            errors: serde_json::from_value(r.errors).unwrap_or_default(),
            id: r.id,
            kind: r.kind,
            state,
            args: r.args,
            priority: r.priority,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            snoozes: r.snoozes,
            created_at: r.created_at,
            attempted_at: r.attempted_at,
            finished_at: r.finished_at,
            worker: r.locked_by,
            idempotency_key: r.idempotency_key,
            result: r.result,
        }
    }
}

/// One state of a job, as sent on its event stream.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobEvent {
    pub id: i64,
    pub state: JobState,
    pub attempt: i32,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_error: Option<ErrorEntry>,
    pub result: Option<Value>,
}

impl From<JobView> for JobEvent {
    fn from(v: JobView) -> Self {
        Self {
            id: v.id,
            state: v.state,
            attempt: v.attempt,
            next_run_at: v.next_run_at,
            last_error: v.last_error,
            result: v.result,
        }
    }
}

/// What one event stream remembers between events.
struct Watch {
    st: Arc<AppState>,
    id: i64,
    changes: tokio::sync::broadcast::Receiver<i64>,
    last: Option<(JobState, i32)>,
    started: bool,
    over: bool,
}

impl Watch {
    /// The next distinct state of the job; None once it is final (or gone).
    async fn next(mut self) -> Option<(JobEvent, Self)> {
        use tokio::sync::broadcast::error::RecvError;
        if self.over {
            return None;
        }
        loop {
            if self.started {
                match self.changes.recv().await {
                    Ok(id) if id != self.id => continue,
                    // Lagged: some notifications were dropped; re-reading the row catches up.
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            }
            self.started = true;
            let ev = JobEvent::from(JobView::from_row(
                queue::get(&self.st.pool, self.id).await.ok()?,
            ));
            if self.last != Some((ev.state, ev.attempt)) {
                self.last = Some((ev.state, ev.attempt));
                self.over = matches!(
                    ev.state,
                    JobState::Done | JobState::Dead | JobState::Cancelled
                );
                return Some((ev, self));
            }
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum EnqueueResponse {
    /// Enqueued; follow it at `Location`.
    #[oai(status = 202)]
    Accepted(Json<EnqueuedJob>, #[oai(header = "Location")] String),
    /// The idempotency key named an existing job; nothing new was enqueued.
    #[oai(status = 200)]
    Existing(Json<EnqueuedJob>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum BatchEnqueueResponse {
    #[oai(status = 202)]
    Accepted(Json<BatchResponse>),
}

pub struct JobsApi {
    pub st: Arc<AppState>,
}

fn status_url(id: i64) -> String {
    format!("/v1/jobs/{id}")
}

impl JobsApi {
    fn to_new_job(&self, r: &EnqueueRequest, header_key: Option<&str>) -> Result<NewJob, Problem> {
        let kind = r.job.kind();
        r.job
            .validate()
            .map_err(|e| Problem::unprocessable(format!("job ({kind}): {e}")))?;
        let run_at = match (r.run_at, r.delay_ms) {
            (Some(_), Some(_)) => {
                return Err(Problem::unprocessable("set run_at or delay_ms, not both"));
            }
            (Some(at), None) => Some(at),
            (None, Some(ms)) => Some(Utc::now() + chrono::Duration::milliseconds(ms as i64)),
            (None, None) => None,
        };
        let key = match (header_key, r.idempotency_key.as_deref()) {
            (Some(h), Some(b)) if h != b => {
                return Err(Problem::unprocessable(
                    "Idempotency-Key header and idempotency_key differ",
                ));
            }
            (h, b) => h.or(b).map(str::to_string),
        };
        let policy = r.job.policy().resolved(kind, &self.st.settings.kinds);
        Ok(NewJob {
            kind,
            args: r.job.args(),
            priority: r.priority.unwrap_or(0),
            run_at,
            max_attempts: r.max_attempts.unwrap_or(policy.max_attempts),
            idempotency_key: key,
        })
    }

    /// A seller may only name their own objects in a job's arguments: every id field a kind
    /// declares (`Job::IDS`) is checked; another tenant's id is a 404, as everywhere.
    async fn check_owned(&self, auth: &Seller, jobs: &[NewJob]) -> Result<(), Problem> {
        if auth.0.is_ops() {
            return Ok(());
        }
        let mut wanted: std::collections::BTreeMap<Owned, Vec<(&str, i64)>> = Default::default();
        for j in jobs {
            for (field, owned) in kinds::declared_ids(j.kind) {
                if let Some(id) = j.args.get(*field).and_then(Value::as_i64) {
                    wanted.entry(*owned).or_default().push((field, id));
                }
            }
        }
        for (owned, refs) in wanted {
            let ids: Vec<i64> = refs.iter().map(|(_, id)| *id).collect();
            let missing: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT i FROM unnest($1::bigint[]) AS i
                  WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE t.id = i AND t.tenant_id = $2)
                  LIMIT 1",
                owned.table()
            )))
            .bind(&ids)
            .bind(auth.tenant())
            .fetch_optional(&self.st.pool)
            .await?;
            if let Some(id) = missing {
                let field = refs.iter().find(|(_, i)| *i == id).map_or("id", |(f, _)| f);
                return Err(Problem::not_found(format!("{field} {id}: no such object")));
            }
        }
        Ok(())
    }

    async fn insert(&self, tenant: i64, jobs: Vec<NewJob>) -> Result<Vec<EnqueuedJob>, Problem> {
        // A single job without a key joins concurrent requests' jobs in one INSERT and commit
        // (engine::coalesce); with a key it is one atomic statement (two with a taken key, both
        // idempotent). A batch is all or nothing, in its own transaction.
        let ins = if jobs.len() == 1 && jobs[0].idempotency_key.is_none() {
            let id = self
                .st
                .enqueuer
                .insert(Some(tenant), jobs[0].clone())
                .await?;
            vec![queue::Inserted { id, created: true }]
        } else if jobs.len() == 1 {
            queue::insert_for(&mut *self.st.pool.acquire().await?, Some(tenant), &jobs).await?
        } else {
            let mut tx = self.st.pool.begin().await?;
            let ins = queue::insert_for(&mut tx, Some(tenant), &jobs).await?;
            tx.commit().await?;
            ins
        };
        let now = Utc::now();
        let mut kinds_to_wake = std::collections::BTreeSet::new();
        let out = jobs
            .iter()
            .zip(ins)
            .map(|(j, i)| {
                let due = j.run_at.is_none_or(|at| at <= now);
                if i.created {
                    self.st
                        .metrics
                        .inc("stoflow_jobs_enqueued_total", &[("kind", j.kind)], 1);
                }
                if i.created && due {
                    kinds_to_wake.insert(j.kind);
                }
                EnqueuedJob {
                    id: i.id,
                    kind: j.kind.to_string(),
                    state: if due {
                        JobState::Pending
                    } else {
                        JobState::Scheduled
                    },
                    created: i.created,
                    status_url: status_url(i.id),
                }
            })
            .collect();
        for k in kinds_to_wake {
            self.st.notifier.poke(k);
        }
        Ok(out)
    }
}

#[OpenApi(tag = "Tag::Jobs")]
impl JobsApi {
    /// Enqueue a job
    ///
    /// Validates the typed arguments, stores the job and answers at once; a worker process runs
    /// it. With an idempotency key, repeating the request returns the same job with 200.
    #[oai(path = "/v1/jobs", method = "post")]
    async fn enqueue(
        &self,
        auth: Seller,
        body: Json<EnqueueRequest>,
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255))]
        idempotency_key: Header<Option<String>>,
    ) -> Result<EnqueueResponse, Problem> {
        let job = self.to_new_job(&body.0, idempotency_key.0.as_deref())?;
        self.check_owned(&auth, std::slice::from_ref(&job)).await?;
        let e = self
            .insert(auth.tenant(), vec![job])
            .await?
            .pop()
            .expect("one job in, one out");
        let loc = e.status_url.clone();
        Ok(if e.created {
            EnqueueResponse::Accepted(Json(e), loc)
        } else {
            EnqueueResponse::Existing(Json(e), loc)
        })
    }

    /// Enqueue many jobs at once
    ///
    /// All or nothing: if any job is invalid nothing is enqueued and the problem names it by index.
    #[oai(path = "/v1/jobs/batch", method = "post")]
    async fn enqueue_batch(
        &self,
        auth: Seller,
        body: Json<BatchRequest>,
    ) -> Result<BatchEnqueueResponse, Problem> {
        let max = self.st.settings.api.batch_max;
        if body.0.jobs.len() > max {
            return Err(Problem::unprocessable(format!(
                "at most {max} jobs per batch, got {}",
                body.0.jobs.len()
            )));
        }
        let mut new = Vec::with_capacity(body.0.jobs.len());
        for (i, r) in body.0.jobs.iter().enumerate() {
            new.push(
                self.to_new_job(r, None)
                    .map_err(|p| prefix(p, &format!("jobs[{i}]: ")))?,
            );
        }
        // One key twice with different jobs: refused here, since inside the batch's transaction
        // the second would be answered with the first's id, which the rollback then erases.
        for (i, a) in new.iter().enumerate() {
            let Some(key) = &a.idempotency_key else {
                continue;
            };
            if let Some(j) = new[..i].iter().position(|b| {
                b.idempotency_key.as_ref() == Some(key) && (b.kind, &b.args) != (a.kind, &a.args)
            }) {
                return Err(Problem::conflict(format!(
                    "jobs[{j}] and jobs[{i}] share idempotency key {key:?} with different kinds or arguments"
                )));
            }
        }
        self.check_owned(&auth, &new).await?;
        let jobs = self.insert(auth.tenant(), new).await?;
        Ok(BatchEnqueueResponse::Accepted(Json(BatchResponse { jobs })))
    }

    /// Get a job
    #[oai(path = "/v1/jobs/:id", method = "get")]
    async fn get(&self, auth: Seller, id: Path<i64>) -> Result<Json<JobView>, Problem> {
        Ok(Json(JobView::from_row(
            queue::get_for(&self.st.pool, auth.job_scope(), id.0).await?,
        )))
    }

    /// List jobs, newest first
    ///
    /// Filter by kind and state; page with `cursor` (from `next_cursor`). Sellers see their
    /// tenant's jobs; ops users see every tenant's, or one with `tenant_id`.
    #[oai(path = "/v1/jobs", method = "get")]
    async fn list(
        &self,
        auth: Seller,
        /// Ops only: the jobs of this tenant.
        #[oai(validator(minimum(value = "1")))]
        tenant_id: Query<Option<i64>>,
        kind: Query<Option<super::KindName>>,
        state: Query<Option<JobState>>,
        /// At most 500, or `api.list_max` when that is lower.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page (a positive id).
        #[oai(validator(pattern = r"^[1-9][0-9]{0,17}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<JobList>, Problem> {
        let max = self.st.settings.api.list_max;
        let limit = limit.0.unwrap_or(50);
        if limit > max {
            return Err(Problem::bad_request(format!("limit must be at most {max}")));
        }
        let before_id = super::parse_cursor(cursor.0.as_deref())?;
        let tenant = match (auth.job_scope(), tenant_id.0) {
            (Some(own), None) => Some(own),
            (Some(_), Some(_)) => {
                return Err(Problem::forbidden(
                    "tenant_id is for ops users; sellers see their own jobs",
                ));
            }
            (None, t) => t,
        };
        let filter = ListFilter {
            tenant,
            kind: kind.0.map(|k| k.0),
            state: state.0,
            before_id,
            limit,
        };
        let rows = queue::list(&self.st.pool, &filter).await?;
        let next_cursor = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.id.to_string()))
            .flatten();
        Ok(Json(JobList {
            jobs: rows.into_iter().map(JobView::from_row).collect(),
            next_cursor,
        }))
    }

    /// Follow a job live (Server-Sent Events)
    ///
    /// Sends the job's current state at once, then every change (pending → running → retrying
    /// → … → done / dead / cancelled); the stream ends after a final state.
    #[oai(path = "/v1/jobs/:id/events", method = "get")]
    async fn events(
        &self,
        auth: Seller,
        id: Path<i64>,
    ) -> Result<EventStream<futures::stream::BoxStream<'static, JobEvent>>, Problem> {
        use futures::StreamExt;
        // Subscribe before the first read so no change falls between the two.
        let changes = self.st.job_changes.subscribe();
        queue::get_for(&self.st.pool, auth.job_scope(), id.0).await?;
        let watch = Watch {
            st: self.st.clone(),
            id: id.0,
            changes,
            last: None,
            started: false,
            over: false,
        };
        let stream = futures::stream::unfold(watch, Watch::next).boxed();
        Ok(EventStream::new(stream).keep_alive(std::time::Duration::from_secs(15)))
    }

    /// Retry a dead or cancelled job now
    #[oai(path = "/v1/jobs/:id/retry", method = "post")]
    async fn retry(&self, auth: Seller, id: Path<i64>) -> Result<Json<JobView>, Problem> {
        let row = queue::retry_for(&self.st.pool, auth.job_scope(), id.0).await?;
        self.st.job_events.changed([row.id]);
        self.st.notifier.poke(kind_name(&row.kind));
        audit_job(&self.st, &auth.0, "retry", row.id).await?;
        Ok(Json(JobView::from_row(row)))
    }

    /// Cancel a job that has not started
    #[oai(path = "/v1/jobs/:id/cancel", method = "post")]
    async fn cancel(&self, auth: Seller, id: Path<i64>) -> Result<Json<JobView>, Problem> {
        let row = queue::cancel_for(&self.st.pool, auth.job_scope(), id.0).await?;
        self.st.job_events.changed([row.id]);
        audit_job(&self.st, &auth.0, "cancel", row.id).await?;
        Ok(Json(JobView::from_row(row)))
    }
}

/// Records an operator's action on one job in the audit log.
async fn audit_job(
    st: &AppState,
    user: &crate::auth::User,
    action: &str,
    id: i64,
) -> Result<(), Problem> {
    jobs::audit::record(
        &st.pool,
        &jobs::audit::Action {
            actor: &crate::auth::Actor::user(user),
            action,
            target: Some(id.to_string()),
            filter: None,
            count: 1,
            reason: None,
        },
    )
    .await
    .map_err(Into::into)
}

/// The static name of a stored kind (the notifier takes `&'static str`).
pub(crate) fn kind_name(k: &str) -> &'static str {
    ALL_KINDS
        .iter()
        .find(|n| **n == k)
        .copied()
        .unwrap_or("unknown")
}

fn prefix(p: Problem, pre: &str) -> Problem {
    match p {
        Problem::Unprocessable(mut b) => {
            b.0.detail = format!("{pre}{}", b.0.detail);
            Problem::Unprocessable(b)
        }
        other => other,
    }
}
