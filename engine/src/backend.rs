//! The Postgres backend apalis-core workers run on, one [`PgBackend`] per kind per process.
//!
//! A fetcher task claims jobs with `UPDATE … WHERE id = ANY(ARRAY(SELECT … FOR UPDATE SKIP
//! LOCKED LIMIT n))`, never more than the kind's free slots (a semaphore of `concurrency`
//! permits, each held from claim to the end of the run), so nothing waits in a buffer while
//! another process could run it. It claims again at once while batches come back full, and
//! otherwise sleeps until a NOTIFY for its kind or the poll interval.
//!
//! [`AckLayer`], the backend's middleware, sees every run's outcome: it applies the kind's timeout,
//! catches panics, classifies the result (done / retry with backoff / snooze / dead) and hands it to
//! the process's batched acker ([`Runtime::ack`]). Retries and snoozes move the row's `run_at`, so
//! a waiting job holds no slot and no connection and survives any restart.

use std::any::Any;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::BoxDynError;
use apalis_core::monitor::Monitor;
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::task::from_request::FromRequest;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

use crate::job::{Context as _, Job, JobError, Policy, RunInfo};
use crate::runtime::{Ack, Outcome, Runtime, error_entry};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The claim carried by a task from fetch to ack: who it is and the slot it occupies.
#[derive(Clone)]
struct Slot {
    id: i64,
    attempt: i32,
    max_attempts: i32,
    snoozes: i32,
    /// When the job became due (its run time when claimed).
    due: chrono::DateTime<chrono::Utc>,
    /// Put on the run's span: the enqueuing request's trace id, the marketplace it concerns.
    trace_id: Option<Arc<str>>,
    marketplace: Option<Arc<str>>,
    permit: Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Slot {
    fn free(&self) {
        self.permit.lock().expect("slot lock").take();
    }
}

/// Handlers take `RunInfo` as an apalis extractor.
impl<J: Sync> FromRequest<Task<J>> for RunInfo {
    type Error = JobError;
    async fn from_request(task: &Task<J>) -> Result<Self, JobError> {
        let s = task
            .ctx()
            .data()
            .get::<Slot>()
            .ok_or_else(|| JobError::permanent("task without a claim"))?;
        Ok(RunInfo {
            job_id: s.id,
            attempt: s.attempt,
            max_attempts: s.max_attempts,
            snoozes: s.snoozes,
        })
    }
}

pub struct PgBackend<J> {
    rt: Arc<Runtime>,
    policy: Policy,
    rx: Option<mpsc::UnboundedReceiver<Task<J>>>,
    fetcher: Option<(JoinHandle<()>, CancellationToken)>,
    closing: Option<BoxFuture<'static, Result<(), BackendError>>>,
}

impl<J: Job> PgBackend<J> {
    pub fn new(rt: Arc<Runtime>, policy: Policy) -> Self {
        Self {
            rt,
            policy,
            rx: None,
            fetcher: None,
            closing: None,
        }
    }

    fn ensure_started(&mut self) {
        if self.rx.is_some() {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let fetcher = Fetcher::<J> {
            rt: self.rt.clone(),
            slots: Arc::new(Semaphore::new(self.policy.concurrency)),
            batch: self.rt.settings.worker.claim_batch,
            tx,
            stop: stop.clone(),
            _job: PhantomData,
        };
        self.fetcher = Some((tokio::spawn(fetcher.run()), stop));
        self.rx = Some(rx);
    }
}

impl<J: Job> Backend for PgBackend<J> {
    type Task = Task<J>;
    type Error = BackendError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), BackendError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<J>, BackendError>>> {
        self.ensure_started();
        let rx = self.rx.as_mut().expect("started");
        rx.poll_recv(cx).map(|t| t.map(Ok))
    }

    /// Called once in-flight runs are over: stop the fetcher, hand back what it claimed but no
    /// run started (attempt given back), and wait until every ack of this process is written.
    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), BackendError>> {
        if self.closing.is_none() {
            let fetcher = self.fetcher.take();
            let mut rx = self.rx.take();
            let rt = self.rt.clone();
            self.closing = Some(Box::pin(async move {
                if let Some((handle, stop)) = fetcher {
                    stop.cancel();
                    let _ = handle.await;
                }
                if let Some(rx) = rx.as_mut() {
                    while let Ok(task) = rx.try_recv() {
                        if let Some(s) = task.ctx().data().get::<Slot>() {
                            rt.metrics.inc(
                                "stoflow_jobs_finished_total",
                                &[("kind", J::KIND), ("outcome", "released")],
                                1,
                            );
                            rt.ack(Ack {
                                id: s.id,
                                attempt: s.attempt,
                                outcome: Outcome::Release,
                            });
                        }
                    }
                }
                rt.flush().await;
                Ok(())
            }));
        }
        self.closing.as_mut().expect("set above").as_mut().poll(cx)
    }
}

