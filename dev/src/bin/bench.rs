//! `stoflow-bench`: throughput and latency of the queue with the real worker and api processes.
//! Run it with `scripts/bench` (release build). Prints one table; nothing here is a test.
//!
//! Scenarios: bulk enqueue (multi-row INSERT), drain N no-op jobs with K worker processes (and
//! their memory at rest and under load), drain with R finished jobs retained, idle start latency
//! (enqueue committed → run started), HTTP enqueue from C concurrent clients, and a sustained run
//! with retention pruning (table size and dead tuples before and after).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use dev::proc;
use engine::queue::{self, NewJob, Notifier};
use serde_json::json;
use sqlx::PgPool;

struct Opts {
    jobs: usize,
    workers: Vec<usize>,
    concurrency: usize,
    http: usize,
    http_clients: usize,
    latency_samples: usize,
    retained: Vec<usize>,
    soak_secs: u64,
    soak_rate: usize,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        jobs: 20_000,
        workers: vec![1, 2, 4],
        concurrency: 1000,
        http: 5_000,
        http_clients: 8,
        latency_samples: 200,
        retained: vec![],
        soak_secs: 0,
        soak_rate: 2_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--jobs" => o.jobs = v.parse()?,
            "--workers" => o.workers = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--concurrency" => o.concurrency = v.parse()?,
            "--http" => o.http = v.parse()?,
            "--http-clients" => o.http_clients = v.parse()?,
            "--latency-samples" => o.latency_samples = v.parse()?,
            "--retained" => o.retained = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--soak-secs" => o.soak_secs = v.parse()?,
            "--soak-rate" => o.soak_rate = v.parse()?,
            _ => anyhow::bail!(
                "usage: stoflow-bench [--jobs N] [--workers 1,2,4] [--concurrency C] [--http N] [--http-clients C] [--latency-samples N] [--retained 10000,1000000] [--soak-secs S] [--soak-rate jobs/s]"
            ),
        }
    }
    Ok(o)
}

fn noop(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob {
            kind: "noop",
            args: json!({}),
            priority: 0,
            run_at: None,
            max_attempts: 3,
            idempotency_key: None,
        })
        .collect()
}

async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE jobs").execute(pool).await?;
    sqlx::query("DELETE FROM workers").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    Ok(())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Workers(Vec<std::process::Child>);

impl Workers {
    fn start(url: &str, k: usize, concurrency: usize) -> anyhow::Result<Self> {
        let env = [
            ("DATABASE_URL", url.to_string()),
            ("STOFLOW_CONFIG", "/nonexistent".into()),
            ("STOFLOW_ENV", "development".into()),
            ("STOFLOW_KINDS__NOOP__CONCURRENCY", concurrency.to_string()),
            ("RUST_LOG", "warn".into()),
        ];
        let mut v = vec![];
        for _ in 0..k {
            v.push(proc::spawn(
                "worker",
                &["run", "--kinds", "noop"],
                &env,
                None,
            )?);
        }
        Ok(Self(v))
    }

    /// Resident memory of each process now and at its peak (VmRSS, VmHWM), in MiB.
    fn memory(&self) -> Vec<(f64, f64)> {
        self.0
            .iter()
            .map(|c| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", c.id())).unwrap_or_default();
                let kib = |key: &str| {
                    status
                        .lines()
                        .find(|l| l.starts_with(key))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(f64::NAN)
                };
                (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
            })
            .collect()
    }
}

/// How a drain is fed.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    /// Jobs committed in 5,000-row transactions (one wake-up each) while the workers run; timed
    /// from the first insert, as graphile-worker's benchmark does.
    Live,
    /// Jobs committed (and the table vacuumed) while the kind is paused; timed from the resume,
    /// as pgbench drains a filled table.
    Prefilled,
}

