//! The ops dashboard's JSON (`/v1/dashboard/*`), the per-tenant event stream, the audit log, trace
//! ids from enqueue to the run's log lines, and marketplace HTTP metrics.

use std::time::Duration;

use integration::{Api, Platform, TestDb, eventually, free_port, read_events, simulators, worker};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn kind_row(overview: &Value, kind: &str) -> Value {
    overview["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == kind)
        .unwrap()
        .clone()
}

fn ids(page: &Value) -> Vec<i64> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn overview_workers_and_job_pages_report_the_queue() {
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
    // A job whose arguments hold secrets (as a marketplace job might), stored dead.
    let secret: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, state, args, max_attempts, finished_at)
         VALUES ('refresh_token', 'dead', $1, 3, now()) RETURNING id",
    )
    .bind(json!({"account_id": 77, "access_token": "tok-123", "nested": {"Authorization": "Bearer abc"}}))
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let (s, o) = api.get_as(&api.ops, "/v1/dashboard/overview").await;
    assert_eq!(s, 200, "{o}");
    let noop = kind_row(&o, "noop");
    assert_eq!(
        (noop["done"].as_i64(), noop["dead"].as_i64()),
        (Some(2), Some(1)),
        "{noop}"
    );
    assert_eq!(kind_row(&o, "refresh_token")["dead"], 1);
    let (done, dead) = o["throughput"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "noop")
        .fold((0, 0), |(d, x), p| {
            (
                d + p["done"].as_i64().unwrap(),
                x + p["dead"].as_i64().unwrap(),
            )
        });
    assert_eq!((done, dead), (2, 1));
    let p = o["percentiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "noop")
        .unwrap();
    assert_eq!(p["runs"], 3);
    assert!(p["run_p95_ms"].as_f64().unwrap() >= p["run_p50_ms"].as_f64().unwrap());
    assert_eq!(o["workers_live"], 1);

    let (_, w) = api.get_as(&api.ops, "/v1/dashboard/workers").await;
    let procs = w["workers"].as_array().unwrap();
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0]["status"], "live");
    assert_eq!(procs[0]["in_flight"], 0);
    assert!(
        procs[0]["kinds"]
            .as_array()
            .unwrap()
            .contains(&json!("noop"))
    );
    assert_eq!(procs[0]["pid"], _w.pid());

    // Filters: state across kinds (merged per-kind index scans), kind and state, text, id.
    let (_, all_dead) = api.get_as(&api.ops, "/v1/dashboard/jobs?state=dead").await;
    assert_eq!(ids(&all_dead), vec![secret, bad]);
    let (_, noop_dead) = api
        .get_as(&api.ops, "/v1/dashboard/jobs?state=dead&kind=noop")
        .await;
    assert_eq!(ids(&noop_dead), vec![bad]);
    let (_, noop_done) = api
        .get_as(&api.ops, "/v1/dashboard/jobs?kind=noop&state=done")
        .await;
    assert_eq!(ids(&noop_done), vec![ok2, ok1]);
    let (_, by_text) = api
        .get_as(&api.ops, "/v1/dashboard/jobs?q=access_token")
        .await;
    assert_eq!(ids(&by_text), vec![secret]);
    assert_eq!(by_text["jobs"][0]["args"]["access_token"], "[redacted]");
    let (_, by_error) = api
        .get_as(&api.ops, "/v1/dashboard/jobs?q=permanent%20failure")
        .await;
    assert_eq!(ids(&by_error), vec![bad]);
    let (_, by_id) = api
        .get_as(&api.ops, &format!("/v1/dashboard/jobs?q={ok1}"))
        .await;
    assert!(ids(&by_id).contains(&ok1));
    // Keyset pages: one job per page, then the next.
    let (_, p1) = api
        .get_as(&api.ops, "/v1/dashboard/jobs?kind=noop&limit=1")
        .await;
    assert_eq!(ids(&p1), vec![bad]);
    let c = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = api
        .get_as(
            &api.ops,
            &format!("/v1/dashboard/jobs?kind=noop&limit=1&cursor={c}"),
        )
        .await;
    assert_eq!(ids(&p2), vec![ok2]);

    // Detail: secrets redacted at any depth, the error with its class, timings.
    let (s, d) = api
        .get_as(&api.ops, &format!("/v1/dashboard/jobs/{secret}"))
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["job"]["args"]["access_token"], "[redacted]");
    assert_eq!(d["job"]["args"]["nested"]["Authorization"], "[redacted]");
    assert_eq!(d["job"]["args"]["account_id"], 77);
    assert!(!d.to_string().contains("tok-123"));
    let (_, d) = api
        .get_as(&api.ops, &format!("/v1/dashboard/jobs/{bad}"))
        .await;
    assert_eq!(d["job"]["errors"][0]["class"], "permanent");
    assert!(d["timings"]["run_ms"].as_i64().is_some(), "{d}");

    // Inputs are validated with a precise problem.
    let (s, e) = api.get_as(&api.ops, "/v1/dashboard/jobs?kind=nope").await;
    assert_eq!(s, 400);
    assert!(
        e["detail"].as_str().unwrap().contains("unknown kind"),
        "{e}"
    );
    assert_eq!(
        api.get_as(&api.ops, "/v1/dashboard/jobs?cursor=x").await.0,
        400
    );
    assert_eq!(
        api.get_as(&api.ops, "/v1/dashboard/jobs?limit=0").await.0,
        400
    );
    assert_eq!(
        api.get_as(&api.ops, "/v1/dashboard/jobs/999999").await.0,
        404
    );
    // The page itself is served, with the kinds written in.
    let page = api.get_text(&api.http, "/dashboard").await;
    assert!(page.contains("publish_listing") && page.contains("/dashboard/app.js"));
}

