//! The HTTP job API against a real Postgres and real worker processes.

use std::time::Duration;

use integration::{Api, TestDb, client_with, ensure_user, worker};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn http_enqueue_is_run_by_a_separate_worker_process_and_reported_done() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);

    let r = api
        .http
        .post(api.url("/v1/jobs"))
        .json(&json!({"job": {"kind": "noop", "sleep_ms": 50}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (_, body) = Api::read(r).await;
    assert_eq!(body["state"], "pending");
    assert_eq!(location, body["status_url"]);

    let (_, job) = api.get(&location).await;
    let id = job["id"].as_i64().unwrap();
    let done = api.wait_state(id, "done", T).await;
    assert_eq!(done["result"], json!({"attempt": 1, "slept_ms": 50}));
    assert_eq!(done["attempt"], 1);
    assert!(done["finished_at"].is_string() && done["attempted_at"].is_string());
    assert!(
        done["worker"].is_null(),
        "a finished job is held by no worker"
    );
    // It ran in the worker process, not in the API.
    let owner: Option<String> =
        sqlx::query_scalar("SELECT w.id FROM workers w WHERE w.pid <> $1 LIMIT 1")
            .bind(api.proc.pid() as i32)
            .fetch_optional(&db.pool)
            .await
            .unwrap();
    assert!(owner.is_some(), "a worker process registered itself");
}

#[tokio::test]
async fn the_same_idempotency_key_gives_one_job() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let body = json!({"job": {"kind": "noop"}, "delay_ms": 60000});
    let send = || {
        api.http
            .post(api.url("/v1/jobs"))
            .header("Idempotency-Key", "order-42")
            .json(&body)
            .send()
    };

    let (s1, first) = Api::read(send().await.unwrap()).await;
    let (s2, second) = Api::read(send().await.unwrap()).await;
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        (first["created"].clone(), second["created"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(db.count("true").await, 1);

    // The same key with different content is a conflict, not a silent success.
    let other = json!({"job": {"kind": "noop", "sleep_ms": 5}});
    let r = api
        .http
        .post(api.url("/v1/jobs"))
        .header("Idempotency-Key", "order-42")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(db.count("true").await, 1);
}

#[tokio::test]
async fn batch_enqueue_is_all_or_nothing() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    api.seed_account(&db, 7).await;
    let (s, v) = api
        .post(
            "/v1/jobs/batch",
            &json!({"jobs": [
                {"job": {"kind": "noop"}, "delay_ms": 60000},
                {"job": {"kind": "sync_orders", "account_id": 7}, "delay_ms": 60000, "priority": 5},
                {"job": {"kind": "noop"}, "idempotency_key": "k1", "delay_ms": 60000},
            ]}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let ids: Vec<i64> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(v["jobs"][1]["kind"], "sync_orders");
    assert_eq!(v["jobs"][0]["state"], "scheduled");
    let job = api.job(ids[1]).await;
    assert_eq!(
        (job["args"].clone(), job["priority"].clone()),
        (json!({"account_id": 7}), json!(5))
    );

    let (s, v) = api
        .post(
            "/v1/jobs/batch",
            &json!({"jobs": [
                {"job": {"kind": "noop"}},
                {"job": {"kind": "noop"}, "run_at": "2030-01-01T00:00:00Z", "delay_ms": 5},
            ]}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["detail"].as_str().unwrap().starts_with("jobs[1]: "),
        "{v}"
    );
    assert_eq!(
        db.count("true").await,
        3,
        "the rejected batch added nothing"
    );
}

/// Every kind of bad input: a precise 4xx problem+json, nothing enqueued, never a 5xx.
#[tokio::test]
async fn bad_input_gets_a_problem_and_enqueues_nothing() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[("STOFLOW_API__BODY_LIMIT_BYTES", "2048")]).await;
    let big = "x".repeat(4096);
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"teleport"}}"#.into(),
            400,
            "teleport",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"sleep_ms":1}}"#.into(),
            400,
            "kind is required",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"noop","sleep_ms":"soon"}}"#.into(),
            400,
            "sleep_ms",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"noop","sleep":1}}"#.into(),
            400,
            "unknown field \"sleep\"",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"publish_listing","product_id":5}}"#.into(),
            400,
            "marketplace",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"publish_listing","product_id":0,"marketplace":"ebay"}}"#.into(),
            400,
            "product_id",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"publish_listing","product_id":1,"marketplace":"amazon"}}"#.into(),
            400,
            "amazon",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"poll_etsy","account_id":1,"what":"everything"}}"#.into(),
            400,
            "everything",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"noop"},"priority":1000}"#.into(),
            400,
            "priority",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"noop"},"run_at":"tomorrow"}"#.into(),
            400,
            "date-time",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"noop"},"run_at":"2030-01-01T00:00:00Z","delay_ms":1}"#.into(),
            422,
            "not both",
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"job":{"kind":"noop"},"colour":"red"}"#.into(),
            400,
            "colour",
        ),
        ("POST", "/v1/jobs", r#"{"job":"#.into(), 400, ""),
        ("POST", "/v1/jobs", "[]".into(), 400, ""),
        (
            "POST",
            "/v1/jobs",
            format!(r#"{{"job":{{"kind":"noop"}},"idempotency_key":"{big}"}}"#),
            413,
            "exceeds 2048",
        ),
        (
            "POST",
            "/v1/jobs/batch",
            r#"{"jobs":[]}"#.into(),
            400,
            "jobs",
        ),
        ("GET", "/v1/jobs/abc", String::new(), 400, "id"),
        ("GET", "/v1/jobs/999999", String::new(), 404, "no job"),
        (
            "GET",
            "/v1/jobs?kind=teleport",
            String::new(),
            400,
            "unknown kind",
        ),
        (
            "GET",
            "/v1/jobs?state=sleeping",
            String::new(),
            400,
            "state",
        ),
        ("GET", "/v1/jobs?limit=0", String::new(), 400, "limit"),
        ("GET", "/v1/jobs?limit=100000", String::new(), 400, "limit"),
        ("GET", "/v1/jobs?cursor=zzz", String::new(), 400, "cursor"),
        (
            "POST",
            "/v1/jobs/999999/retry",
            String::new(),
            404,
            "no job",
        ),
        (
            "POST",
            "/v1/jobs/999999/cancel",
            String::new(),
            404,
            "no job",
        ),
        ("GET", "/v1/nowhere", String::new(), 404, ""),
        ("DELETE", "/v1/jobs", String::new(), 405, ""),
    ];
    for (method, path, body, want, needle) in cases {
        let mut req = api.http.request(method.parse().unwrap(), api.url(path));
        if !body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let (_, v) = Api::read(r).await;
        let what = format!("{method} {path} {body:.80}");
        assert_eq!(status, want, "{what}: {v}");
        assert_eq!(ctype.as_deref(), Some("application/problem+json"), "{what}");
        assert_eq!(v["status"], want, "{what}: {v}");
        assert!(
            v["title"].is_string() && v["type"].is_string(),
            "{what}: {v}"
        );
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{what}: detail {detail:?} should mention {needle:?}"
        );
    }
    assert_eq!(
        db.count("true").await,
        0,
        "nothing was enqueued by a rejected request"
    );
}

