//! The process-wide half of the queue backend, shared by every kind's [`crate::backend::PgBackend`]:
//! the worker row and its heartbeat (the lease on every job this process holds), rescue of jobs
//! held by dead processes, the LISTEN connection that wakes fetchers, and the batched acker.
//!
//! Leases are per process, renewed by a task of their own, so a busy or buffering worker is never
//! mistaken for a dead one (apalis-postgres D4). Worker ids are unique per process start (D8).
//! Every ack is fenced by (locked_by, attempt): a late ack from a process presumed dead matches no
//! row and is dropped with a warning instead of overwriting the new owner's result.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::job::Policy;
use crate::queue::{CHANNEL, CONTROL_CHANNEL};
use crate::settings::Settings;

/// What became of one claimed run.
#[derive(Debug)]
pub enum Outcome {
    Done(Value),
    /// Back to waiting after `delay`; the attempt stays consumed.
    Retry {
        delay: Duration,
        error: Value,
    },
    /// Back to waiting after `delay`; the attempt is given back.
    Snooze {
        delay: Duration,
        error: Value,
    },
    Dead {
        error: Value,
    },
    /// Claimed but never started (shutdown): waiting again now, attempt given back.
    Release,
}

#[derive(Debug)]
pub struct Ack {
    pub id: i64,
    pub attempt: i32,
    pub outcome: Outcome,
}

/// Ack statements in flight at once per process. In a drain the backend writing acks was the
/// busiest (its UPDATE is CPU-bound in Postgres); with two, one process's acks use two backends.
const ACK_WRITERS: usize = 2;

/// Ack statements under way; each yields its batch once written.
type Writes = FuturesUnordered<BoxFuture<'static, Vec<Ack>>>;

enum AckMsg {
    Ack(Ack),
    Flush(oneshot::Sender<()>),
}

/// An error entry as stored in `last_error` / `errors[]`.
pub fn error_entry(attempt: i32, class: &str, message: &str) -> Value {
    json!({ "attempt": attempt, "at": chrono::Utc::now(), "class": class, "message": message })
}

pub struct Runtime {
    pub worker_id: String,
    pub metrics: &'static crate::metrics::Metrics,
    /// Announces claimed and finished jobs to live-status listeners.
    pub events: crate::queue::Notifier,
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    wake: HashMap<&'static str, Arc<Notify>>,
    acks: mpsc::UnboundedSender<AckMsg>,
    /// Cancelled on SIGTERM: fetchers stop claiming.
    stop_fetching: CancellationToken,
    /// Cancelled when the process is done: heartbeat and listener stop.
    stop_all: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
    /// Jobs claimed by this process whose outcome is not written yet. A row running under our
    /// id but missing here was claimed by a statement whose answer never arrived (connection
    /// lost): our live lease would hold it forever, so the heartbeat hands it back.
    held: std::sync::Mutex<HashSet<i64>>,
    /// Kinds an operator paused: their fetchers claim nothing.
    paused: std::sync::RwLock<HashSet<String>>,
}

