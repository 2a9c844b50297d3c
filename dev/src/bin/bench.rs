//! `stoflow-bench`: throughput and latency of the queue with the real worker and api processes.
//! Run it with `scripts/bench` (release build). Prints one table; nothing here is a test.
//!
//! Scenarios: bulk enqueue (multi-row INSERT), drain N no-op jobs with K worker processes,
//! idle start latency (enqueue committed → run started), HTTP enqueue from C concurrent clients.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use dev::proc;
use jobs::queue::{self, NewJob, Notifier};
use serde_json::json;
use sqlx::PgPool;

struct Opts {
    jobs: usize,
    workers: Vec<usize>,
    concurrency: usize,
    http: usize,
    http_clients: usize,
    latency_samples: usize,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        jobs: 20_000,
        workers: vec![1, 2, 4],
        concurrency: 200,
        http: 5_000,
        http_clients: 8,
        latency_samples: 200,
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
            _ => anyhow::bail!(
                "usage: stoflow-bench [--jobs N] [--workers 1,2,4] [--concurrency C] [--http N] [--http-clients C] [--latency-samples N]"
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
        let _w = Workers::start(&url, k, o.concurrency)?;
        wait_workers(&pool, k).await?;
        let t = Instant::now();
        for chunk in all.chunks(5_000) {
            let mut tx = pool.begin().await?;
            queue::bulk_insert(&mut tx, chunk.iter()).await?;
            tx.commit().await?;
            notifier.poke("noop");
        }
        loop {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state <> 'done'")
                .fetch_one(&pool)
                .await?;
            if left == 0 {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(600),
                "drain did not finish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let (done, max_attempt): (i64, i32) =
            sqlx::query_as("SELECT count(*), max(attempt) FROM jobs WHERE state = 'done'")
                .fetch_one(&pool)
                .await?;
        anyhow::ensure!(
            done as usize == o.jobs && max_attempt == 1,
            "drain lost or repeated jobs: {done} done, max attempt {max_attempt}"
        );
        println!(
            "| drain with {k} worker process(es) | {:.0} jobs/s ({} jobs in {secs:.2} s) |",
            o.jobs as f64 / secs,
            o.jobs
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
            ("STOFLOW_API__BIND", format!("127.0.0.1:{port}")),
            ("RUST_LOG", "warn".into()),
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
        let per = o.http / o.http_clients;
        let t = Instant::now();
        let mut tasks = vec![];
        for _ in 0..o.http_clients {
            let (client, url) = (client.clone(), format!("{base}/v1/jobs"));
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let s = Instant::now();
                    let r = client
                        .post(&url)
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
    pool.close().await;
    sqlx::query("DROP DATABASE IF EXISTS stoflow_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    Ok(())
}