#[tokio::test]
async fn bulk_actions_preview_then_apply_and_every_action_is_audited() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    // No worker: jobs stay pending.
    let mut jobs = vec![];
    for _ in 0..3 {
        jobs.push(api.enqueue(json!({"kind": "noop"}), json!({})).await);
    }
    let other = api
        .enqueue(
            json!({"kind": "sync_orders", "account_id": seller_account(&db, &api).await}),
            json!({}),
        )
        .await;
    let cancel = json!({"action": "cancel", "kind": "noop", "reason": "bad deploy"});
    let (s, p) = api
        .post_as(&api.ops, "/v1/dashboard/bulk/preview", &cancel)
        .await;
    assert_eq!((s, p["count"].as_i64()), (200, Some(3)), "{p}");
    let (s, r) = api.post_as(&api.ops, "/v1/dashboard/bulk", &cancel).await;
    assert_eq!((s, r["changed"].as_i64()), (200, Some(3)), "{r}");
    for id in &jobs {
        assert_eq!(api.job(*id).await["state"], "cancelled");
    }
    assert_eq!(api.job(other).await["state"], "pending");
    let (_, p) = api
        .post_as(&api.ops, "/v1/dashboard/bulk/preview", &cancel)
        .await;
    assert_eq!(p["count"], 0);

    // A state the action does not apply to is refused, naming the allowed ones.
    let (s, e) = api
        .post_as(
            &api.ops,
            "/v1/dashboard/bulk/preview",
            &json!({"action": "retry", "state": "pending"}),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("dead, cancelled"),
        "{e}"
    );
    let (s, _) = api
        .post_as(
            &api.ops,
            "/v1/dashboard/bulk",
            &json!({"action": "retry", "kind": "nope"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .post_as(
            &api.ops,
            "/v1/dashboard/bulk",
            &json!({"action": "explode"}),
        )
        .await;
    assert_eq!(s, 400);

    let retry = json!({"action": "retry", "kind": "noop", "state": "cancelled"});
    let (_, p) = api
        .post_as(&api.ops, "/v1/dashboard/bulk/preview", &retry)
        .await;
    assert_eq!(p["count"], 3);
    let (_, r) = api.post_as(&api.ops, "/v1/dashboard/bulk", &retry).await;
    assert_eq!(r["changed"], 3);
    for id in &jobs {
        assert_eq!(api.job(*id).await["state"], "pending");
    }

    // Single actions and pause/resume are audited too.
    let (s, _) = api
        .post(&format!("/v1/jobs/{}/cancel", jobs[0]), &json!({}))
        .await;
    assert_eq!(s, 200);
    let r = api
        .ops
        .post(api.url("/v1/queues/noop/pause?reason=incident"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, a) = api.get_as(&api.ops, "/v1/dashboard/audit").await;
    let entries = a["entries"].as_array().unwrap();
    let summary: Vec<(String, Value, i64)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["target"].clone(),
                e["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("pause".to_string(), json!("noop"), 1),
            ("cancel".to_string(), json!(jobs[0].to_string()), 1),
            ("bulk_retry".to_string(), Value::Null, 3),
            ("bulk_cancel".to_string(), Value::Null, 3),
        ]
    );
    let bulk_cancel = &entries[3];
    assert_eq!(bulk_cancel["filter"]["kind"], "noop");
    assert_eq!(bulk_cancel["reason"], "bad deploy");
    // The audit log names who acted: the ops user for dashboard and queue actions.
    let (_, me) = api.get_as(&api.ops, "/v1/auth/me").await;
    assert_eq!(
        bulk_cancel["actor"],
        format!("user:{} (ops)", me["user_id"])
    );
    assert_eq!(entries[0]["reason"], "incident");
}

#[tokio::test]
async fn the_event_stream_carries_job_state_changes_of_the_asked_kind() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let mut resp = api
        .http
        .get(api.url("/v1/events?kind=noop"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Another kind's changes are not on a noop stream.
    let other = api
        .enqueue(
            json!({"kind": "sync_orders", "account_id": seller_account(&db, &api).await}),
            json!({}),
        )
        .await;
    let id = api
        .enqueue(json!({"kind": "noop", "sleep_ms": 200}), json!({}))
        .await;
    let events = read_events(&mut resp, T, |ev| {
        ev.iter().any(|e| e["id"] == id && e["state"] == "done")
    })
    .await;
    assert!(
        events
            .iter()
            .all(|e| e["kind"] == "noop" && e["id"] != other),
        "{events:?}"
    );
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e["id"] == id)
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "done"]);
    assert_eq!(api.get("/v1/events?kind=nope").await.0, 400);
}