/// Drains `all` and waits until nothing is left; fails if a job was lost or ran twice. Returns
/// the seconds it took and the CPU seconds the whole machine was busy meanwhile.
async fn drain(
    pool: &PgPool,
    notifier: &Notifier,
    all: &[NewJob],
    feed: Feed,
) -> anyhow::Result<(f64, f64)> {
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'done'")
        .fetch_one(pool)
        .await?;
    let insert = || async {
        for chunk in all.chunks(5_000) {
            let mut tx = pool.begin().await?;
            queue::bulk_insert(&mut tx, chunk.iter()).await?;
            tx.commit().await?;
            notifier.poke("noop");
        }
        anyhow::Ok(())
    };
    let (t, cpu0) = if feed == Feed::Prefilled {
        queue::set_paused(pool, "noop", true, Some("bench")).await?;
        tokio::time::sleep(Duration::from_millis(200)).await; // the workers hear it
        insert().await?;
        sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
        let t = (Instant::now(), busy_cpu_secs());
        queue::set_paused(pool, "noop", false, None).await?;
        t
    } else {
        let t = (Instant::now(), busy_cpu_secs());
        insert().await?;
        t
    };
    loop {
        // Waiting and running rows only (their partial indexes): `state <> 'done'` would scan
        // every retained row each time and measure this loop instead of the workers. Even so a
        // count costs milliseconds of the CPU the drain runs on, so it is taken often only near
        // the end: sleep a quarter of the time the rest should take at the rate so far.
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE state = 'available' OR state = 'running'",
        )
        .fetch_one(pool)
        .await?;
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "drain did not finish"
        );
        let secs = t.elapsed().as_secs_f64();
        let rate = (all.len() as f64 - left as f64).max(1.0) / secs.max(0.001);
        let wait = (left as f64 / rate / 4.0).clamp(0.005, 0.2);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = busy_cpu_secs() - cpu0;
    let (done, max_attempt): (i64, Option<i32>) =
        sqlx::query_as("SELECT count(*), max(attempt) FROM jobs WHERE state = 'done'")
            .fetch_one(pool)
            .await?;
    anyhow::ensure!(
        (done - before) as usize == all.len() && max_attempt.unwrap_or(1) == 1,
        "drain lost or repeated jobs: {} done, max attempt {max_attempt:?}",
        done - before
    );
    Ok((secs, cpu))
}

/// CPU seconds every core of the machine spent busy since boot (/proc/stat: all but idle and
/// iowait), so that a drain can say what it cost, whichever process spent it.
fn busy_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
    // USER_HZ is 100 on Linux.
    (ticks.iter().take(8).sum::<f64>() - idle) / 100.0
}

/// Size and tuple counts of the jobs table: (live, dead, table+indexes MiB, indexes MiB).
async fn table_stats(pool: &PgPool) -> anyhow::Result<(i64, i64, f64, f64)> {
    sqlx::query("ANALYZE jobs").execute(pool).await?;
    Ok(sqlx::query_as(
        "SELECT n_live_tup, n_dead_tup, pg_total_relation_size('jobs') / 1048576.0::float8,
                pg_indexes_size('jobs') / 1048576.0::float8
           FROM pg_stat_user_tables WHERE relname = 'jobs'",
    )
    .fetch_one(pool)
    .await?)
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            proc::terminate(c, Duration::from_secs(10));
        }
    }
}

