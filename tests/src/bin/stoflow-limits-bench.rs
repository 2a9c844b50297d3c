//! Achieved vs allowed marketplace rate with three worker processes sharing one Etsy app key:
//! a private Postgres, the Etsy simulator limited to 10 requests/s, and `noop` jobs that each
//! ping Etsy through the fleet-wide limiter. The simulator's own request log is the measure.
//!
//! `cargo run -p integration --bin stoflow-limits-bench -- [jobs] [pings per job] [workers]`

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use integration::Platform;
use serde_json::{Value, json};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (jobs, pings, workers) = (
        args.first().copied().unwrap_or(200),
        args.get(1).copied().unwrap_or(3),
        args.get(2).copied().unwrap_or(3),
    );
    let p = Platform::start(
        workers as usize,
        &[("STOFLOW_KINDS__NOOP__CONCURRENCY", "8")],
    )
    .await;
    let batch: Vec<Value> = (0..jobs)
        .map(|_| json!({"job": {"kind": "noop", "etsy_pings": pings}}))
        .collect();
    let (s, v) = p
        .api
        .post("/v1/jobs/batch", &json!({ "jobs": batch }))
        .await;
    assert_eq!(s, 202, "{v}");
    let started = Instant::now();
    loop {
        let done = p.db.count("kind = 'noop' AND state = 'done'").await as u64;
        if done == jobs {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "{done}/{jobs} done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = p.sim_get("etsy", "/_admin/requests").await;
    let mut at: Vec<(DateTime<Utc>, u64)> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/v3/application")
        })
        .map(|r| {
            (
                r["timestamp"].as_str().unwrap().parse().unwrap(),
                r["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    at.sort();
    let span = (at[at.len() - 1].0 - at[0].0).num_milliseconds() as f64 / 1000.0;
    let achieved = (at.len() - 1) as f64 / span;
    let (mut peak, mut lo) = (0, 0);
    for hi in 0..at.len() {
        while at[hi].0 - at[lo].0 >= chrono::Duration::seconds(1) {
            lo += 1;
        }
        peak = peak.max(hi - lo + 1);
    }
    let refused = at.iter().filter(|(_, s)| *s == 429).count();
    println!(
        "{workers} workers, {jobs} jobs × {pings} Etsy calls: {} requests in {span:.1} s",
        at.len()
    );
    println!(
        "achieved {achieved:.2} req/s of 10 allowed ({:.1} %), peak {peak} in any 1 s window, {refused} × 429",
        achieved * 10.0
    );
}
