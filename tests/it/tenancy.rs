//! Tenant isolation: a seller reaches none of another tenant's objects, through any route.

use std::time::Duration;

use integration::{Api, TestDb, client_with, ensure_user, read_events, worker};
use serde_json::{Value, json};

/// Another seller (their own tenant), logged in on `api`.
async fn other_seller(db: &TestDb, api: &Api) -> (reqwest::Client, i64) {
    ensure_user(db, "other@test.stoflow.dev", jobs::auth::Role::Seller).await;
    let l = api.login("other@test.stoflow.dev").await;
    assert_ne!(l.tenant_id, api.seller_login.tenant_id);
    (client_with(&l.access_token), l.tenant_id)
}

/// Tenant A's (the harness seller's) product "Scarf" and Etsy account.
async fn product_and_account(db: &TestDb, api: &Api) -> (i64, i64) {
    let (s, p) = api
        .post(
            "/v1/products",
            &json!({"title": "Scarf", "condition": "good", "price": "10.00"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let account: i64 = sqlx::query_scalar(
        "INSERT INTO marketplace_accounts (tenant_id, marketplace, external_user_id) VALUES ($1, 'etsy', 'u1')
         RETURNING id",
    )
    .bind(api.seller_login.tenant_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (p["id"].as_i64().unwrap(), account)
}

/// A body that passes validation for each operation that takes one.
fn body_for(path: &str, method: &str) -> Value {
    match (path, method) {
        (p, "post") if p.ends_with("/publish") || p.ends_with("/withdraw") => {
            json!({"marketplaces": ["ebay"]})
        }
        (_, "patch") => json!({"title": "renamed"}),
        _ => json!({}),
    }
}

#[tokio::test]
async fn every_route_with_an_id_answers_404_for_another_tenants_object() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (other, _) = other_seller(&db, &api).await;

    // Tenant A's objects: a product, a job (waiting, so retry/cancel would apply), an account.
    let (product, account) = product_and_account(&db, &api).await;
    let job = api
        .enqueue(
            json!({"kind": "noop"}),
            json!({"delay_ms": 600000, "idempotency_key": "a-key"}),
        )
        .await;

    let task: i64 = sqlx::query_scalar(
        "WITH l AS (INSERT INTO listings (product_id, marketplace, account_id, sku, tenant_id)
                    SELECT id, 'vinted', $2, sku, tenant_id FROM products WHERE id = $1 RETURNING id)
         INSERT INTO plugin_tasks (account_id, product_id, listing_id, action, params, max_attempts, pickup_deadline)
         SELECT $2, $1, l.id, 'create_listing', '{}', 3, now() + interval '1 hour' FROM l RETURNING id",
    )
    .bind(product)
    .bind(account)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    // Walk the OpenAPI document: every operation on a path with an id, as tenant B.
    let (_, spec) = api.get("/openapi.json").await;
    let mut walked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        if !path.contains('{') {
            continue;
        }
        // Ops-only routes refuse a seller outright, whatever the object.
        let mut expect = 404;
        let id = if path.starts_with("/v1/products/") {
            product
        } else if path.starts_with("/v1/jobs/") {
            job
        } else if path.starts_with("/v1/connections/") {
            account
        } else if path.starts_with("/v1/plugin-tasks/") {
            task
        } else if path.starts_with("/api/plugin/") {
            continue; // plugin token (tests/it/plugin.rs) or the seller's token (tests/it/extension.rs)
        } else if path.starts_with("/v1/queues/") || path.starts_with("/v1/dashboard/") {
            expect = 403;
            job
        } else {
            panic!("{path}: add a fixture for this route's object to this test");
        };
        let url = api.url(
            &path
                .replace("{id}", &id.to_string())
                .replace("{kind}", "noop"),
        );
        for method in ops.as_object().unwrap().keys() {
            let r = other
                .request(method.to_uppercase().parse().unwrap(), &url)
                .json(&body_for(path, method))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, expect, "{method} {path} as another tenant: {text}");
            assert!(!text.contains("Scarf"), "{method} {path} leaked: {text}");
            walked += 1;
        }
    }
    assert!(walked >= 9, "walked only {walked} operations");

    // Lists show none of A's objects.
    for (path, key) in [
        ("/v1/products", "products"),
        ("/v1/jobs", "jobs"),
        ("/v1/connections", "connections"),
    ] {
        let (s, v) = api.get_as(&other, path).await;
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(v[key], json!([]), "{path} as another tenant: {v}");
    }
    // A's idempotency key does not hand B A's job, nor name it.
    let (s, v) = api
        .post_as(
            &other,
            "/v1/jobs",
            &json!({"job": {"kind": "noop"}, "idempotency_key": "a-key"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        !v["detail"].as_str().unwrap().contains(&job.to_string()),
        "{v}"
    );

    // Nothing changed for A; ops users see A's job.
    assert_eq!(
        api.get(&format!("/v1/products/{product}")).await.1["title"],
        "Scarf"
    );
    assert_eq!(api.get(&format!("/v1/jobs/{job}")).await.0, 200);
    assert_eq!(
        api.get_as(&api.ops, &format!("/v1/jobs/{job}")).await.0,
        200
    );
    let (_, all) = api
        .get_as(
            &api.ops,
            &format!("/v1/jobs?tenant_id={}", api.seller_login.tenant_id),
        )
        .await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 1, "{all}");
}

#[tokio::test]
async fn skus_are_per_tenant_and_jobs_carry_the_callers_tenant() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (other, other_tenant) = other_seller(&db, &api).await;
    let p = json!({"sku": "SAME-1", "title": "Hat", "condition": "good", "price": "5"});
    assert_eq!(api.post("/v1/products", &p).await.0, 201);
    assert_eq!(
        api.post_as(&other, "/v1/products", &p).await.0,
        201,
        "another tenant's SKU"
    );
    assert_eq!(api.post("/v1/products", &p).await.0, 409, "own SKU twice");
    let (_, v) = api
        .post_as(&other, "/v1/jobs", &json!({"job": {"kind": "noop"}}))
        .await;
    let tenant: Option<i64> = sqlx::query_scalar("SELECT tenant_id FROM jobs WHERE id = $1")
        .bind(v["id"].as_i64().unwrap())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tenant, Some(other_tenant));
}

