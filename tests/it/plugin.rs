//! The Vinted plugin flow end to end: API → Postgres → worker process → plugin API → the
//! reference runner (the extension's loop, `plugin::Runner`) → the Vinted simulator.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use integration::{Api, Platform, Proc, eventually};
use plugin::{Config, Runner, Step};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// The platform (API, one worker, simulators) with the Vinted helpers these tests share.
struct Setup(Platform);

impl std::ops::Deref for Setup {
    type Target = Platform;
    fn deref(&self) -> &Platform {
        &self.0
    }
}

/// The platform with `extra` settings (e.g. a short pickup timeout). Failed plugin attempts
/// back off briefly unless `extra` says otherwise, so retries happen within a test.
async fn setup(extra: &[(&'static str, &str)]) -> Setup {
    let mut settings = vec![
        ("STOFLOW_PLUGIN__BACKOFF_BASE_MS", "100"),
        ("STOFLOW_PLUGIN__BACKOFF_CAP_MS", "200"),
    ];
    settings.extend_from_slice(extra);
    Setup(Platform::start(1, &settings).await)
}

impl Setup {
    /// Connects a Vinted account; returns its plugin token.
    async fn connect(&self, user_id: &str, login: &str) -> String {
        let v = self.connect_vinted(user_id, login).await;
        v["plugin_token"].as_str().unwrap().to_string()
    }

    fn runner(&self, token: &str) -> Runner {
        let mut cfg = Config::for_simulator(&self.api.base, token, &self.sims.vinted_url);
        cfg.poll = Duration::from_millis(50);
        // Plain polling: these tests step the protocol by hand (long polling has its own test).
        cfg.wait = Duration::ZERO;
        Runner::new(cfg)
    }

    /// A product with everything Vinted asks for.
    async fn product(&self, title: &str) -> i64 {
        self.0
            .product(
                json!({"title": title, "description": "Soft merino wool, barely worn.",
                "size": "M", "color": "navy", "condition": "very_good", "price": "25.00",
                "images": ["https://img.example/1.jpg", "https://img.example/2.jpg"]}),
            )
            .await
    }

    async fn publish(&self, product: i64) -> i64 {
        self.0.publish(product, &["vinted"]).await[0]
    }

    /// The plugin task the publish job made (once it exists).
    async fn task_of(&self, job: i64) -> Value {
        let deadline = Instant::now() + T;
        loop {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM plugin_tasks WHERE job_ids @> ARRAY[$1]::bigint[]",
            )
            .bind(job)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap();
            if let Some(id) = id {
                return self.task(id).await;
            }
            assert!(
                Instant::now() < deadline,
                "publish job {job} made no plugin task: {}",
                self.api.job(job).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn task(&self, id: i64) -> Value {
        let (s, v) = self.api.get(&format!("/v1/plugin-tasks/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn sim_items(&self) -> Vec<Value> {
        let state = self.sim_get("vinted", "/_admin/state").await;
        state["items"].as_array().cloned().unwrap_or_default()
    }

    async fn sim_admin(&self, method: reqwest::Method, path: &str, body: Value) {
        self.sim_request(method, "vinted", path, body).await;
    }

    /// A raw plugin API call with `token` (None: no Authorization header).
    async fn plugin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        // No default credentials: the seller's access token is itself a way in (seed 002's
        // extension protocol), so "no token" must mean none.
        let mut req = self.api.anon.request(method, self.api.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (s, v) = Api::read(r).await;
        (s, v, ct)
    }

    async fn vinted_account(&self) -> Value {
        let (_, v) = self.api.get("/v1/connections").await;
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["marketplace"] == "vinted")
            .cloned()
            .unwrap()
    }
}

/// Polls with the runner until it runs a task; returns that step.
async fn run_one(r: &Runner) -> Step {
    let deadline = Instant::now() + T;
    loop {
        let step = r.step().await.expect("runner step");
        if matches!(step, Step::Ran { .. }) {
            return step;
        }
        assert!(
            Instant::now() < deadline,
            "the runner ran no task: {step:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn an_idle_long_poll_is_answered_as_soon_as_a_task_is_pending() {
    let s = setup(&[]).await;
    let token = s.connect("4242", "seller").await;
    // Nothing to do: the request is held for the wait asked, then answered idle.
    let asked = Instant::now();
    let (st, v, _) = s
        .plugin_call(
            reqwest::Method::GET,
            "/api/plugin/tasks?wait=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!((st, &v["task_id"]), (200, &Value::Null), "{v}");
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // A task made while the request is held answers it at once.
    let held = {
        let (http, url, token) = (
            s.api.anon.clone(),
            s.api.url("/api/plugin/tasks?wait=20"),
            token.clone(),
        );
        tokio::spawn(async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            (Instant::now(), Api::read(r).await)
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!held.is_finished(), "the idle request is held open");
    let product = s.product("Merino scarf").await;
    let made = Instant::now();
    let job = s.publish(product).await;
    let (answered, (st, lease)) = held.await.unwrap();
    assert_eq!(st, 200, "{lease}");
    assert_eq!(lease["action"], "create_listing", "{lease}");
    let task = s.task_of(job).await;
    assert_eq!(lease["task_id"], task["id"]);
    let latency = answered - made;
    assert!(
        latency < Duration::from_secs(5),
        "answered {latency:?} after the publish"
    );
    // Longer than the server holds a request: refused, naming the parameter.
    let (st, v, ct) = s
        .plugin_call(
            reqwest::Method::GET,
            "/api/plugin/tasks?wait=26",
            Some(&token),
            None,
        )
        .await;
    assert_eq!((st, ct.as_str()), (400, "application/problem+json"), "{v}");
    assert!(v.to_string().contains("wait"), "{v}");
}

#[tokio::test]
async fn a_product_published_to_vinted_goes_through_the_plugin_and_its_job_shows_the_remote_id() {
    let s = setup(&[]).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let product = s.product("Merino wool scarf").await;
    let job = s.publish(product).await;
    let task = s.task_of(job).await;
    assert_eq!(task["action"], "create_listing");

    let r = s.runner(&token);
    match run_one(&r).await {
        Step::Ran {
            task_id,
            outcome,
            accepted,
        } => assert_eq!(
            (task_id, outcome.as_str(), accepted),
            (task["id"].as_i64().unwrap(), "succeeded", true)
        ),
        other => panic!("{other:?}"),
    }

    let done = s.api.wait_state(job, "done", T).await;
    let items = s.sim_items().await;
    assert_eq!(items.len(), 1, "exactly one Vinted item: {items:?}");
    let remote = items[0]["id"].as_u64().unwrap().to_string();
    assert_eq!(done["result"]["remote_listing_id"], json!(remote), "{done}");
    assert_eq!(items[0]["title"], "Merino wool scarf");
    assert_eq!(items[0]["status_id"], 2, "very_good → status_id 2");
    assert_eq!(items[0]["photos"].as_array().unwrap().len(), 2);

    let (status, listing, url): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT status, remote_listing_id, remote_url FROM listings WHERE product_id = $1 AND marketplace = 'vinted'",
    )
    .bind(product)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), listing.as_deref()),
        ("published", Some(remote.as_str()))
    );
    assert!(url.unwrap().ends_with(&remote));

    // The dispatch job that supervised the task ends done too; the task shows one attempt.
    let task = s.task(task["id"].as_i64().unwrap()).await;
    assert_eq!(
        (task["state"].clone(), task["attempts"].clone()),
        (json!("succeeded"), json!(1))
    );
    let dispatch = task["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_i64().unwrap())
        .find(|j| *j != job)
        .unwrap();
    let d = s.api.wait_state(dispatch, "done", T).await;
    assert_eq!(d["kind"], "dispatch_plugin_task");

    // Nothing more to do; the extension's last poll shows in the connection.
    assert_eq!(r.step().await.unwrap(), Step::Idle);
    assert!(!s.vinted_account().await["plugin_last_seen_at"].is_null());

    // An edit published again becomes an update of the same item, not a second one.
    let (st, _) = s
        .api
        .http
        .patch(s.api.url(&format!("/v1/products/{product}")))
        .json(&json!({"price": "19.00"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(st, 200);
    let job2 = s.publish(product).await;
    assert_eq!(s.task_of(job2).await["action"], "update_listing");
    run_one(&r).await;
    s.api.wait_state(job2, "done", T).await;
    let items = s.sim_items().await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["price"]["amount"], "19");
}

#[tokio::test]
async fn a_listing_vinted_refuses_fails_at_once_naming_the_field() {
    let s = setup(&[]).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    // Vinted refuses titles with too many capitals (400 code 99).
    let product = s.product("VINTAGE WOOL SCARF").await;
    let job = s.publish(product).await;
    s.task_of(job).await;
    match run_one(&s.runner(&token)).await {
        Step::Ran { outcome, .. } => assert_eq!(outcome, "validation"),
        other => panic!("{other:?}"),
    }
    let dead = s.api.wait_state(job, "dead", T).await;
    let err = &dead["last_error"];
    assert_eq!(err["class"], "rejected", "{dead}");
    assert!(err["message"].as_str().unwrap().contains("title"), "{err}");
    assert!(s.sim_items().await.is_empty());
    let status: String = sqlx::query_scalar(
        "SELECT status FROM listings WHERE product_id = $1 AND marketplace = 'vinted'",
    )
    .bind(product)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(status, "failed");
}

#[tokio::test]
async fn a_task_no_plugin_picks_up_times_out_and_its_jobs_end_dead_plugin_timeout() {
    let s = setup(&[("STOFLOW_PLUGIN__PICKUP_TIMEOUT_MS", "1500")]).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let product = s.product("Merino wool scarf").await;
    let job = s.publish(product).await;
    let task = s.task_of(job).await;

    let dead = s.api.wait_state(job, "dead", T).await;
    assert_eq!(dead["last_error"]["class"], "plugin_timeout", "{dead}");
    let task = s.task(task["id"].as_i64().unwrap()).await;
    assert_eq!(task["state"], "timed_out");
    for j in task["job_ids"].as_array().unwrap() {
        let v = s.api.wait_state(j.as_i64().unwrap(), "dead", T).await;
        assert_eq!(v["last_error"]["class"], "plugin_timeout", "{v}");
    }
    // A plugin that comes too late gets nothing: the task is not offered any more.
    assert_eq!(s.runner(&token).step().await.unwrap(), Step::Idle);
    assert!(s.sim_items().await.is_empty());
}

#[tokio::test]
async fn a_task_failing_transiently_is_retried_three_times_then_failed() {
    let s = setup(&[]).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let product = s.product("Merino wool scarf").await;
    let job = s.publish(product).await;
    let task = s.task_of(job).await;
    s.sim_admin(
        reqwest::Method::POST,
        "/_admin/faults",
        json!({"fail_next": 10, "fail_status": 503, "path_prefix": "/api/v2/item_upload"}),
    )
    .await;

    let r = s.runner(&token);
    for attempt in 1..=3 {
        match run_one(&r).await {
            Step::Ran {
                outcome, accepted, ..
            } => {
                assert_eq!(
                    (outcome.as_str(), accepted),
                    ("transient", true),
                    "attempt {attempt}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    let dead = s.api.wait_state(job, "dead", T).await;
    assert_eq!(dead["last_error"]["class"], "plugin_failed", "{dead}");
    assert!(
        dead["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("3/3"),
        "{dead}"
    );
    assert_eq!(dead["last_error"]["permanent"], true, "{dead}");
    // Ops see it among the recent marketplace failures, and the seller's extension online.
    let (_, m) = s.api.get_as(&s.api.ops, "/v1/dashboard/marketplaces").await;
    let failure = m["recent_errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["job_id"] == job)
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (&failure["marketplace"], &failure["class"], &failure["kind"]),
        (
            &json!("vinted"),
            &json!("plugin_failed"),
            &json!("publish_listing")
        ),
        "{m}"
    );
    let account = s.vinted_account().await["account_id"].clone();
    let row = m["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == account)
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(row["extension_online"], true, "{m}");
    let task = s.task(task["id"].as_i64().unwrap()).await;
    assert_eq!(task["state"], "failed");
    assert_eq!(task["attempts"], 3);
    assert_eq!(task["errors"].as_array().unwrap().len(), 3);
    // Failed for good: not offered a fourth time.
    assert_eq!(r.step().await.unwrap(), Step::Idle);
    assert!(s.sim_items().await.is_empty());
}

#[tokio::test]
async fn a_blocked_session_pauses_the_account_until_the_session_works_again() {
    let s = setup(&[]).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let product = s.product("Merino wool scarf").await;
    let job = s.publish(product).await;
    let task = s.task_of(job).await;
    let task_id = task["id"].as_i64().unwrap();
    s.sim_admin(
        reqwest::Method::PUT,
        "/_admin/block",
        json!({"enabled": true}),
    )
    .await;

    let r = s.runner(&token);
    match run_one(&r).await {
        Step::Ran { outcome, .. } => assert_eq!(outcome, "blocked"),
        other => panic!("{other:?}"),
    }
    // The account is paused with the reason; the task waits with its attempt given back.
    let acc = s.vinted_account().await;
    assert_eq!(acc["status"], "broken", "{acc}");
    assert!(
        acc["status_reason"].as_str().unwrap().contains("DataDome"),
        "{acc}"
    );
    let t = s.task(task_id).await;
    assert_eq!(
        (t["state"].clone(), t["attempts"].clone()),
        (json!("pending"), json!(0))
    );
    // Nothing is leased while paused and the session still fails.
    assert!(matches!(r.step().await.unwrap(), Step::Paused(_)));
    assert_eq!(s.task(task_id).await["state"], "pending");
    s.api.wait_state(job, "scheduled", T).await;

    // The seller solves the challenge: the runner sees the session work and resumes.
    s.sim_admin(
        reqwest::Method::PUT,
        "/_admin/block",
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(r.step().await.unwrap(), Step::Resumed);
    assert_eq!(s.vinted_account().await["status"], "connected");
    run_one(&r).await;
    s.api.wait_state(job, "done", T).await;
    assert_eq!(s.sim_items().await.len(), 1);
}

#[tokio::test]
async fn a_plugin_sees_only_its_own_tasks_and_late_or_foreign_results_change_nothing() {
    let s = setup(&[("STOFLOW_PLUGIN__LEASE_TIMEOUT_MS", "1000")]).await;
    let token_a = s.connect("87654321", "stoflow_seller").await;
    let token_b = s.connect("11112222", "other_seller").await;
    let product = s.product("Merino wool scarf").await;
    let job = s.publish(product).await;
    let task = s.task_of(job).await;
    let id = task["id"].as_i64().unwrap();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // B has nothing to lease; A leases the task.
    let (st, v, _) = s
        .plugin_call(get.clone(), "/api/plugin/tasks", Some(&token_b), None)
        .await;
    assert_eq!((st, v["task_id"].clone()), (200, Value::Null), "{v}");
    let (st, lease, _) = s
        .plugin_call(get.clone(), "/api/plugin/tasks", Some(&token_a), None)
        .await;
    assert_eq!((st, lease["task_id"].as_i64()), (200, Some(id)), "{lease}");
    assert_eq!(
        lease["params"]["price"],
        json!({"amount": "25.00", "currency_code": "EUR"})
    );
    assert_eq!(lease["timeout"], 1);
    let lease_id = lease["lease_id"].as_str().unwrap().to_string();
    let ok = json!({"lease_id": lease_id, "success": true, "data": {"remote_id": "1"}});
    let path = format!("/api/plugin/tasks/{id}/result");

    // B cannot answer A's task, even with A's lease id: it does not exist for B.
    let (st, v, ct) = s
        .plugin_call(post.clone(), &path, Some(&token_b), Some(ok.clone()))
        .await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(ct, "application/problem+json");
    // No token, or an unknown one: 401 problem.
    let (st, _, ct) = s
        .plugin_call(get.clone(), "/api/plugin/tasks", None, None)
        .await;
    assert_eq!((st, ct.as_str()), (401, "application/problem+json"));
    let (st, v, _) = s
        .plugin_call(get.clone(), "/api/plugin/tasks", Some("sfp_nope"), None)
        .await;
    assert_eq!(st, 401, "{v}");
    // A wrong lease id: 409.
    let wrong = json!({"lease_id": "not-the-lease", "success": true, "data": {"remote_id": "1"}});
    let (st, v, _) = s
        .plugin_call(post.clone(), &path, Some(&token_a), Some(wrong))
        .await;
    assert_eq!(st, 409, "{v}");
    // Bad inputs: 400 for the shape, 422 for what is missing.
    let bad_type =
        json!({"lease_id": lease_id, "success": false, "error": {"type": "oops", "message": "x"}});
    let (st, v, _) = s
        .plugin_call(post.clone(), &path, Some(&token_a), Some(bad_type))
        .await;
    assert_eq!(st, 400, "{v}");
    let unknown = json!({"lease_id": lease_id, "success": true, "surprise": 1});
    let (st, v, _) = s
        .plugin_call(post.clone(), &path, Some(&token_a), Some(unknown))
        .await;
    assert_eq!(st, 400, "{v}");
    let no_data = json!({"lease_id": lease_id, "success": true});
    let (st, v, _) = s
        .plugin_call(post.clone(), &path, Some(&token_a), Some(no_data))
        .await;
    assert_eq!(st, 422, "{v}");
    let no_error = json!({"lease_id": lease_id, "success": false});
    let (st, v, _) = s
        .plugin_call(post.clone(), &path, Some(&token_a), Some(no_error))
        .await;
    assert_eq!(st, 422, "{v}");
    let (st, v, _) = s
        .plugin_call(
            post.clone(),
            "/api/plugin/tasks/abc/result",
            Some(&token_a),
            Some(ok.clone()),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s
        .api
        .post(
            "/v1/connections/vinted",
            &json!({"vinted_user_id": "abc", "login": "x"}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        s.task(id).await["state"],
        "leased",
        "rejected requests changed nothing"
    );

    // The lease expires unanswered: a late result is refused and changes nothing …
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, v, _) = s
        .plugin_call(post.clone(), &path, Some(&token_a), Some(ok))
        .await;
    assert_eq!(st, 409, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("changes nothing"),
        "{v}"
    );
    assert!(s.sim_items().await.is_empty());
    // … and the task goes back to pending with the attempt counted, then is leased again.
    eventually(T, "the expired lease is put back to pending", || async {
        let t = s.task(id).await;
        t["state"] == "pending" && t["attempts"] == 1
    })
    .await;
    // (after its backoff)
    let again = lease_when_due(&s, &token_a).await;
    assert_eq!(again["task_id"].as_i64(), Some(id), "{again}");
    assert_ne!(again["lease_id"], json!(lease_id));

    // Reconnecting rotates the token: the old one stops working.
    let token_a2 = s.connect("87654321", "stoflow_seller").await;
    let (st, _, _) = s
        .plugin_call(
            reqwest::Method::GET,
            "/api/plugin/tasks",
            Some(&token_a),
            None,
        )
        .await;
    assert_eq!(st, 401);
    let (st, _, _) = s
        .plugin_call(
            reqwest::Method::GET,
            "/api/plugin/tasks",
            Some(&token_a2),
            None,
        )
        .await;
    assert_eq!(st, 200);
    // Raw rows hold only the token's hash.
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM plugin_tokens WHERE token_sha256 = convert_to($1, 'UTF8')",
    )
    .bind(&token_a2)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(n, 0);
}

/// Polls the lease endpoint until it hands out a task (one may be backing off); returns it.
async fn lease_when_due(s: &Setup, token: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (st, v, _) = s
            .plugin_call(reqwest::Method::GET, "/api/plugin/tasks", Some(token), None)
            .await;
        assert_eq!(st, 200, "{v}");
        if !v["task_id"].is_null() {
            return v;
        }
        assert!(Instant::now() < deadline, "no task leased: {v}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn leases_that_expire_unanswered_three_times_fail_the_task() {
    let s = setup(&[("STOFLOW_PLUGIN__LEASE_TIMEOUT_MS", "1000")]).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let product = s.product("Merino wool scarf").await;
    let job = s.publish(product).await;
    let id = s.task_of(job).await["id"].as_i64().unwrap();
    // An extension that leases and then dies, three times; the dispatch job expires each lease.
    for attempt in 1..=3 {
        let v = lease_when_due(&s, &token).await;
        assert_eq!(v["task_id"].as_i64(), Some(id), "attempt {attempt}: {v}");
        if attempt < 3 {
            eventually(T, "the expired lease is put back to pending", || async {
                let t = s.task(id).await;
                t["state"] == "pending" && t["attempts"] == attempt
            })
            .await;
        }
    }
    let dead = s.api.wait_state(job, "dead", T).await;
    assert_eq!(dead["last_error"]["class"], "plugin_failed", "{dead}");
    let t = s.task(id).await;
    assert_eq!(
        (t["state"].clone(), t["attempts"].clone()),
        (json!("failed"), json!(3))
    );
    assert_eq!(t["error"]["type"], "lease_expired");
}

#[tokio::test]
async fn writes_over_the_sellers_vinted_budget_wait_without_spending_an_attempt() {
    let s = setup(&[("STOFLOW_LIMITS__VINTED__SELLER_WRITES_PER_HOUR", "1")]).await;
    s.connect("87654321", "stoflow_seller").await;
    let first = s.publish(s.product("Merino wool scarf").await).await;
    s.task_of(first).await;
    // The second write is over the hour's budget: its job snoozes, no task reaches the extension.
    let second = s.publish(s.product("Linen shirt").await).await;
    let deadline = Instant::now() + T;
    let job = loop {
        let (_, j) = s.api.get(&format!("/v1/jobs/{second}")).await;
        if j["last_error"]["class"] == "rate_limited" {
            break j;
        }
        assert!(Instant::now() < deadline, "never waited on the budget: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["state"], "scheduled", "{job}");
    assert_eq!(job["attempt"], 0, "a snooze spends no attempt: {job}");
    assert!(
        job["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("vinted:seller:"),
        "{job}"
    );
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM plugin_tasks")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(tasks, 1, "one write task only");
}

/// A plugin task's timestamp field.
fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn failed_plugin_attempts_back_off_before_the_next_lease() {
    let s = setup(&[
        ("STOFLOW_PLUGIN__BACKOFF_BASE_MS", "800"),
        ("STOFLOW_PLUGIN__BACKOFF_CAP_MS", "60000"),
    ])
    .await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let job = s.publish(s.product("Merino wool scarf").await).await;
    let id = s.task_of(job).await["id"].as_i64().unwrap();
    s.sim_admin(
        reqwest::Method::POST,
        "/_admin/faults",
        json!({"fail_next": 2, "fail_status": 503, "path_prefix": "/api/v2/item_upload"}),
    )
    .await;
    let r = s.runner(&token);

    // Attempt 1 fails: the task waits between half and all of the 800 ms base, and a poll right
    // away gets nothing.
    run_one(&r).await;
    let t = s.task(id).await;
    assert_eq!(
        (t["state"].clone(), t["attempts"].clone()),
        (json!("pending"), json!(1))
    );
    let wait = at(&t["available_at"]) - at(&t["errors"][0]["at"]);
    assert!(
        (350..=850).contains(&wait.num_milliseconds()),
        "backoff after attempt 1: {wait}"
    );
    assert_eq!(
        r.step().await.unwrap(),
        Step::Idle,
        "leased during its backoff"
    );

    // Attempt 2 fails: the wait doubles.
    run_one(&r).await;
    let t = s.task(id).await;
    assert_eq!(t["attempts"], 2);
    let wait = at(&t["available_at"]) - at(&t["errors"][1]["at"]);
    assert!(
        (750..=1650).contains(&wait.num_milliseconds()),
        "backoff after attempt 2: {wait}"
    );
    // The attempts themselves were spaced by the first wait (not 60 ms apart).
    let gap = at(&t["errors"][1]["at"]) - at(&t["errors"][0]["at"]);
    assert!(
        gap.num_milliseconds() >= 350,
        "attempts 1 and 2 only {gap} apart"
    );

    run_one(&r).await;
    s.api.wait_state(job, "done", T).await;
    assert_eq!(s.task(id).await["state"], "succeeded");
}

#[tokio::test]
async fn retrying_a_dead_vinted_publish_starts_a_fresh_plugin_task_that_can_succeed() {
    let s = setup(&[]).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let job = s.publish(s.product("Merino wool scarf").await).await;
    let first = s.task_of(job).await["id"].as_i64().unwrap();
    s.sim_admin(
        reqwest::Method::POST,
        "/_admin/faults",
        json!({"fail_next": 3, "fail_status": 503, "path_prefix": "/api/v2/item_upload"}),
    )
    .await;
    let r = s.runner(&token);
    for _ in 0..3 {
        run_one(&r).await;
    }
    let dead = s.api.wait_state(job, "dead", T).await;
    assert_eq!(dead["last_error"]["class"], "plugin_failed", "{dead}");
    assert_eq!(s.task(first).await["state"], "failed");

    let (st, v) = s
        .api
        .post(&format!("/v1/jobs/{job}/retry"), &json!(null))
        .await;
    assert!((200..300).contains(&st), "{st} {v}");
    // The retried job makes a new task instead of dying again on the failed one.
    let second = eventually_task(&s, job, first).await;
    assert_eq!(second["action"], "create_listing");
    assert_eq!(second["state"], "pending");
    match run_one(&r).await {
        Step::Ran {
            task_id, outcome, ..
        } => assert_eq!(
            (task_id, outcome.as_str()),
            (second["id"].as_i64().unwrap(), "succeeded")
        ),
        other => panic!("{other:?}"),
    }
    let done = s.api.wait_state(job, "done", T).await;
    assert_eq!(done["result"]["plugin_task_id"], second["id"], "{done}");
    assert_eq!(s.sim_items().await.len(), 1);
    assert_eq!(
        s.task(first).await["state"],
        "failed",
        "the old task stays failed"
    );
}

/// The newest task job `job` follows other than `old`, once it exists.
async fn eventually_task(s: &Setup, job: i64, old: i64) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT max(id) FROM plugin_tasks WHERE job_ids @> ARRAY[$1]::bigint[] AND id <> $2",
        )
        .bind(job)
        .bind(old)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        if let Some(id) = id {
            return s.task(id).await;
        }
        assert!(
            Instant::now() < deadline,
            "no fresh task: {}",
            s.api.job(job).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn sync_orders_on_a_vinted_account_hands_a_sales_sync_to_the_extension_and_ends_done() {
    let s = setup(&[]).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let account = s.vinted_account().await["account_id"].as_i64().unwrap();
    let job = json!({"kind": "sync_orders", "account_id": account});
    let first = s.api.enqueue(job.clone(), json!({})).await;
    let done = s.api.wait_state(first, "done", T).await;
    assert_eq!(done["result"]["created"], true, "{done}");
    let task = done["result"]["plugin_task_id"].as_i64().unwrap();
    // A second sync while that one is open joins it.
    let second = s.api.enqueue(job, json!({})).await;
    let again = s.api.wait_state(second, "done", T).await;
    assert_eq!(
        (
            again["result"]["plugin_task_id"].as_i64(),
            again["result"]["created"].clone()
        ),
        (Some(task), json!(false)),
        "{again}"
    );
    let t = s.task(task).await;
    assert_eq!(t["action"], "sync_sales");
    assert!(t["listing_id"].is_null(), "{t}");

    // The extension reads the (empty) sales; the task's job imports nothing and ends done.
    match run_one(&s.runner(&token)).await {
        Step::Ran {
            task_id, outcome, ..
        } => {
            assert_eq!((task_id, outcome.as_str()), (task, "succeeded"))
        }
        other => panic!("{other:?}"),
    }
    let dispatch = t["job_ids"][0].as_i64().unwrap();
    let d = s.api.wait_state(dispatch, "done", T).await;
    assert_eq!(d["result"]["imported"]["orders"], 0, "{d}");
    let vinted_calls: Vec<String> = s
        .sim_requests("vinted")
        .await
        .into_iter()
        .map(|(_, p, _)| p)
        .collect();
    assert!(
        vinted_calls
            .iter()
            .any(|p| p.starts_with("/api/v2/my_orders")),
        "{vinted_calls:?}"
    );
}

/// A product with stock `stock` published to eBay, Etsy and Vinted (the runner in `bg` doing
/// Vinted's part); returns (product, Vinted item id).
async fn listed_everywhere(s: &Setup, stock: i32) -> (i64, u64) {
    s.0.connect("ebay").await;
    s.0.connect("etsy").await;
    let product =
        s.0.product(
            json!({"title": "Merino wool scarf", "description": "Soft merino wool, barely worn.",
            "size": "M", "color": "navy", "condition": "very_good", "price": "25.00",
            "stock_quantity": stock, "images": ["https://img.example/1.jpg"]}),
        )
        .await;
    for job in s.0.publish(product, &["ebay", "etsy", "vinted"]).await {
        s.api.wait_state(job, "done", T).await;
    }
    let item: u64 = s.listing(product, "vinted").await["remote_listing_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (product, item)
}

/// The reference runner polling in the background until dropped, and the scheduler process with
/// a 2-second Vinted sales cadence.
struct Extension {
    _stop: tokio::sync::oneshot::Sender<()>,
    _scheduler: Proc,
}

fn extension_and_scheduler(s: &Setup, token: &str) -> Extension {
    let r = s.runner(token);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = r
            .run(async {
                let _ = rx.await;
            })
            .await;
    });
    Extension {
        _stop: tx,
        _scheduler: s.spawn_worker_bin(&["scheduler"]),
    }
}

const CADENCE: [(&str, &str); 1] = [("STOFLOW_SCHEDULER__VINTED_SALES_CRON", "*/2 * * * * *")];

async fn stock(s: &Setup, product: i64) -> (i32, String) {
    sqlx::query_as("SELECT stock_quantity, status FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
}

async fn vinted_orders(s: &Setup) -> Vec<Value> {
    let (st, v) = s.api.get("/v1/orders?marketplace=vinted").await;
    assert_eq!(st, 200, "{v}");
    v["orders"].as_array().unwrap().clone()
}

/// Waits until `n` more sales syncs succeeded than now (their imports done).
async fn syncs_pass(s: &Setup, n: i64) {
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM plugin_tasks t JOIN jobs j ON j.id = t.job_ids[1]
              WHERE t.action = 'sync_sales' AND t.state = 'succeeded' AND j.state = 'done'",
        )
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
    };
    let target = count().await + n;
    eventually(T, "sales syncs pass", || async { count().await >= target }).await;
}

#[tokio::test]
async fn a_vinted_sale_seen_by_the_extension_sells_out_the_product_and_withdraws_ebay_and_etsy() {
    let s = setup(&CADENCE).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let _ext = extension_and_scheduler(&s, &token);
    let (product, item) = listed_everywhere(&s, 1).await;

    let sold = s.sim_get("vinted", "/_admin/state").await;
    assert_eq!(sold["items"][0]["is_closed"], false);
    let sale =
        s.0.sim_admin("vinted", &format!("/_admin/items/{item}/sell"), json!({}))
            .await;
    let txn = sale["transaction_id"].as_u64().unwrap().to_string();

    eventually(
        T,
        "the Vinted sale is imported and the product sold",
        || async { stock(&s, product).await == (0, "sold".into()) },
    )
    .await;
    let orders = vinted_orders(&s).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["remote_order_id"], json!(txn));
    assert_eq!(orders[0]["lines"][0]["product_id"], json!(product));
    eventually(T, "eBay and Etsy listings withdrawn", || async {
        s.listing(product, "ebay").await["status"] == "withdrawn"
            && s.listing(product, "etsy").await["status"] == "withdrawn"
    })
    .await;
    let ebay = s.sim_get("ebay", "/_admin/state").await;
    assert_ne!(ebay["offers"][0]["offer"]["status"], "PUBLISHED", "{ebay}");
    let etsy = s.sim_get("etsy", "/_admin/state").await;
    assert_eq!(etsy["listings"][0]["state"], "inactive", "{etsy}");
    let vinted = s.listing(product, "vinted").await;
    assert_eq!(vinted["remote_state"], "sold", "{vinted}");

    // Later syncs read the same sale again and change nothing.
    syncs_pass(&s, 2).await;
    assert_eq!(vinted_orders(&s).await.len(), 1);
    assert_eq!(stock(&s, product).await, (0, "sold".into()));
}

#[tokio::test]
async fn a_vinted_sale_with_units_left_takes_one_unit_and_the_product_stays_published() {
    let s = setup(&CADENCE).await;
    let token = s.connect("87654321", "stoflow_seller").await;
    let _ext = extension_and_scheduler(&s, &token);
    let (product, item) = listed_everywhere(&s, 2).await;
    s.0.sim_admin("vinted", &format!("/_admin/items/{item}/sell"), json!({}))
        .await;

    eventually(T, "the Vinted sale is imported", || async {
        vinted_orders(&s).await.len() == 1
    })
    .await;
    assert_eq!(stock(&s, product).await, (1, "published".into()));
    // The other marketplaces keep the product, with the new quantity.
    eventually(T, "Etsy quantity follows the stock", || async {
        let state = s.sim_get("etsy", "/_admin/state").await;
        state["listings"][0]["quantity"] == 1
    })
    .await;
    assert_eq!(s.listing(product, "ebay").await["status"], "published");
    assert_eq!(s.listing(product, "etsy").await["status"], "published");
    syncs_pass(&s, 2).await;
    assert_eq!(
        stock(&s, product).await,
        (1, "published".into()),
        "stock taken once"
    );
}