async fn wait_workers(pool: &PgPool, k: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM workers WHERE stopped_at IS NULL")
            .fetch_one(pool)
            .await?;
        if n as usize >= k {
            tokio::time::sleep(Duration::from_millis(300)).await; // listeners connect
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "workers did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let (server, _cluster) = dev::database("target/benchpg", 54331)?;
    let admin = jobs::db::connect(&server, 2).await?;
    sqlx::query("DROP DATABASE IF EXISTS stoflow_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE DATABASE stoflow_bench")
        .execute(&admin)
        .await?;
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/stoflow_bench"),
        None => anyhow::bail!("DATABASE_URL must name a database"),
    };
    let pool = jobs::db::connect(&url, 16).await?;
    jobs::db::migrate(&pool).await?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'server_version')",
    )
    .fetch_all(&pool)
    .await?;
    println!(
        "# stoflow-bench: {} no-op jobs, concurrency {} per worker process",
        o.jobs, o.concurrency
    );
    println!(
        "# postgres: {}",
        settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| scenario | result |\n|---|---|");

    // Bulk enqueue: multi-row INSERT over arrays, 5,000 rows per statement.
    reset(&pool).await?;
    let all = noop(o.jobs);
    let t = Instant::now();
    for chunk in all.chunks(5_000) {
        let mut tx = pool.begin().await?;
        queue::bulk_insert(&mut tx, chunk.iter()).await?;
        tx.commit().await?;
    }
    println!(
        "| bulk enqueue | {:.0} jobs/s |",
        o.jobs as f64 / t.elapsed().as_secs_f64()
    );

    // Drain: K idle worker processes, then N jobs committed at once; until the last is done.
    let notifier = Notifier::spawn(pool.clone());
    for &k in &o.workers {
        reset(&pool).await?;
        let w = Workers::start(&url, k, o.concurrency)?;
        wait_workers(&pool, k).await?;
        let rest = w.memory();
        let (secs, cpu) = drain(&pool, &notifier, &all, Feed::Live).await?;
        let loaded = w.memory();
        println!(
            "| drain with {k} worker process(es) | {:.0} jobs/s ({} jobs in {secs:.2} s, {:.1} CPU-µs per job) |",
            o.jobs as f64 / secs,
            o.jobs,
            cpu * 1e6 / o.jobs as f64
        );
        sqlx::query("TRUNCATE jobs").execute(&pool).await?;
        let (secs, cpu) = drain(&pool, &notifier, &all, Feed::Prefilled).await?;
        println!(
            "| drain of a pre-filled queue, {k} worker process(es) | {:.0} jobs/s ({} jobs in {secs:.2} s, {:.1} CPU-µs per job) |",
            o.jobs as f64 / secs,
            o.jobs,
            cpu * 1e6 / o.jobs as f64
        );
        let mib = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| v.iter().map(f).fold(0.0, f64::max);
        println!(
            "| worker memory, {k} process(es) | at rest {:.1} MiB RSS, after the drain {:.1} MiB RSS, peak {:.1} MiB (largest process) |",
            mib(&rest, |m| m.0),
            mib(&loaded, |m| m.0),
            mib(&loaded, |m| m.1)
        );
    }

    // Flat under size: the same drain (first worker count) with R finished jobs retained.
    for &r in &o.retained {
        reset(&pool).await?;
        sqlx::query(
            "INSERT INTO jobs (kind, state, args, attempt, max_attempts, attempted_at, finished_at)
             SELECT 'noop', 'done', '{}'::jsonb, 1, 3, now() - interval '1 hour', now() - interval '1 hour'
               FROM generate_series(1, $1)",
        )
        .bind(r as i64)
        .execute(&pool)
        .await?;
        sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
        let k = o.workers.first().copied().unwrap_or(1);
        let _w = Workers::start(&url, k, o.concurrency)?;
        wait_workers(&pool, k).await?;
        let (secs, _) = drain(&pool, &notifier, &all, Feed::Live).await?;
        println!(
            "| drain with {r} finished jobs retained, {k} worker process(es) | {:.0} jobs/s |",
            o.jobs as f64 / secs
        );
    }

    // Idle start latency: one idle worker, one job at a time.
    reset(&pool).await?;
    {
        let _w = Workers::start(&url, 1, o.concurrency)?;
        wait_workers(&pool, 1).await?;
        for _ in 0..o.latency_samples {
            let mut tx = pool.begin().await?;
            queue::insert(&mut tx, &noop(1)).await?;
            tx.commit().await?;
            notifier.poke("noop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut lat: Vec<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM attempted_at - created_at)::float8 * 1000 FROM jobs WHERE state = 'done'",
        )
        .fetch_all(&pool)
        .await?;
        lat.sort_by(f64::total_cmp);
        println!(
            "| idle start latency (enqueue → run), {} samples | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
    }

    // HTTP enqueue: the api process, C concurrent clients, one job per request.
    reset(&pool).await?;
    if o.http > 0 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let env = [
            ("DATABASE_URL", url.clone()),
            ("STOFLOW_CONFIG", "/nonexistent".into()),
            ("STOFLOW_ENV", "development".into()),
            ("STOFLOW_API__BIND", format!("127.0.0.1:{port}")),
            ("RUST_LOG", "warn".into()),
            // The per-user rate limit would measure itself, not the enqueue path.
            ("STOFLOW_API__USER_RATE_PER_S", "1000000".into()),
            ("STOFLOW_API__USER_RATE_BURST", "1000000".into()),
        ];
        let mut api = proc::spawn("api", &[], &env, None)?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "api did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (email, password) = ("bench@stoflow.dev", "bench-password-1");
        match jobs::auth::create_user(&pool, email, password, jobs::auth::Role::Seller, None).await
        {
            Ok(_) | Err(jobs::auth::AuthError::EmailTaken) => {}
            Err(e) => anyhow::bail!("bench user: {e}"),
        }
        let login: serde_json::Value = client
            .post(format!("{base}/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?
            .json()
            .await?;
        let bearer = format!(
            "Bearer {}",
            login["access_token"].as_str().unwrap_or_default()
        );
        let per = o.http / o.http_clients;
        let t = Instant::now();
        let mut tasks = vec![];
        for _ in 0..o.http_clients {
            let (client, url) = (client.clone(), format!("{base}/v1/jobs"));
            let bearer = bearer.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let s = Instant::now();
                    let r = client
                        .post(&url)
                        .header("authorization", &bearer)
                        .json(&json!({"job": {"kind": "noop"}}))
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 202, "enqueue answered {}", r.status());
                    lat.push(s.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(lat)
            }));
        }
        let mut lat = vec![];
        for t in tasks {
            lat.extend(t.await??);
        }
        let secs = t.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        proc::terminate(&mut api, Duration::from_secs(10));
        println!(
            "| HTTP enqueue, {} clients | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms |",
            o.http_clients,
            lat.len() as f64 / secs,
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
    if o.soak_secs > 0 {
        soak(&pool, &url, &notifier, &o).await?;
    }
    pool.close().await;
    sqlx::query("DROP DATABASE IF EXISTS stoflow_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    Ok(())
}

/// Sustained load: `soak_rate` jobs/s enqueued in 100 ms batches for `soak_secs`, two worker
/// processes draining, and a scheduler pruning done jobs every 10 s (retention 0 h) — as in
/// production, only faster. Prints the table's size and dead tuples before and after, and the
/// throughput per minute.
async fn soak(pool: &PgPool, url: &str, notifier: &Notifier, o: &Opts) -> anyhow::Result<()> {
    reset(pool).await?;
    let before = table_stats(pool).await?;
    let _w = Workers::start(url, 2, o.concurrency)?;
    wait_workers(pool, 2).await?;
    let env = [
        ("DATABASE_URL", url.to_string()),
        ("STOFLOW_CONFIG", "/nonexistent".into()),
        ("STOFLOW_ENV", "development".into()),
        ("STOFLOW_SCHEDULER__PRUNE_CRON", "*/10 * * * * *".into()),
        ("STOFLOW_RETENTION__DONE_HOURS", "0".into()),
        ("RUST_LOG", "warn".into()),
    ];
    // The scheduler enqueues prune_jobs; a worker of that kind runs them. Stopped on drop.
    let _maintenance = Workers(vec![
        proc::spawn("worker", &["scheduler"], &env, None)?,
        proc::spawn("worker", &["run", "--kinds", "prune_jobs"], &env, None)?,
    ]);
    let batch = (o.soak_rate / 10).max(1);
    let jobs = noop(batch);
    let t = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut enqueued = 0usize;
    let mut minute = (Instant::now(), 0usize, 0i64);
    while t.elapsed() < Duration::from_secs(o.soak_secs) {
        tick.tick().await;
        let mut tx = pool.begin().await?;
        queue::bulk_insert(&mut tx, jobs.iter()).await?;
        tx.commit().await?;
        notifier.poke("noop");
        enqueued += batch;
        if minute.0.elapsed() >= Duration::from_secs(60) {
            // Done rows are pruned as we go: processed = enqueued − still waiting or running.
            let backlog: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE kind = 'noop' AND state <> 'done'",
            )
            .fetch_one(pool)
            .await?;
            let processed = enqueued as i64 - backlog;
            let (size, dead) = {
                let s = table_stats(pool).await?;
                (s.2, s.1)
            };
            println!(
                "| soak minute {} | {:.0} jobs/s processed, backlog {backlog}, jobs table {size:.1} MiB, {dead} dead tuples |",
                (t.elapsed().as_secs() + 30) / 60,
                (processed - minute.2) as f64 / minute.0.elapsed().as_secs_f64(),
            );
            minute = (Instant::now(), enqueued, processed);
        }
    }
    // Let the backlog drain and one more prune run.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = table_stats(pool).await?;
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'noop' AND state <> 'done'")
            .fetch_one(pool)
            .await?;
    println!(
        "| soak {} s at {} jobs/s ({enqueued} jobs) | jobs table before: {} live, {} dead tuples, {:.1} MiB ({:.1} MiB indexes); after: {} live, {} dead, {:.1} MiB ({:.1} MiB indexes); {waiting} not done at the end |",
        o.soak_secs,
        o.soak_rate,
        before.0,
        before.1,
        before.2,
        before.3,
        after.0,
        after.1,
        after.2,
        after.3
    );
    Ok(())
}