#[tokio::test]
async fn a_sellers_event_stream_carries_only_their_own_jobs() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let (other, _) = other_seller(&db, &api).await;
    let mut resp = other
        .get(api.url("/v1/events?kind=noop"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Tenant A's job runs first; B's stream must carry B's job and nothing of A's.
    let a = api.enqueue(json!({"kind": "noop"}), json!({})).await;
    api.wait_state(a, "done", Duration::from_secs(30)).await;
    let (s, v) = api
        .post_as(&other, "/v1/jobs", &json!({"job": {"kind": "noop"}}))
        .await;
    assert_eq!(s, 202, "{v}");
    let b = v["id"].as_i64().unwrap();
    let events = read_events(&mut resp, Duration::from_secs(30), |ev| {
        ev.iter().any(|e| e["id"] == b && e["state"] == "done")
    })
    .await;
    assert!(events.iter().all(|e| e["id"] == b), "{events:?}");

    // An ops user's stream sees every tenant's jobs.
    let mut all = api
        .ops
        .get(api.url("/v1/events?kind=noop"))
        .send()
        .await
        .unwrap();
    let c = api.enqueue(json!({"kind": "noop"}), json!({})).await;
    let (_, v) = api
        .post_as(&other, "/v1/jobs", &json!({"job": {"kind": "noop"}}))
        .await;
    let d = v["id"].as_i64().unwrap();
    read_events(&mut all, Duration::from_secs(30), |ev| {
        [c, d]
            .iter()
            .all(|id| ev.iter().any(|e| e["id"] == *id && e["state"] == "done"))
    })
    .await;
}

/// Resolves `$ref`s and `allOf`s of an OpenAPI schema into its properties and required fields.
fn properties(
    spec: &Value,
    schema: &Value,
    props: &mut serde_json::Map<String, Value>,
    req: &mut Vec<String>,
) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return properties(spec, &spec["components"]["schemas"][name], props, req);
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        properties(spec, part, props, req);
    }
    if let Some(p) = schema["properties"].as_object() {
        props.extend(p.clone());
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        req.push(r.as_str().unwrap().to_string());
    }
}