impl Runtime {
    /// Registers this process and starts its heartbeat, rescuer, listener and acker.
    pub async fn start(
        pool: PgPool,
        settings: Arc<Settings>,
        kinds: &[(&'static str, Policy)],
    ) -> Result<Arc<Self>, sqlx::Error> {
        let host = hostname();
        let pid = std::process::id();
        let worker_id = format!("{host}-{pid}-{:08x}", rand::random::<u32>());
        let concurrency: serde_json::Map<String, Value> = kinds
            .iter()
            .map(|(k, p)| (k.to_string(), json!(p.concurrency)))
            .collect();
        let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
        sqlx::query(
            "INSERT INTO workers (id, host, pid, kinds, concurrency) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&worker_id)
        .bind(&host)
        .bind(pid as i32)
        .bind(&names)
        .bind(Value::Object(concurrency))
        .execute(&pool)
        .await?;

        let (tx, rx) = mpsc::unbounded_channel();
        let rt = Arc::new(Self {
            worker_id,
            metrics: crate::metrics::global(),
            events: crate::queue::Notifier::job_events(pool.clone()),
            pool,
            settings,
            wake: kinds
                .iter()
                .map(|(k, _)| (*k, Arc::new(Notify::new())))
                .collect(),
            acks: tx,
            stop_fetching: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            held: std::sync::Mutex::new(HashSet::new()),
            paused: std::sync::RwLock::new(HashSet::new()),
        });
        rt.refresh_paused().await?;
        let handles = vec![
            tokio::spawn(rt.clone().acker(rx)),
            tokio::spawn(rt.clone().heartbeat()),
            tokio::spawn(rt.clone().listen()),
        ];
        *rt.tasks.lock().await = handles;
        tracing::info!(worker_id = %rt.worker_id, kinds = ?names, "worker process registered");
        Ok(rt)
    }

    /// The wake-up of `kind`'s fetcher (notified by LISTEN; stores one permit if nobody waits).
    pub fn waker(&self, kind: &str) -> Arc<Notify> {
        self.wake.get(kind).cloned().unwrap_or_default()
    }

    pub fn fetching_stopped(&self) -> CancellationToken {
        self.stop_fetching.clone()
    }

    /// First step of graceful shutdown: no fetcher claims anything more.
    pub fn stop_fetching(&self) {
        self.stop_fetching.cancel();
    }

    pub fn is_paused(&self, kind: &str) -> bool {
        self.paused.read().expect("paused lock").contains(kind)
    }

    /// Reloads the paused kinds; wakes the fetchers of kinds that were resumed.
    async fn refresh_paused(&self) -> Result<(), sqlx::Error> {
        let now: HashSet<String> = crate::queue::paused_kinds(&self.pool)
            .await?
            .into_iter()
            .collect();
        let resumed: Vec<String> = {
            let mut cur = self.paused.write().expect("paused lock");
            let resumed = cur.difference(&now).cloned().collect();
            *cur = now;
            resumed
        };
        for k in resumed {
            if let Some(w) = self.wake.get(k.as_str()) {
                w.notify_one();
            }
        }
        Ok(())
    }

    /// Records where this process serves its metrics.
    pub async fn set_metrics_url(&self, url: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE workers SET metrics_url = $2 WHERE id = $1")
            .bind(&self.worker_id)
            .bind(url)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Records jobs just claimed by this process (before they are dispatched).
    pub fn hold(&self, ids: impl IntoIterator<Item = i64>) {
        self.held.lock().expect("held lock").extend(ids);
    }

    pub fn ack(&self, ack: Ack) {
        if self.acks.send(AckMsg::Ack(ack)).is_err() {
            tracing::error!("acker gone; the job's lease will expire and it will run again");
        }
    }

    /// Waits until every ack sent before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.acks.send(AckMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Last step of shutdown: flush acks, hand back jobs still marked running here (handlers cut
    /// off by the shutdown deadline) without consuming their attempt, deregister.
    pub async fn stop(&self) -> Result<(), sqlx::Error> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.stop_fetching.cancel();
        self.flush().await;
        let handed_back = sqlx::query(
            "UPDATE jobs SET state = 'available', attempt = greatest(attempt - 1, 0), run_at = now(), locked_by = NULL
              WHERE state = 'running' AND locked_by = $1",
        )
        .bind(&self.worker_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if handed_back > 0 {
            tracing::warn!(
                handed_back,
                "jobs cut off by the shutdown deadline were handed back"
            );
        }
        sqlx::query("UPDATE workers SET stopped_at = now() WHERE id = $1")
            .bind(&self.worker_id)
            .execute(&self.pool)
            .await?;
        self.stop_all.cancel();
        for h in self.tasks.lock().await.drain(..) {
            let _ = h.await;
        }
        tracing::info!(worker_id = %self.worker_id, "worker process deregistered");
        Ok(())
    }

    async fn acker(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
        let max = self.settings.worker.ack_batch;
        let mut writing: Writes = FuturesUnordered::new();
        let mut flushes = Vec::new();
        loop {
            // `stop` flushes before it cancels, so nothing sent before the stop is lost.
            let first = tokio::select! {
                Some(batch) = writing.next(), if !writing.is_empty() => {
                    self.written(&batch);
                    continue;
                }
                m = rx.recv(), if writing.len() < ACK_WRITERS => m,
                _ = self.stop_all.cancelled() => None,
            };
            let Some(first) = first else {
                // A statement under way is finished, never dropped halfway.
                self.finish_writes(&mut writing).await;
                return;
            };
            let mut batch = Vec::with_capacity(max);
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    AckMsg::Ack(a) => batch.push(a),
                    AckMsg::Flush(tx) => flushes.push(tx),
                }
                if batch.len() < max {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                let this = self.clone();
                writing.push(Box::pin(async move {
                    this.write_acks(&batch).await;
                    batch
                }));
            }
            if !flushes.is_empty() {
                // Every ack sent before the flush is in a batch now: wait for all of them.
                self.finish_writes(&mut writing).await;
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
            }
        }
    }

    async fn finish_writes(&self, writing: &mut Writes) {
        while let Some(batch) = writing.next().await {
            self.written(&batch);
        }
    }

    /// After a batch of acks is written: its jobs are no longer held here.
    fn written(&self, batch: &[Ack]) {
        let mut held = self.held.lock().expect("held lock");
        for a in batch {
            held.remove(&a.id);
        }
        drop(held);
        self.events.changed(batch.iter().map(|a| a.id));
    }

    /// Writes a batch of outcomes in one statement, retrying while the database is unreachable
    /// (for at most one lease: after that the jobs were rescued and the acks are stale anyway).
    async fn write_acks(&self, batch: &[Ack]) {
        let n = batch.len();
        let (mut ids, mut attempts, mut states, mut delays) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut attempt_deltas, mut snooze_deltas, mut results, mut last_errors, mut history) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for a in batch {
            ids.push(a.id);
            attempts.push(a.attempt);
            let (state, delay, attempt_delta, snooze_delta, result, last, hist) = match &a.outcome {
                Outcome::Done(v) => ("done", Duration::ZERO, 0, 0, Some(v), None, None),
                Outcome::Retry { delay, error } => {
                    ("available", *delay, 0, 0, None, Some(error), Some(error))
                }
                Outcome::Snooze { delay, error } => {
                    ("available", *delay, -1, 1, None, Some(error), None)
                }
                Outcome::Dead { error } => {
                    ("dead", Duration::ZERO, 0, 0, None, Some(error), Some(error))
                }
                Outcome::Release => ("available", Duration::ZERO, -1, 0, None, None, None),
            };
            states.push(state);
            delays.push(delay.as_millis() as i64);
            attempt_deltas.push(attempt_delta);
            snooze_deltas.push(snooze_delta);
            results.push(result.cloned());
            last_errors.push(last.cloned());
            history.push(hist.cloned());
        }
        let started = Instant::now();
        let mut retried = false;
        // `j.id = ANY($2)` lets the planner find the rows by primary key even when statistics
        // were taken on an empty table (queues often are); a join on `u.id` alone then became a
        // nested loop over a sequential scan, 1,000 acks taking seconds.
        loop {
            let res = sqlx::query(
                "UPDATE jobs j SET
                    state = u.state,
                    run_at = CASE WHEN u.state = 'available' THEN now() + u.delay_ms * interval '1 millisecond' ELSE j.run_at END,
                    attempt = j.attempt + u.attempt_delta,
                    snoozes = j.snoozes + u.snooze_delta,
                    finished_at = CASE WHEN u.state IN ('done', 'dead') THEN now() END,
                    result = CASE WHEN u.state = 'done' THEN u.result ELSE j.result END,
                    last_error = coalesce(u.last_error, j.last_error),
                    errors = CASE WHEN u.hist IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(u.hist) END,
                    locked_by = NULL
                  FROM unnest($2::bigint[], $3::int[], $4::text[], $5::bigint[], $6::int[], $7::int[],
                              $8::jsonb[], $9::jsonb[], $10::jsonb[])
                       AS u(id, attempt, state, delay_ms, attempt_delta, snooze_delta, result, last_error, hist)
                 WHERE j.id = ANY($2) AND j.id = u.id AND j.state = 'running' AND j.locked_by = $1
                   AND j.attempt = u.attempt",
            )
            .bind(&self.worker_id)
            .bind(&ids)
            .bind(&attempts)
            .bind(&states)
            .bind(&delays)
            .bind(&attempt_deltas)
            .bind(&snooze_deltas)
            .bind(&results)
            .bind(&last_errors)
            .bind(&history)
            .execute(&self.pool)
            .await;
            match res {
                Ok(r) if (r.rows_affected() as usize) < n && retried => {
                    // The failed attempt may have committed before its connection broke (a
                    // server crash between commit and answer): those rows are already ours.
                    tracing::info!(
                        written = r.rows_affected(),
                        sent = n,
                        "some acks matched no row on retry: written by the attempt whose answer was lost, or fenced"
                    );
                    return;
                }
                Ok(r) => {
                    if (r.rows_affected() as usize) < n {
                        tracing::warn!(
                            written = r.rows_affected(),
                            sent = n,
                            "some acks were fenced off: those jobs were rescued by another process"
                        );
                    }
                    return;
                }
                Err(e) if started.elapsed() < self.settings.worker.lease_timeout() => {
                    retried = true;
                    tracing::warn!(error = %e, "ack write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, acks = n, "ack write failed for a whole lease; giving up, the jobs will be rescued");
                    return;
                }
            }
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        let w = &self.settings.worker;
        let mut tick = tokio::time::interval(w.heartbeat());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop_all.cancelled() => return,
            }
            // Bounded by what is left of the lease: a beat stuck on an unreachable database (the
            // pool waits 10 s for a connection) must not stretch the time until the lease is
            // judged, while a slow beat on a loaded machine still counts if it lands in time.
            let left = w
                .lease_timeout()
                .saturating_sub(last_ok.elapsed())
                .max(Duration::from_millis(50));
            let beat = match tokio::time::timeout(left, self.beat()).await {
                Ok(Ok(true)) => {
                    last_ok = Instant::now();
                    true
                }
                Ok(Ok(false)) => self.lease_lost("another process declared this worker dead"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    false
                }
                Err(_) => {
                    tracing::warn!("heartbeat timed out");
                    false
                }
            };
            if last_ok.elapsed() >= w.lease_timeout() {
                self.lease_lost("no heartbeat succeeded for a whole lease");
            }
            // Housekeeping only with the database answering, and bounded, so the next beat is
            // never held up for long.
            if beat
                && tokio::time::timeout(w.lease_timeout() / 2, self.housekeeping())
                    .await
                    .is_err()
            {
                tracing::warn!("housekeeping timed out");
            }
        }
    }

    async fn housekeeping(&self) {
        let lease = self.settings.worker.lease_timeout();
        if let Err(e) = self.refresh_paused().await {
            tracing::warn!(error = %e, "reading paused kinds failed");
        }
        if let Err(e) = self.release_stranded().await {
            tracing::warn!(error = %e, "stranded-claim check failed");
        }
        match rescue(&self.pool, lease).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    rescued = n,
                    "jobs of dead worker processes put back to run again"
                );
                for w in self.wake.values() {
                    w.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "rescue failed"),
        }
    }

