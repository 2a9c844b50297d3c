//! `stoflow-dash-bench`: the dashboard's pages and JSON with a million retained jobs. Loads N jobs
//! (default 1,000,000) with `generate_series` into a scratch database, starts the real `api`,
//! and times each dashboard endpoint over R sequential requests. Run it with
//! `scripts/bench-dashboard` (release build). Prints one table; the target is p50 < 300 ms.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use dev::proc;

struct Opts {
    jobs: i64,
    requests: usize,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        jobs: 1_000_000,
        requests: 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--jobs" => o.jobs = v.parse()?,
            "--requests" => o.requests = v.parse()?,
            _ => anyhow::bail!("usage: stoflow-dash-bench [--jobs N] [--requests R]"),
        }
    }
    Ok(o)
}

/// A week of history, oldest first: per 1,000 jobs 900 done, 40 dead, 20 cancelled, 39 waiting
/// (half of them retrying) and 1 running; six kinds in turn; finished rows spread evenly over
/// 7 days (so the last hour holds ~0.6 % of them).
const LOAD: &str = "
WITH g AS (
  SELECT i,
         (ARRAY['publish_listing','sync_orders','refresh_token','poll_etsy','dispatch_plugin_task','noop'])[1 + i % 6] AS kind,
         CASE WHEN i % 1000 < 900 THEN 'done' WHEN i % 1000 < 940 THEN 'dead'
              WHEN i % 1000 < 960 THEN 'cancelled' WHEN i % 1000 < 999 THEN 'available'
              ELSE 'running' END AS state,
         now() - ((($1 - i)::float8 / $1) * interval '7 days') - interval '30 seconds' AS t
    FROM generate_series(1, $1) AS i)
INSERT INTO jobs (kind, state, args, attempt, max_attempts, run_at, created_at, attempted_at,
                  finished_at, locked_by, last_error, errors, trace_id)