#[tokio::test]
async fn the_enqueue_trace_id_is_stored_and_on_every_log_line_of_the_run() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    // The documented shorthand (the Kubernetes manifests use `STOFLOW_LOG__FORMAT`).
    let w = worker(&db, &[("STOFLOW_LOG_FORMAT", "json")]);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = api
        .http
        .post(api.url("/v1/jobs"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"job": {"kind": "noop", "fail": "permanent"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-trace-id"], trace);
    let id = Api::read(r).await.1["id"].as_i64().unwrap();
    api.wait_state(id, "dead", T).await;
    let (_, d) = api
        .get_as(&api.ops, &format!("/v1/dashboard/jobs/{id}"))
        .await;
    assert_eq!(d["trace_id"], trace);
    // Without a traceparent the API makes one up and still stores it.
    let r = api
        .http
        .post(api.url("/v1/jobs"))
        .json(&json!({"job": {"kind": "noop"}}))
        .send()
        .await
        .unwrap();
    let made = r.headers()["x-trace-id"].to_str().unwrap().to_string();
    let id2 = Api::read(r).await.1["id"].as_i64().unwrap();
    let (_, d2) = api
        .get_as(&api.ops, &format!("/v1/dashboard/jobs/{id2}"))
        .await;
    assert_eq!(
        (made.len(), d2["trace_id"].as_str()),
        (32, Some(made.as_str()))
    );

    // The run's log line is JSON and carries job id, kind and trace id (the span's fields).
    let mut line = Value::Null;
    eventually(T, "the run's failure logged", || {
        let found = w.log_text().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["message"] == "job run failed" && v["span"]["job.id"] == id).then_some(v)
        });
        if let Some(v) = found {
            line = v;
        }
        std::future::ready(!line.is_null())
    })
    .await;
    assert_eq!(line["span"]["trace_id"], trace, "{line}");
    assert_eq!(line["span"]["job.kind"], "noop", "{line}");
    assert_eq!(line["outcome"], "dead", "{line}");
}

