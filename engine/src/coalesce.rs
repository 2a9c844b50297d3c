//! Single-job enqueues from many concurrent requests, written together.
//!
//! Each `POST /v1/jobs` used to be its own INSERT and its own durable commit; at a few thousand
//! requests a second the commits, not the rows, were the cost. Requests that arrive while earlier
//! batches are being written wait in a channel and go out as one multi-row INSERT (one commit),
//! so a lone request still goes out at once and a busy API writes tens of jobs per commit. A
//! caller is answered only after its batch committed: nothing is acknowledged that is not durable.
//! If a batch fails (one request's payload Postgres refuses, say), each of its jobs is written
//! alone, so one bad request fails only itself.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::queue::{NewJob, QueueError};

struct Pending {
    job: NewJob,
    tenant: Option<i64>,
    trace: Option<String>,
    reply: oneshot::Sender<Result<i64, QueueError>>,
}

/// Hands single jobs to a background writer that batches them (see the module doc).
#[derive(Clone)]
pub struct Coalescer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Coalescer {
    /// Starts the writer: at most `in_flight` batches of at most `max_batch` jobs at once.
    pub fn spawn(pool: PgPool, max_batch: usize, in_flight: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(pool, rx, max_batch.max(1), in_flight.max(1)));
        Self { tx }
    }

    /// Inserts `job` (without an idempotency key) for `tenant`, with the current request's
    /// trace id; returns its id once committed.
    pub async fn insert(&self, tenant: Option<i64>, job: NewJob) -> Result<i64, QueueError> {
        debug_assert!(
            job.idempotency_key.is_none(),
            "keyed jobs go through queue::insert"
        );
        let (reply, rx) = oneshot::channel();
        let trace = crate::telemetry::current_trace_id();
        let closed = || QueueError::Database(sqlx::Error::PoolClosed);
        self.tx
            .send(Pending {
                job,
                tenant,
                trace,
                reply,
            })
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

async fn write_loop(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    max_batch: usize,
    in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        // Wait for a free slot first: while every slot is busy, requests pile up into the next batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, batch).await;
            drop(permit);
        });
    }
}

async fn write(pool: &PgPool, batch: Vec<Pending>) {
    match insert_rows(pool, &batch).await {
        Ok(ids) => {
            for (p, id) in batch.into_iter().zip(ids) {
                let _ = p.reply.send(Ok(id));
            }
        }
        Err(e) if batch.len() == 1 => {
            let p = batch.into_iter().next().expect("one");
            let _ = p.reply.send(Err(e));
        }
        // The database is away: every job of the batch gets that answer now (retrying them one
        // by one would make each request wait out the pool's timeout once per batch mate).
        Err(QueueError::Database(e)) if crate::db::is_unavailable(&e) => {
            for p in batch {
                let _ = p
                    .reply
                    .send(Err(QueueError::Database(sqlx::Error::PoolTimedOut)));
            }
        }
        Err(_) => {
            for p in batch {
                let r = insert_rows(pool, std::slice::from_ref(&p))
                    .await
                    .map(|ids| ids[0]);
                let _ = p.reply.send(r);
            }
        }
    }
}

/// One INSERT (one implicit transaction) for every job of `batch`; ids in batch order.
async fn insert_rows(pool: &PgPool, batch: &[Pending]) -> Result<Vec<i64>, QueueError> {
    crate::queue::insert_rows(
        pool,
        batch.iter().map(|p| (&p.job, p.tenant, p.trace.as_deref())),
    )
    .await
}