SELECT kind, state,
       CASE WHEN kind = 'publish_listing' THEN jsonb_build_object('product_id', i, 'marketplace', 'ebay')
            WHEN kind = 'noop' THEN jsonb_build_object('sleep_ms', i % 100)
            WHEN kind = 'dispatch_plugin_task' THEN jsonb_build_object('plugin_task_id', i)
            ELSE jsonb_build_object('account_id', i % 1000) END,
       CASE WHEN state = 'available' THEN i % 2 ELSE 1 END,
       3,
       t, t - interval '40 ms',
       CASE WHEN state = 'available' AND i % 2 = 0 THEN NULL ELSE t + interval '3 ms' END,
       CASE WHEN state IN ('done', 'dead', 'cancelled') THEN t + (i % 50) * interval '1 ms' + interval '5 ms' END,
       CASE WHEN state = 'running' THEN 'bench-worker' END,
       CASE WHEN state = 'dead' THEN jsonb_build_object('attempt', 3, 'at', t, 'class', 'permanent',
            'message', 'marketplace rejected item ' || i) END,
       CASE WHEN state = 'dead' THEN jsonb_build_array(jsonb_build_object('attempt', 3, 'at', t,
            'class', 'permanent', 'message', 'marketplace rejected item ' || i)) ELSE '[]'::jsonb END,
       md5(i::text)
  FROM g ORDER BY i";

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let (server, _cluster) = dev::database("target/benchpg", 54331)?;
    let admin = jobs::db::connect(&server, 2).await?;
    sqlx::query("DROP DATABASE IF EXISTS stoflow_dash_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE DATABASE stoflow_dash_bench")
        .execute(&admin)
        .await?;
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/stoflow_dash_bench"),
        None => anyhow::bail!("DATABASE_URL must name a database"),
    };
    let pool = jobs::db::connect(&url, 4).await?;
    jobs::db::migrate(&pool).await?;
    let t = Instant::now();
    sqlx::query(LOAD).bind(o.jobs).execute(&pool).await?;
    let load_s = t.elapsed().as_secs_f64();
    // What autovacuum does after a load (visibility map for index-only scans, statistics).
    let t = Instant::now();
    sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
    let vacuum_s = t.elapsed().as_secs_f64();
    sqlx::query(
        "INSERT INTO workers (id, host, pid, kinds, concurrency, metrics_url)
         VALUES ('bench-worker', 'bench', 1, '{noop}', '{\"noop\": 50}', NULL)",
    )
    .execute(&pool)
    .await?;
    let size: String = sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('jobs'))")
        .fetch_one(&pool)
        .await?;
    let (some_id, mid_id): (i64, i64) = sqlx::query_as("SELECT max(id) - 7, max(id) / 2 FROM jobs")
        .fetch_one(&pool)
        .await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let env = [
        ("DATABASE_URL", url.clone()),
        ("STOFLOW_CONFIG", "/nonexistent".into()),
        ("STOFLOW_API__BIND", format!("127.0.0.1:{port}")),
        ("RUST_LOG", "warn".into()),
        // The per-user rate limit would measure itself, not the dashboard.
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
    // The dashboard is for ops users: sign in as one, as the page does.
    let (email, password) = ("ops@bench.stoflow.dev", "bench-password-1");
    jobs::auth::create_user(&pool, email, password, jobs::auth::Role::Ops, None).await?;
    let login: serde_json::Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .context("login answered no access_token")?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()?;

    let gets: Vec<(String, String)> = vec![
        ("overview".into(), "/v1/dashboard/overview".into()),
        (
            "jobs, first page (no filter)".into(),
            "/v1/dashboard/jobs".into(),
        ),
        (
            "jobs, page deep in history (keyset cursor)".into(),
            format!("/v1/dashboard/jobs?cursor={mid_id}"),
        ),
        (
            "jobs, state=dead (all kinds)".into(),
            "/v1/dashboard/jobs?state=dead".into(),
        ),
        (
            "jobs, kind=publish_listing & state=dead".into(),
            "/v1/dashboard/jobs?kind=publish_listing&state=dead".into(),
        ),
        (
            "jobs, state=pending".into(),
            "/v1/dashboard/jobs?state=pending".into(),
        ),
        (
            "jobs, state=running".into(),
            "/v1/dashboard/jobs?state=running".into(),
        ),
        (
            "jobs, kind=noop".into(),
            "/v1/dashboard/jobs?kind=noop".into(),
        ),
        (
            "jobs, text search (rare: one match per window)".into(),
            format!("/v1/dashboard/jobs?q=item%20{}", some_id - 3),
        ),
        ("job detail".into(), format!("/v1/dashboard/jobs/{some_id}")),
        ("workers".into(), "/v1/dashboard/workers".into()),
        ("marketplaces".into(), "/v1/dashboard/marketplaces".into()),
        ("audit log".into(), "/v1/dashboard/audit".into()),
        ("GET /v1/queues".into(), "/v1/queues".into()),
        ("GET /metrics (api)".into(), "/metrics".into()),
        ("the page (HTML)".into(), "/dashboard".into()),
    ];
    println!(
        "{} jobs loaded in {load_s:.1} s, VACUUM ANALYZE {vacuum_s:.1} s, table + indexes {size}; {} sequential requests each\n",
        o.jobs, o.requests
    );
    println!("| endpoint | p50 | p95 | max | under 300 ms (p50) |\n|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    for (name, path) in &gets {
        let mut lat = vec![];
        for _ in 0..o.requests {
            let s = Instant::now();
            let r = client.get(format!("{base}{path}")).send().await?;
            anyhow::ensure!(r.status().is_success(), "{path} answered {}", r.status());
            r.bytes().await?;
            lat.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        worst = worst.max(pct(&lat, 0.5));
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            lat[lat.len() - 1],
            if pct(&lat, 0.5) < 300.0 { "yes" } else { "NO" }
        );
    }
    let mut lat = vec![];
    for _ in 0..o.requests {
        let s = Instant::now();
        let r = client
            .post(format!("{base}/v1/dashboard/bulk/preview"))
            .json(
                &serde_json::json!({"action": "retry", "kind": "publish_listing", "state": "dead"}),
            )
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "preview answered {}", r.status());
        r.bytes().await?;
        lat.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "| bulk retry preview (publish_listing, dead) | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        lat[lat.len() - 1],
        if pct(&lat, 0.5) < 300.0 { "yes" } else { "NO" }
    );
    proc::terminate(&mut api, Duration::from_secs(10));
    pool.close().await;
    sqlx::query("DROP DATABASE IF EXISTS stoflow_dash_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    anyhow::ensure!(worst < 300.0, "an endpoint's p50 is over 300 ms");
    Ok(())
}