/// A value the schema accepts (the first of an enum, else one of its type).
fn sample(spec: &Value, schema: &Value) -> Value {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return sample(spec, &spec["components"]["schemas"][name]);
    }
    if let Some(e) = schema["enum"].as_array() {
        return e[0].clone();
    }
    match schema["type"].as_str() {
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        _ => json!("x"),
    }
}

#[tokio::test]
async fn every_public_kind_refuses_another_tenants_ids_and_enqueues_nothing() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (other, _) = other_seller(&db, &api).await;
    // Tenant A's objects, named by tenant B's jobs.
    let (product, account) = product_and_account(&db, &api).await;

    // The kinds a client may enqueue, from the OpenAPI document's job union.
    let (_, spec) = api.get("/openapi.json").await;
    let job_schema = &spec["components"]["schemas"]["EnqueueRequest"]["properties"]["job"];
    let union_ref = job_schema["$ref"]
        .as_str()
        .or_else(|| job_schema["allOf"][0]["$ref"].as_str())
        .expect("the job union's $ref");
    let any_job =
        &spec["components"]["schemas"][union_ref.trim_start_matches("#/components/schemas/")];
    let mapping = any_job["discriminator"]["mapping"]
        .as_object()
        .expect("kind mapping");
    assert!(
        !mapping.contains_key("dispatch_plugin_task"),
        "only the platform enqueues plugin dispatches"
    );
    let mut checked = 0;
    for (kind, schema) in mapping {
        let schema = json!({"$ref": schema});
        let (mut props, mut required) = (serde_json::Map::new(), vec![]);
        properties(&spec, &schema, &mut props, &mut required);
        let mut args = serde_json::Map::new();
        for r in required.iter().filter(|r| *r != "kind") {
            args.insert(r.clone(), sample(&spec, &props[r]));
        }
        for field in props.keys().filter(|f| f.ends_with("_id")) {
            let foreign = match field.as_str() {
                "product_id" => product,
                "account_id" => account,
                f => panic!("{kind}.{f}: add a fixture for this id's object to this test"),
            };
            let mut job = args.clone();
            job.insert("kind".into(), json!(kind));
            job.insert(field.clone(), json!(foreign));
            let before = db.count("true").await;
            for (path, body) in [
                ("/v1/jobs", json!({"job": job})),
                ("/v1/jobs/batch", json!({"jobs": [{"job": job}]})),
            ] {
                let (s, v) = api.post_as(&other, path, &body).await;
                assert_eq!(s, 404, "{kind}.{field} = A's object via {path}: {v}");
            }
            assert_eq!(
                db.count("true").await,
                before,
                "{kind}.{field}: a job was enqueued"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "checked only {checked} id fields");

    // The plugin task's follower is the platform's own: a client cannot name a task at all.
    let (s, v) = api
        .post_as(
            &other,
            "/v1/jobs",
            &json!({"job": {"kind": "dispatch_plugin_task", "plugin_task_id": 1}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("not a kind that can be enqueued"),
        "{v}"
    );
}

/// The second wall: under row-level security a query without any tenant filter, run as the
/// seller role with tenant B set, sees only B's rows of every tenant-owned table.
#[tokio::test]
async fn a_query_that_forgets_its_tenant_filter_sees_only_its_tenant_under_rls() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (other, b) = other_seller(&db, &api).await;
    let a = api.seller_login.tenant_id;
    let (product_a, account_a) = product_and_account(&db, &api).await;
    let (s, _) = api
        .post_as(
            &other,
            "/v1/products",
            &json!({"title": "Hat", "condition": "good", "price": "5.00"}),
        )
        .await;
    assert_eq!(s, 201);
    api.enqueue(json!({"kind": "noop"}), json!({"delay_ms": 600000}))
        .await;
    // Rows scoped through their account get their tenant on insert (a trigger).
    let order: i64 = sqlx::query_scalar(
        "INSERT INTO orders (account_id, marketplace, remote_order_id, status, raw)
         VALUES ($1, 'etsy', 'r-1', 'paid', '{}') RETURNING id",
    )
    .bind(account_a)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO order_lines (order_id, line_id, product_id, quantity) VALUES ($1, 'l1', $2, 1)")
        .bind(order)
        .bind(product_a)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO marketplace_errors (marketplace, account_id, kind, class, message)
         VALUES ('etsy', $1, 'publish_listing', 'rejected', 'x')",
    )
    .bind(account_a)
    .execute(&db.pool)
    .await
    .unwrap();

    let tables = [
        "products",
        "marketplace_accounts",
        "jobs",
        "orders",
        "order_lines",
        "marketplace_errors",
        "listings",
        "plugin_tasks",
    ];
    let count_as = |tenant: Option<i64>, table: &'static str| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            if let Some(t) = tenant {
                sqlx::query("SET LOCAL ROLE stoflow_seller")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("SELECT set_config('stoflow.tenant_id', $1, true)")
                    .bind(t.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            // No tenant filter at all: the query a careless route would run.
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            let mine: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE tenant_id = $1"
            )))
            .bind(tenant.unwrap_or(a))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            (n, mine)
        }
    };
    for table in tables {
        let (seen_by_b, b_own) = count_as(Some(b), table).await;
        assert_eq!(
            seen_by_b, b_own,
            "{table}: tenant B sees other tenants' rows"
        );
        let (seen_by_a, _) = count_as(Some(a), table).await;
        let (all, _) = count_as(None, table).await;
        if [
            "products",
            "marketplace_accounts",
            "jobs",
            "orders",
            "order_lines",
            "marketplace_errors",
        ]
        .contains(&table)
        {
            assert!(seen_by_a >= 1, "{table}: A's rows are A's");
            assert!(all > seen_by_b, "{table}: the owner sees every tenant");
        }
    }
    // Writing: B updates only its own rows and cannot write a row for A.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE stoflow_seller")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('stoflow.tenant_id', $1, true)")
        .bind(b.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let touched = sqlx::query("UPDATE products SET title = 'stolen'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(touched, 1, "only B's own product is updated");
    let insert = sqlx::query(
        "INSERT INTO products (tenant_id, sku, title, condition, price_cents, currency) VALUES ($1, 'X-1', 'x', 'good', 100, 'EUR')",
    )
    .bind(a)
    .execute(&mut *tx)
    .await;
    let code = insert
        .expect_err("B inserted a row for A")
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.to_string());
    assert_eq!(
        code.as_deref(),
        Some("42501"),
        "refused by the row-level policy"
    );
}

/// The API really runs a seller's queries as the seller role: take a privilege from that role
/// and a seller's request fails while an ops user's (the owner's path) still works.
#[tokio::test]
async fn the_api_runs_a_sellers_queries_as_the_seller_role() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    product_and_account(&db, &api).await;
    assert_eq!(api.get("/v1/products").await.0, 200);
    sqlx::query("REVOKE SELECT ON products FROM stoflow_seller")
        .execute(&db.pool)
        .await
        .unwrap();
    let (s, v) = api.get("/v1/products").await;
    assert_eq!(
        s, 500,
        "a seller read products without the seller role's privilege: {v}"
    );
    let (s, _) = api.get_as(&api.ops, "/v1/jobs").await;
    assert_eq!(s, 200, "ops requests run as the owner");
    sqlx::query("GRANT SELECT ON products TO stoflow_seller")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(api.get("/v1/products").await.0, 200);
}
