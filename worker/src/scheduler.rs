//! The scheduler process: apalis-cron ticks turned into jobs. apalis-cron fires in every replica,
//! so each tick is inserted with an idempotency key built from the scheduled time (not the wall
//! clock): `cron:<kind>:<tick>`, or `cron:<kind>:<account>:<what>:<tick>` for per-account work.
//! However many schedulers run, a tick becomes one job (per account).

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use apalis_cron::CronScheduler;
use engine::Kind;
use engine::queue::{self, NewJob, Notifier};
use futures::StreamExt;
use futures::stream::BoxStream;
use jobs::Settings;
use jobs::handlers::poll_etsy::{PollBudget, due_accounts};
use jobs::kinds::{PollEtsy, PollWhat, PruneJobs, SyncOrders};
use sqlx::PgPool;

/// What a schedule enqueues at each tick.
#[derive(Debug, Clone, Copy)]
enum Schedule {
    Prune,
    EtsyReceipts,
    EtsyListings,
    EbayOrders,
    VintedSales,
}

impl Schedule {
    const ALL: [Schedule; 5] = [
        Self::Prune,
        Self::EtsyReceipts,
        Self::EtsyListings,
        Self::EbayOrders,
        Self::VintedSales,
    ];

    fn setting(self) -> &'static str {
        match self {
            Self::Prune => "scheduler.prune_cron",
            Self::EtsyReceipts => "scheduler.etsy_receipts_cron",
            Self::EtsyListings => "scheduler.etsy_listings_cron",
            Self::EbayOrders => "scheduler.ebay_orders_cron",
            Self::VintedSales => "scheduler.vinted_sales_cron",
        }
    }

    fn cron(self, s: &Settings) -> &str {
        let s = &s.scheduler;
        match self {
            Self::Prune => &s.prune_cron,
            Self::EtsyReceipts => &s.etsy_receipts_cron,
            Self::EtsyListings => &s.etsy_listings_cron,
            Self::EbayOrders => &s.ebay_orders_cron,
            Self::VintedSales => &s.vinted_sales_cron,
        }
    }

    /// The jobs of one tick (`ts`: the scheduled time, epoch seconds; the schedule ticks
    /// `ticks_per_day` times a day).
    async fn jobs(
        self,
        pool: &PgPool,
        s: &Settings,
        ts: u64,
        ticks_per_day: u32,
    ) -> sqlx::Result<Vec<NewJob>> {
        let at = chrono::DateTime::from_timestamp(ts as i64, 0)
            .unwrap_or_default()
            .to_rfc3339();
        let accounts = |m: &'static str| async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT id FROM marketplace_accounts WHERE marketplace = $1 AND status = 'connected' ORDER BY id",
            )
            .bind(m)
            .fetch_all(pool)
            .await
        };
        Ok(match self {
            Self::Prune => vec![NewJob::of(
                &PruneJobs { tick: Some(at) },
                &s.kinds,
                Some(format!("cron:{}:{ts}", PruneJobs::KIND)),
            )],
            Self::EtsyReceipts | Self::EtsyListings => {
                let whats: &[PollWhat] = match self {
                    Self::EtsyReceipts => &[PollWhat::Receipts],
                    _ => &[PollWhat::Listings, PollWhat::LowStock],
                };
                // The shops this tick's share of the app's daily Etsy budget pays for.
                let budget = PollBudget::for_tick(s, whats[0], ticks_per_day);
                let mut out = Vec::new();
                for account in due_accounts(pool, whats[0], budget).await? {
                    for what in whats {
                        let key =
                            format!("cron:{}:{account}:{}:{ts}", PollEtsy::KIND, what.as_str());
                        let job = PollEtsy {
                            account_id: account,
                            what: *what,
                        };
                        out.push(NewJob::of(&job, &s.kinds, Some(key)));
                    }
                }
                out
            }
            // Vinted: `sync_orders` hands a sales sync task to the seller's browser extension.
            Self::EbayOrders | Self::VintedSales => accounts(match self {
                Self::EbayOrders => "ebay",
                _ => "vinted",
            })
            .await?
            .into_iter()
            .map(|account| {
                let key = format!("cron:{}:{account}:{ts}", SyncOrders::KIND);
                NewJob::of(
                    &SyncOrders {
                        account_id: account,
                    },
                    &s.kinds,
                    Some(key),
                )
            })
            .collect(),
        })
    }
}

/// A schedule's tick: its time (epoch seconds) and how often it fires a day; None: a cron error.
type Tick = (Schedule, Option<(u64, u32)>);

/// How often `schedule` fires in the coming day (at least once: a yearly schedule still polls).
fn ticks_per_day(schedule: &cron::Schedule) -> u32 {
    let now = chrono::Utc::now();
    let day = now + chrono::Duration::days(1);
    (schedule.after(&now).take_while(|t| *t <= day).count() as u32).max(1)
}

/// How long a tick that could not be enqueued is retried.
const TICK_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(600);

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut signal = Box::pin(crate::shutdown_signal());
    let pool = crate::connect(&settings).await?;
    let settings = Arc::new(settings);
    let notifier = Notifier::spawn(pool.clone());
    let mut streams: Vec<BoxStream<'static, Tick>> = Vec::new();
    for sched in Schedule::ALL {
        let expr = sched.cron(&settings);
        let schedule = cron::Schedule::from_str(expr)
            .with_context(|| format!("{} {expr:?} is not a cron expression", sched.setting()))?;
        let per_day = ticks_per_day(&schedule);
        let ticks = CronScheduler::new(schedule)
            .into_stream()
            .map(move |t| match t {
                Ok(t) => (sched, Some((t.get_timestamp(), per_day))),
                Err(e) => {
                    tracing::warn!(error = %e, schedule = ?sched, "cron tick error");
                    (sched, None)
                }
            });
        streams.push(ticks.boxed());
    }
    let mut ticks = futures::stream::select_all(streams);
    tracing::info!("scheduler started");
    loop {
        let tick = tokio::select! {
            t = ticks.next() => t,
            _ = &mut signal => break,
        };
        let Some((sched, Some((ts, per_day)))) = tick else {
            if tick.is_none() {
                break;
            }
            continue;
        };
        if let Err(e) = enqueue(&pool, &settings, &notifier, sched, ts, per_day).await {
            // The database is away (or refused): the tick is keyed, so retrying it is harmless
            // and a tick that falls in an outage still runs once the database is back.
            tracing::warn!(error = %e, schedule = ?sched, "cannot enqueue cron tick; retrying");
            let (pool, settings, notifier) = (pool.clone(), settings.clone(), notifier.clone());
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + TICK_RETRY_FOR;
                while std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if enqueue(&pool, &settings, &notifier, sched, ts, per_day)
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
                tracing::error!(schedule = ?sched, tick = ts, "cron tick given up");
            });
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

async fn enqueue(
    pool: &PgPool,
    settings: &Settings,
    notifier: &Notifier,
    sched: Schedule,
    ts: u64,
    ticks_per_day: u32,
) -> anyhow::Result<()> {
    let jobs = sched.jobs(pool, settings, ts, ticks_per_day).await?;
    if jobs.is_empty() {
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    let inserted = queue::insert(&mut conn, &jobs).await?;
    let created = inserted.iter().filter(|i| i.created).count();
    if created > 0 {
        // A tick's jobs are all of one kind.
        notifier.poke(jobs[0].kind);
        tracing::info!(schedule = ?sched, tick = ts, jobs = jobs.len(), created, "cron tick enqueued");
    } else {
        tracing::debug!(schedule = ?sched, tick = ts, "cron tick already enqueued by another scheduler");
    }
    Ok(())
}