#[tokio::test]
async fn list_filters_by_kind_and_state_and_pages_with_a_cursor() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let mut noop_ids = vec![];
    for _ in 0..5 {
        noop_ids.push(
            api.enqueue(json!({"kind": "noop"}), json!({"delay_ms": 60000}))
                .await,
        );
    }
    api.seed_account(&db, 1).await;
    let sync_id = api
        .enqueue(json!({"kind": "sync_orders", "account_id": 1}), json!({}))
        .await;

    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (s, v) = api
            .get(&format!("/v1/jobs?kind=noop&state=scheduled&limit=2{q}"))
            .await;
        assert_eq!(s, 200, "{v}");
        seen.extend(
            v["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_i64().unwrap()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    noop_ids.reverse();
    assert_eq!(seen, noop_ids, "newest first, each exactly once");
    let (_, v) = api.get("/v1/jobs?state=pending").await;
    let pending: Vec<i64> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(pending, vec![sync_id]);
}

#[tokio::test]
async fn queues_report_counts_per_kind_and_state() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    api.enqueue(json!({"kind": "noop"}), json!({"delay_ms": 60000}))
        .await;
    api.enqueue(json!({"kind": "noop"}), json!({})).await;
    api.enqueue(json!({"kind": "noop"}), json!({})).await;
    let (s, v) = api.get_as(&api.ops, "/v1/queues").await;
    assert_eq!(s, 200);
    let noop = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "noop")
        .unwrap()
        .clone();
    assert_eq!(
        (
            noop["scheduled"].clone(),
            noop["pending"].clone(),
            noop["done"].clone()
        ),
        (json!(1), json!(2), json!(0))
    );
    assert!(noop["oldest_pending_age_s"].as_f64().unwrap() >= 0.0);
    let kinds: Vec<&Value> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| &q["kind"])
        .collect();
    assert!(
        kinds.contains(&&json!("publish_listing")),
        "kinds without jobs are listed too"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_the_docs_page_is_served() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (s, spec) = api.get("/openapi.json").await;
    assert_eq!(s, 200);
    for p in [
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/retry",
        "/v1/jobs/{id}/cancel",
        "/v1/queues",
        "/health/live",
        "/health/ready",
    ] {
        assert!(
            spec["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
    let r = api.http.get(api.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().to_lowercase().contains("swagger"));
}

#[tokio::test]
async fn concurrent_single_enqueues_share_commits_and_each_keeps_its_tenant_and_trace() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    ensure_user(&db, "b@test.stoflow.dev", jobs::auth::Role::Seller).await;
    let b = api.login("b@test.stoflow.dev").await;
    let clients = [
        (api.http.clone(), api.seller_login.tenant_id),
        (client_with(&b.access_token), b.tenant_id),
    ];
    let n = 200;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (http, tenant) = clients[i % 2].clone();
            let url = api.url("/v1/jobs");
            let trace = format!("{:032x}", i + 1);
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
                    .json(&json!({"job": {"kind": "noop"}, "delay_ms": 600000}))
                    .send()
                    .await
                    .unwrap();
                let (s, v) = Api::read(r).await;
                assert_eq!(s, 202, "{v}");
                (v["id"].as_i64().unwrap(), tenant, trace)
            })
        })
        .collect();
    let mut sent = Vec::with_capacity(n);
    for t in tasks {
        sent.push(t.await.unwrap());
    }
    let ids: Vec<i64> = sent.iter().map(|s| s.0).collect();
    let rows: Vec<(i64, Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT id, tenant_id, trace_id FROM jobs WHERE id = ANY($1) ORDER BY id")
            .bind(&ids)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), n, "one job per request, no id twice");
    for (id, tenant, trace) in &sent {
        let row = rows.iter().find(|r| r.0 == *id).unwrap();
        assert_eq!(
            (row.1, row.2.as_deref()),
            (Some(*tenant), Some(trace.as_str())),
            "job {id}"
        );
    }
    // Requests that overlapped were written together: fewer transactions than jobs.
    let txns: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(txns < n as i64, "{txns} commits for {n} jobs");
}

#[tokio::test]
async fn a_job_postgres_refuses_fails_alone_and_its_batch_mates_are_written() {
    let db = TestDb::new().await;
    let c = engine::coalesce::Coalescer::spawn(db.pool.clone(), 500, 1);
    let job = |args: Value| engine::queue::NewJob {
        kind: "noop",
        args,
        priority: 0,
        run_at: None,
        max_attempts: 3,
        idempotency_key: None,
    };
    // jsonb cannot hold \u0000: that job's INSERT fails; sent together, the others must not.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let c = c.clone();
            let args = if i == 25 {
                json!({"note": "bad\u{0}"})
            } else {
                json!({"n": i})
            };
            let j = job(args);
            tokio::spawn(async move { c.insert(None, j).await })
        })
        .collect();
    let mut results = vec![];
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(results[25].is_err(), "the refused job fails");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 49);
    assert_eq!(db.count("kind = 'noop'").await, 49);
}