impl<J: Job> BackendConfig for PgBackend<J> {
    type Args = J;
    type Id = u64;
    type Kind = Ephemeral;
    type Config = Policy;
    type Layer = AckLayer;

    fn config(&self) -> &Policy {
        &self.policy
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> AckLayer {
        AckLayer {
            rt: self.rt.clone(),
            policy: self.policy,
            kind: J::KIND,
        }
    }
}

struct Fetcher<J> {
    rt: Arc<Runtime>,
    slots: Arc<Semaphore>,
    batch: usize,
    tx: mpsc::UnboundedSender<Task<J>>,
    stop: CancellationToken,
    _job: PhantomData<fn() -> J>,
}

impl<J: Job> Fetcher<J> {
    async fn run(self) {
        let wake = self.rt.waker(J::KIND);
        let sigterm = self.rt.fetching_stopped();
        let poll = self.rt.settings.worker.poll_interval();
        loop {
            // One free slot at least, then as many more as are free right now.
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = self.stop.cancelled() => return,
                _ = sigterm.cancelled() => return,
            };
            if self.rt.is_paused(J::KIND) {
                drop(first);
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = self.stop.cancelled() => return,
                    _ = sigterm.cancelled() => return,
                }
                continue;
            }
            let mut permits = vec![first];
            while permits.len() < self.batch {
                match self.slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let want = permits.len();
            let got = match self.claim(want).await {
                Ok(rows) => {
                    let got = rows.len();
                    self.rt.hold(rows.iter().map(|r| r.id));
                    self.rt.events.changed(rows.iter().map(|r| r.id));
                    for (row, permit) in rows.into_iter().zip(permits.drain(..)) {
                        self.dispatch(row, permit);
                    }
                    got
                }
                Err(e) => {
                    tracing::warn!(kind = J::KIND, error = %e, "claim failed; retrying");
                    drop(permits);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            drop(permits); // the slots this round did not fill
            if got == want {
                continue; // a full batch: there may be more right now
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = self.stop.cancelled() => return,
                _ = sigterm.cancelled() => return,
            }
        }
    }

    async fn claim(&self, n: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        let mut rows: Vec<Claimed> = sqlx::query_as(CLAIM_SQL)
            .bind(&self.rt.worker_id)
            .bind(J::KIND)
            .bind(n as i64)
            .bind(self.rt.settings.worker.lease_timeout().as_secs_f64())
            .fetch_all(&self.rt.pool)
            .await?;
        rows.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.run_at.cmp(&b.run_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(rows)
    }

    fn dispatch(&self, row: Claimed, permit: OwnedSemaphorePermit) {
        let marketplace = row
            .args
            .get("marketplace")
            .and_then(Value::as_str)
            .map(Arc::from);
        let args = match serde_json::from_value::<J>(row.args) {
            Ok(a) => a,
            Err(e) => {
                // A payload this build cannot read will never run: dead, reason kept.
                let error = error_entry(
                    row.attempt,
                    "invalid_payload",
                    &format!("cannot decode {} args: {e}", J::KIND),
                );
                self.rt.ack(Ack {
                    id: row.id,
                    attempt: row.attempt,
                    outcome: Outcome::Dead { error },
                });
                return;
            }
        };
        let slot = Slot {
            id: row.id,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            snoozes: row.snoozes,
            due: row.run_at,
            trace_id: row.trace_id.as_deref().map(Arc::from),
            marketplace,
            permit: Arc::new(std::sync::Mutex::new(Some(permit))),
        };
        let task = TaskBuilder::new(args)
            .task_id(TaskId::from_int(row.id as u64))
            // apalis counts the attempt up when the run starts.
            .attempt((row.attempt - 1).max(0) as usize)
            .max_attempts(row.max_attempts as usize)
            .data(slot.clone())
            .build();
        if let Err(e) = self.tx.send(task) {
            // The worker is gone (shutdown raced the claim): give the job back untouched.
            drop(e);
            self.rt.ack(Ack {
                id: slot.id,
                attempt: slot.attempt,
                outcome: Outcome::Release,
            });
        }
    }
}

/// Claims up to $3 ready jobs of kind $2 for worker $1. The inner SELECT walks the partial index
/// of waiting rows only; `id = ANY(ARRAY(…))` keeps the planner from joining against the whole
/// table however many finished rows it holds (apalis-postgres D3). Fenced by the claimer's own
/// lease: a worker declared dead, or whose heartbeat is older than $4 seconds (frozen, cut off),
/// claims nothing (a one-time check, not per row).
pub const CLAIM_SQL: &str =
    "UPDATE jobs SET state = 'running', attempt = attempt + 1, attempted_at = now(), locked_by = $1
  WHERE id = ANY(ARRAY(
        SELECT id FROM jobs
         WHERE state = 'available' AND kind = $2 AND run_at <= now()
           AND EXISTS (SELECT 1 FROM workers w WHERE w.id = $1 AND w.stopped_at IS NULL
                         AND w.heartbeat_at > now() - make_interval(secs => $4))
         ORDER BY priority DESC, run_at, id
         LIMIT $3
         FOR UPDATE SKIP LOCKED))
 RETURNING id, attempt, max_attempts, snoozes, priority, run_at, args, trace_id";

#[derive(sqlx::FromRow)]
struct Claimed {
    id: i64,
    attempt: i32,
    max_attempts: i32,
    snoozes: i32,
    priority: i16,
    run_at: chrono::DateTime<chrono::Utc>,
    args: Value,
    trace_id: Option<String>,
}

/// The backend's middleware: timeout, panic capture, classification, ack.
#[derive(Clone)]
pub struct AckLayer {
    rt: Arc<Runtime>,
    policy: Policy,
    kind: &'static str,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;
    fn layer(&self, inner: S) -> AckService<S> {
        AckService {
            inner,
            rt: self.rt.clone(),
            policy: self.policy,
            kind: self.kind,
        }
    }
}

#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    rt: Arc<Runtime>,
    policy: Policy,
    kind: &'static str,
}

impl<S, J> Service<Task<J>> for AckService<S>
where
    S: Service<Task<J>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Serialize + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<J>) -> Self::Future {
        let slot = task.ctx().data().get::<Slot>().cloned();
        let fut = self.inner.call(task);
        let (rt, policy, kind) = (self.rt.clone(), self.policy, self.kind);
        // Every log line of the run carries these; handlers may record `marketplace` (and, with
        // tenants, `tenant`) when only they know it: `Span::current().record(..)`.
        let span = tracing::info_span!(
            "job",
            job.id = slot.as_ref().map(|s| s.id),
            job.kind = kind,
            job.attempt = slot.as_ref().map(|s| s.attempt),
            marketplace = slot.as_ref().and_then(|s| s.marketplace.as_deref()),
            trace_id = slot.as_ref().and_then(|s| s.trace_id.as_deref()),
            tenant = tracing::field::Empty,
            otel.name = %format_args!("job {kind}"),
            otel.status_code = tracing::field::Empty,
        );
        // With OTLP export on, the run joins the trace of the request that enqueued the job.
        if let Some(t) = slot.as_ref().and_then(|s| s.trace_id.as_deref()) {
            crate::telemetry::adopt_trace(&span, t, None);
        }
        let run = async move {
            let started = std::time::Instant::now();
            if let Some(s) = &slot {
                let late = (chrono::Utc::now() - s.due).to_std().unwrap_or_default();
                rt.metrics
                    .inc("stoflow_jobs_started_total", &[("kind", kind)], 1);
                rt.metrics
                    .observe("stoflow_job_start_latency_seconds", &[("kind", kind)], late);
            }
            let ran = AssertUnwindSafe(tokio::time::timeout(policy.timeout, fut))
                .catch_unwind()
                .await;
            let Some(slot) = slot else {
                return Err("task without a claim".into());
            };
            slot.free();
            rt.metrics.observe(
                "stoflow_job_run_seconds",
                &[("kind", kind)],
                started.elapsed(),
            );
            let failed = |class: &str, msg: String| {
                (retry_or_dead(&slot, &policy, class, &msg), Err(msg.into()))
            };
            let (outcome, ret) = match ran {
                Ok(Ok(Ok(resp))) => match serde_json::to_value(&resp) {
                    Ok(v) => (Outcome::Done(v), Ok(resp)),
                    Err(e) => failed("invalid_result", format!("result does not serialize: {e}")),
                },
                Ok(Ok(Err(e))) => {
                    let e: BoxDynError = e.into();
                    (classify(&e, &slot, &policy), Err(e))
                }
                Ok(Err(_)) => failed(
                    "timeout",
                    format!("run exceeded the {:?} timeout", policy.timeout),
                ),
                Err(panic) => failed(
                    "panic",
                    format!("handler panicked: {}", panic_message(&panic)),
                ),
            };
            let label = match &outcome {
                Outcome::Done(_) => "done",
                Outcome::Retry { .. } => "retry",
                Outcome::Snooze { .. } => "snooze",
                Outcome::Dead { .. } => "dead",
                Outcome::Release => "released",
            };
            rt.metrics.inc(
                "stoflow_jobs_finished_total",
                &[("kind", kind), ("outcome", label)],
                1,
            );
            // Failures at info (people look for them), successes at debug (hot path).
            match &outcome {
                Outcome::Done(_) => tracing::debug!(outcome = label, "job run finished"),
                Outcome::Retry { error, .. }
                | Outcome::Snooze { error, .. }
                | Outcome::Dead { error } => {
                    // A snooze is "not now" (a rate limit, a lock), not a failed run.
                    if !matches!(outcome, Outcome::Snooze { .. }) {
                        tracing::Span::current().record("otel.status_code", "ERROR");
                    }
                    tracing::info!(outcome = label, error = %error, "job run failed")
                }
                Outcome::Release => {}
            }
            rt.ack(Ack {
                id: slot.id,
                attempt: slot.attempt,
                outcome,
            });
            ret
        };
        Box::pin(tracing::Instrument::instrument(run, span))
    }
}