#[tokio::test]
async fn marketplace_answers_are_counted_by_status_and_the_job_detail_names_listing_and_account() {
    let db = TestDb::new().await;
    let port = free_port();
    let (sims, env) = simulators(port).await;
    let mut env: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("STOFLOW_KINDS__PUBLISH_LISTING__BACKOFF_BASE_MS", "100"));
    env.push(("STOFLOW_KINDS__PUBLISH_LISTING__BACKOFF_CAP_MS", "200"));
    let api = Api::spawn_on(port, &db, &env).await;
    let _w = worker(&db, &env);
    let (_, v) = api.get("/v1/connections/ebay/connect").await;
    let r = api
        .http
        .get(v["consent_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json!({"title": "Lamp", "condition": "good", "price": "20", "images": ["https://img.example/1.jpg"], "brand": "Acme"});
    let (_, p) = api.post("/v1/products", &body).await;
    let product = p["id"].as_i64().unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/_admin/faults", sims.ebay_url))
        .json(&json!({"fail_next": 1, "fail_status": 503, "path_prefix": "/sell/inventory/v1/offer/"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (_, v) = api
        .post(
            &format!("/v1/products/{product}/publish"),
            &json!({"marketplaces": ["ebay"]}),
        )
        .await;
    let job = v["jobs"][0]["job_id"].as_i64().unwrap();
    api.wait_state(job, "done", T).await;

    let url: String = sqlx::query_scalar("SELECT metrics_url FROM workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let text = api
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |status: &str| -> f64 {
        let series = format!(
            "stoflow_marketplace_http_responses_total{{marketplace=\"ebay\",status=\"{status}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0.0)
    };
    assert_eq!(count("503"), 1.0, "{text}");
    assert!(count("200") >= 1.0, "{text}");
    assert!(text.contains("# TYPE process_start_time_seconds gauge"));

    let (_, d) = api
        .get_as(&api.ops, &format!("/v1/dashboard/jobs/{job}"))
        .await;
    assert_eq!(d["listing"]["status"], "published", "{d}");
    assert_eq!(d["listing"]["product_id"], product);
    assert_eq!(d["account"]["marketplace"], "ebay", "{d}");
    assert!(d["account"].get("access_token").is_none());
    assert_eq!(d["job"]["errors"][0]["class"], "unavailable");
    let (_, m) = api.get_as(&api.ops, "/v1/dashboard/marketplaces").await;
    assert_eq!(m["accounts"][0]["status"], "connected", "{m}");
    assert!(m["accounts"][0]["access_expires_at"].is_string(), "{m}");
}

#[tokio::test]
async fn the_dashboard_api_needs_an_ops_token_and_the_page_asks_for_one() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let anon = reqwest::Client::new();
    for path in [
        "/v1/dashboard/overview",
        "/v1/dashboard/jobs",
        "/v1/dashboard/audit",
    ] {
        let r = anon.get(api.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(api.get(path).await.0, 403, "{path} as a seller");
        assert_eq!(api.get_as(&api.ops, path).await.0, 200, "{path} as ops");
    }
    let (s, body) = api
        .post(
            "/v1/dashboard/bulk",
            &json!({"action": "cancel", "kind": "noop"}),
        )
        .await;
    assert_eq!(s, 403, "a seller cannot act in bulk: {body}");
    assert!(body["detail"].as_str().unwrap().contains("ops"));
    // The page holds no data: it is served to anyone and signs in from the browser.
    let page = anon.get(api.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/dashboard/app.js"));
}

/// A marketplace account of the test seller's tenant (jobs may only name the caller's own).
async fn seller_account(db: &TestDb, api: &Api) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO marketplace_accounts (tenant_id, marketplace, external_user_id) VALUES ($1, 'ebay', 'dash-seller')
         RETURNING id",
    )
    .bind(api.seller_login.tenant_id)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// The marketplaces page's account row of `id`.
fn account_row(m: &Value, id: i64) -> Value {
    m["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn marketplaces_page_shows_each_accounts_last_poll_and_the_double_sell_window() {
    let p = Platform::start(1, &[]).await;
    let ebay = p.connect("ebay").await;
    p.connect("etsy").await;
    let (s, m) = p.api.get_as(&p.api.ops, "/v1/dashboard/marketplaces").await;
    assert_eq!(s, 200, "{m}");
    let a = account_row(&m, ebay);
    assert!(a["last_poll_at"].is_null(), "never polled yet: {a}");
    // No push has been received (webhooks are not wired yet); the page shows a dash.
    assert!(a["last_push_at"].is_null(), "{a}");
    // Only a Vinted account has an extension.
    assert!(a["extension_online"].is_null(), "{a}");
    assert_eq!(m["double_sell"], json!([]), "{m}");

    let product = p
        .product(json!({"title": "Linen shirt", "stock_quantity": 1}))
        .await;
    for job in p.publish(product, &["ebay", "etsy"]).await {
        p.api.wait_state(job, "done", T).await;
    }
    let sku = p.listing(product, "ebay").await["sku"].clone();
    let before_sale = chrono::Utc::now();
    p.sim_admin(
        "ebay",
        "/_admin/orders",
        json!({"line_items": [{"sku": sku, "quantity": 1}]}),
    )
    .await;
    let sync = p
        .api
        .enqueue(
            json!({"kind": "sync_orders", "account_id": ebay}),
            json!({}),
        )
        .await;
    p.api.wait_state(sync, "done", T).await;
    eventually(T, "Etsy listing withdrawn", || async {
        p.listing(product, "etsy").await["status"] == "withdrawn"
    })
    .await;
    let (_, m) = p.api.get_as(&p.api.ops, "/v1/dashboard/marketplaces").await;
    let polled: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(account_row(&m, ebay)["last_poll_at"].clone()).unwrap();
    assert!(polled >= before_sale, "{m}");
    let window = m["double_sell"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["marketplace"] == "ebay")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (window["sales"].as_i64(), window["open"].as_i64()),
        (Some(1), Some(0)),
        "{m}"
    );
    // From the sale to the withdraw job's finish: this test's own span bounds it.
    let elapsed = (chrono::Utc::now() - before_sale).num_milliseconds();
    let (p50, max) = (
        window["p50_ms"].as_f64().unwrap(),
        window["max_ms"].as_f64().unwrap(),
    );
    assert!(
        p50 > 0.0 && p50 == max && max <= elapsed as f64,
        "{window}, {elapsed} ms"
    );
}