    /// Hands back rows running under our id that no part of this process holds (see `held`).
    /// Only rows claimed more than a heartbeat ago are looked at, so a claim whose rows are
    /// being recorded right now is never mistaken for a lost one.
    async fn release_stranded(&self) -> Result<(), sqlx::Error> {
        let running: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND locked_by = $1
                AND attempted_at < now() - make_interval(secs => $2)",
        )
        .bind(&self.worker_id)
        .bind(self.settings.worker.heartbeat().as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let stranded: Vec<i64> = {
            let held = self.held.lock().expect("held lock");
            running
                .into_iter()
                .filter(|id| !held.contains(id))
                .collect()
        };
        if stranded.is_empty() {
            return Ok(());
        }
        let n = sqlx::query(
            "UPDATE jobs SET state = 'available', attempt = greatest(attempt - 1, 0), run_at = now(), locked_by = NULL
              WHERE id = ANY($1) AND state = 'running' AND locked_by = $2",
        )
        .bind(&stranded)
        .bind(&self.worker_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        tracing::warn!(
            released = n,
            "claimed jobs whose claim answer was lost were handed back"
        );
        Ok(())
    }

    async fn beat(&self) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "UPDATE workers SET heartbeat_at = now() WHERE id = $1 AND stopped_at IS NULL",
        )
        .bind(&self.worker_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Our jobs may already run elsewhere: every handler of this process must stop at once to
    /// keep "never twice in parallel". The process replaces itself (exec: same pid, nothing of
    /// the old one runs on), and the new image waits for Postgres and registers under a new
    /// worker id — no supervisor needed.
    fn lease_lost(&self, why: &str) -> ! {
        tracing::error!(worker_id = %self.worker_id, why, "lease lost; stopping every job and re-registering");
        self.stop_fetching.cancel();
        let err = respawn();
        // exec failed (binary gone): exiting still stops every job; a supervisor restarts us.
        tracing::error!(error = %err, "cannot re-execute this process; exiting");
        std::process::exit(70);
    }

    async fn listen(self: Arc<Self>) {
        loop {
            match self.listen_once().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "listener lost; reconnecting (polling covers the gap)")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = self.stop_all.cancelled() => return,
            }
        }
    }

    async fn listen_once(&self) -> Result<(), sqlx::Error> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        l.listen_all([CHANNEL, CONTROL_CHANNEL]).await?;
        self.refresh_paused().await?;
        // Anything enqueued while we were not listening is picked up now, not at the next poll.
        for w in self.wake.values() {
            w.notify_one();
        }
        loop {
            tokio::select! {
                n = l.recv() => {
                    let n = n?;
                    if n.channel() == CONTROL_CHANNEL {
                        self.refresh_paused().await?;
                    } else if let Some(w) = self.wake.get(n.payload()) {
                        w.notify_one();
                    }
                }
                _ = self.stop_all.cancelled() => return Ok(()),
            }
        }
    }
}

