//! The engine on its own: declare a kind, enqueue it, run a worker process until it is done.
//!
//! `DATABASE_URL=postgres://… cargo run -p engine --example greet` (any empty database: the
//! engine creates its three tables). Prints each job's result and exits.

use std::sync::Arc;
use std::time::Duration;

use apalis_core::monitor::Monitor;
use engine::queue::{self, NewJob};
use engine::{Context, Job, JobError, Kind, Policy, RunInfo};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A kind: its arguments are the type, its handler `run`.
#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl Kind for Greet {
    const KIND: &'static str = "greet";
}

/// What handlers reach: here nothing; an application puts its pool and clients in it.
#[derive(Clone)]
struct Nothing;
impl Context for Nothing {}

impl Job for Greet {
    // 3 attempts, 30 s per run, 4 at once per process.
    const POLICY: Policy = Policy::new(3, 30, 4);
    type Context = Nothing;

    async fn run(self, _: Nothing, run: RunInfo) -> Result<Value, JobError> {
        if self.name.is_empty() {
            return Err(JobError::permanent("nobody to greet"));
        }
        Ok(json!({ "greeting": format!("hello, {}", self.name), "job": run.job_id }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("set DATABASE_URL"))?;
    let settings = Arc::new(engine::Settings::new(url));
    let pool = engine::db::connect_migrated(
        &settings,
        &engine::db::PoolSpec::WORKER,
        &engine::db::MIGRATOR,
    )
    .await?;

    // Enqueue (in the caller's transaction; here one of its own), then wake the workers.
    let names = ["Ada", "Grace", ""];
    let jobs: Vec<NewJob> = names
        .iter()
        .map(|n| {
            NewJob::of(
                &Greet {
                    name: n.to_string(),
                },
                &settings.kinds,
                None,
            )
        })
        .collect();
    let mut tx = pool.begin().await?;
    let ids: Vec<i64> = queue::insert(&mut tx, &jobs)
        .await?
        .iter()
        .map(|i| i.id)
        .collect();
    tx.commit().await?;
    queue::wake(&pool, &[Greet::KIND]).await?;

    // A worker process: the runtime (lease, heartbeat, acks) and one apalis worker per kind.
    let rt = engine::runtime::Runtime::start(
        pool.clone(),
        settings.clone(),
        &[(Greet::KIND, Greet::POLICY)],
    )
    .await?;
    let monitor = engine::backend::register::<Greet>(Monitor::new(), &rt, &Nothing);
    let (pool2, rt2, ids2) = (pool.clone(), rt.clone(), ids.clone());
    monitor
        .run_with_signal(async move {
            // Stop once every job has finished (a service would wait for SIGTERM instead).
            loop {
                let mut finished = 0;
                for id in &ids2 {
                    let job = queue::get(&pool2, *id)
                        .await
                        .map_err(std::io::Error::other)?;
                    if job.state == "done" || job.state == "dead" {
                        finished += 1;
                    }
                }
                if finished == ids2.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rt2.stop_fetching();
            Ok(())
        })
        .await?;
    rt.stop().await?;

    for id in ids {
        let job = queue::get(&pool, id).await?;
        let outcome = job.result.or(job.last_error).unwrap_or(Value::Null);
        println!("job {id} {}: {outcome}", job.state);
    }
    Ok(())
}