fn retry_or_dead(slot: &Slot, policy: &Policy, class: &str, msg: &str) -> Outcome {
    if slot.attempt >= slot.max_attempts {
        let msg = format!(
            "{msg} (attempts exhausted: {}/{})",
            slot.attempt, slot.max_attempts
        );
        Outcome::Dead {
            error: error_entry(slot.attempt, class, &msg),
        }
    } else {
        let delay = policy.backoff_after(slot.attempt);
        Outcome::Retry {
            delay,
            error: with_delay(error_entry(slot.attempt, class, msg), delay),
        }
    }
}

fn permanent(mut entry: Value) -> Value {
    entry["permanent"] = Value::Bool(true);
    entry
}

/// Records how long the queue waits before the next run, for people and for tests.
fn with_delay(mut entry: Value, delay: Duration) -> Value {
    entry["delay_ms"] = Value::from(delay.as_millis() as u64);
    entry
}

fn classify(e: &BoxDynError, slot: &Slot, policy: &Policy) -> Outcome {
    match e.downcast_ref::<JobError>() {
        Some(JobError::Permanent { class, message }) => Outcome::Dead {
            // Marked, so nobody is offered a retry that would fail the same way.
            error: permanent(error_entry(slot.attempt, class, message)),
        },
        Some(JobError::Snooze {
            after,
            class,
            message,
        }) => Outcome::Snooze {
            delay: *after,
            error: with_delay(error_entry(slot.attempt, class, message), *after),
        },
        Some(JobError::Retry { class, message }) => retry_or_dead(slot, policy, class, message),
        // Not from the handler (e.g. an extractor): treat as transient.
        None => retry_or_dead(slot, policy, "retryable", &e.to_string()),
    }
}

fn panic_message(p: &Box<dyn Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// The apalis handler of every kind: hands the typed args to [`Job::run`].
pub async fn run_job<J: Job>(
    args: J,
    ctx: Data<J::Context>,
    run: RunInfo,
) -> Result<Value, JobError> {
    let ctx: J::Context = (*ctx).clone();
    ctx.scope(args.run(ctx.clone(), run)).await
}

/// Registers kind `J` on `monitor`: one apalis worker on a [`PgBackend`] for this process.
pub fn register<J: Job>(monitor: Monitor, rt: &Arc<Runtime>, ctx: &J::Context) -> Monitor {
    let (rt, ctx) = (rt.clone(), ctx.clone());
    let policy = J::POLICY.resolved(J::KIND, &rt.settings.kinds);
    monitor.register(move |_restarts| {
        WorkerBuilder::new(format!("{}@{}", J::KIND, rt.worker_id))
            .backend(PgBackend::<J>::new(rt.clone(), policy))
            .data(ctx.clone())
            .build(run_job::<J>)
    })
}