/// Puts jobs held by dead worker processes back to run (or dead, when that was their last
/// attempt), and marks those processes stopped. Safe to run from every process concurrently.
pub async fn rescue(pool: &PgPool, lease: Duration) -> Result<u64, sqlx::Error> {
    let secs = lease.as_secs_f64();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE workers SET stopped_at = now()
          WHERE stopped_at IS NULL AND heartbeat_at < now() - make_interval(secs => $1)",
    )
    .bind(secs)
    .execute(&mut *tx)
    .await?;
    let n = sqlx::query(
        "WITH orphans AS (
            SELECT j.id,
                   jsonb_build_object('attempt', j.attempt, 'at', now(), 'class', 'rescued',
                     'message', 'worker process ' || coalesce(j.locked_by, '?') ||
                                ' stopped heartbeating while running this job') AS entry
              FROM jobs j
             WHERE j.state = 'running'
               AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = j.locked_by AND w.stopped_at IS NULL)
             FOR UPDATE OF j SKIP LOCKED)
         UPDATE jobs j SET
            state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'available' END,
            finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
            run_at = now(),
            last_error = o.entry,
            errors = j.errors || jsonb_build_array(o.entry),
            locked_by = NULL
           FROM orphans o
          WHERE j.id = o.id",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Replaces this process with a fresh run of the same binary and arguments. Returns only if
/// the exec failed.
fn respawn() -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        // A rebuilt binary leaves "… (deleted)"; the new one at the same path is what to run.
        Ok(p) => std::path::PathBuf::from(
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string(),
        ),
        Err(e) => return e,
    };
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
