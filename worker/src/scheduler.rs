//! The scheduler process: apalis-cron ticks turned into jobs. apalis-cron fires in every replica,
//! so each tick is inserted with the idempotency key `cron:<name>:<tick>`: however many schedulers
//! run, a tick becomes one job (the key is the scheduled time, not the wall clock).

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use apalis_cron::CronScheduler;
use futures::StreamExt;
use jobs::kinds::PruneJobs;
use jobs::queue::{self, NewJob, Notifier};
use jobs::{Job, Kind, Settings};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut signal = Box::pin(crate::shutdown_signal());
    let pool = crate::connect(&settings).await?;
    let settings = Arc::new(settings);
    let notifier = Notifier::spawn(pool.clone());
    let schedule = cron::Schedule::from_str(&settings.scheduler.prune_cron).with_context(|| {
        format!(
            "scheduler.prune_cron {:?} is not a cron expression",
            settings.scheduler.prune_cron
        )
    })?;
    let mut ticks = Box::pin(CronScheduler::new(schedule).into_stream());
    tracing::info!(prune_cron = %settings.scheduler.prune_cron, "scheduler started");
    loop {
        let tick = tokio::select! {
            t = ticks.next() => t,
            _ = &mut signal => break,
        };
        let Some(tick) = tick else { break };
        let ts = match tick {
            Ok(t) => t.get_timestamp(),
            Err(e) => {
                tracing::warn!(error = %e, "cron tick error");
                continue;
            }
        };
        let at = chrono::DateTime::from_timestamp(ts as i64, 0)
            .unwrap_or_default()
            .to_rfc3339();
        let job = NewJob {
            kind: PruneJobs::KIND,
            args: serde_json::to_value(PruneJobs {
                tick: Some(at.clone()),
            })?,
            priority: 0,
            run_at: None,
            max_attempts: PruneJobs::POLICY
                .resolved(PruneJobs::KIND, &settings)
                .max_attempts,
            idempotency_key: Some(format!("cron:{}:{ts}", PruneJobs::KIND)),
        };
        let mut conn = match pool.acquire().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot enqueue cron tick");
                continue;
            }
        };
        match queue::insert(&mut conn, &[job]).await {
            Ok(ins) if ins[0].created => {
                notifier.poke(PruneJobs::KIND);
                tracing::info!(tick = %at, job_id = ins[0].id, "cron tick enqueued");
            }
            Ok(_) => tracing::debug!(tick = %at, "cron tick already enqueued by another scheduler"),
            Err(e) => tracing::warn!(error = %e, "cannot enqueue cron tick"),
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}
