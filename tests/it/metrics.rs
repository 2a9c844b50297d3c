//! `/metrics` of the API and of worker processes: valid Prometheus text, and numbers that match
//! what the API reports after a known workload.

use std::collections::HashMap;
use std::time::Duration;

use integration::{Api, TestDb, worker};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// Parses the OpenMetrics text exposition strictly enough to catch malformed output: every sample
/// belongs to a declared family (counters' samples end in `_total`), values are numbers, +Inf
/// buckets equal counts, one `# EOF` ends it. Series without labels are keyed `name{}`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut families: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    // OpenMetrics: one `# EOF`, last.
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    for line in text.lines().filter(|l| !l.is_empty() && *l != "# EOF") {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        // A histogram's _bucket/_sum/_count and a counter's _total belong to its family.
        let family = [
            ("_bucket", "histogram"),
            ("_sum", "histogram"),
            ("_count", "histogram"),
            ("_total", "counter"),
        ]
        .iter()
        .find_map(|(s, kind)| {
            name.strip_suffix(s)
                .filter(|f| families.get(*f).is_some_and(|k| k == kind))
        })
        .unwrap_or(name);
        assert!(
            families.get(name).is_none_or(|k| k != "counter"),
            "a counter sample without _total: {line}"
        );
        assert!(
            families.contains_key(family),
            "sample of undeclared family: {line}"
        );
        let series = if series.contains('{') {
            assert!(series.ends_with('}'), "{line}");
            series.to_string()
        } else {
            format!("{series}{{}}")
        };
        samples.insert(series, value);
    }
    // The +Inf bucket of every histogram holds all its observations.
    for (series, v) in &samples {
        if series.contains("le=\"+Inf\"") {
            let count = series
                .replace("le=\"+Inf\",", "")
                .replace(",le=\"+Inf\"", "")
                .replace("le=\"+Inf\"", "")
                .replace("_bucket{", "_count{");
            assert_eq!(*v, samples[&count], "+Inf bucket equals count for {series}");
        }
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_match_the_api_after_a_known_workload() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let ok1 = api.enqueue(json!({"kind": "noop"}), json!({})).await;
    let ok2 = api
        .enqueue(json!({"kind": "noop", "sleep_ms": 20}), json!({}))
        .await;
    let bad = api
        .enqueue(json!({"kind": "noop", "fail": "permanent"}), json!({}))
        .await;
    api.wait_state(ok1, "done", T).await;
    api.wait_state(ok2, "done", T).await;
    api.wait_state(bad, "dead", T).await;

    let r = api.http.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let m = parse(&text);
    let (_, q) = api.get_as(&api.ops, "/v1/queues").await;
    let noop = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "noop")
        .unwrap()
        .clone();
    assert_eq!(m[r#"stoflow_jobs_enqueued_total{kind="noop"}"#], 3.0);
    assert_eq!(
        m[r#"stoflow_queue_jobs{kind="noop",state="done"}"#],
        noop["done"].as_f64().unwrap()
    );
    assert_eq!(m[r#"stoflow_queue_jobs{kind="noop",state="dead"}"#], 1.0);
    assert_eq!(m["stoflow_worker_processes{}"], 1.0);
    // Process health, and every kind's depth and oldest age even without jobs.
    assert!(m["process_start_time_seconds{}"] > 0.0);
    assert!(m["process_resident_memory_bytes{}"] > 0.0);
    assert_eq!(
        m[r#"stoflow_queue_jobs{kind="publish_listing",state="pending"}"#],
        0.0
    );
    assert_eq!(
        m[r#"stoflow_queue_oldest_pending_seconds{kind="noop"}"#],
        0.0
    );

    let url: String = sqlx::query_scalar("SELECT metrics_url FROM workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let wm = parse(
        &api.http
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(wm[r#"stoflow_jobs_started_total{kind="noop"}"#], 3.0);
    assert_eq!(
        wm[r#"stoflow_jobs_finished_total{kind="noop",outcome="done"}"#],
        2.0
    );
    assert_eq!(
        wm[r#"stoflow_jobs_finished_total{kind="noop",outcome="dead"}"#],
        1.0
    );
    assert_eq!(wm[r#"stoflow_job_run_seconds_count{kind="noop"}"#], 3.0);
    assert_eq!(
        wm[r#"stoflow_job_start_latency_seconds_count{kind="noop"}"#],
        3.0
    );
    assert!(wm["process_start_time_seconds{}"] > 0.0);
}
