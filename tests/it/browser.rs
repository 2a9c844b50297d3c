//! The dashboard in real headless Chromium: `browser-tests/run.mjs` (playwright-core driving
//! Debian's chromium) against a real API and worker on a fresh database. Screenshots of every
//! page land in target/screenshots/. `scripts/ensure-deps` installs chromium and the npm package.

use std::process::Command;

use integration::{Api, TestDb, worker};

#[tokio::test]
async fn dashboard_pages_work_in_headless_chromium() {
    let root = dev::workspace_root();
    let dir = root.join("browser-tests");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} not found: run scripts/ensure-deps (as root it installs Debian's chromium)"
    );
    if !dir.join("node_modules/playwright-core").exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm (Node.js) is needed for the browser tests");
        assert!(st.success(), "npm ci in browser-tests failed");
    }
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    seed_marketplace_state(&db, &api).await;
    let base = api.base.clone();
    let shots = root.join("target/screenshots");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("run.mjs")
            .current_dir(&dir)
            .env("STOFLOW_API", base)
            .env("STOFLOW_OPS_EMAIL", integration::OPS_EMAIL)
            .env("STOFLOW_SELLER_EMAIL", integration::SELLER_EMAIL)
            .env("STOFLOW_OPS_PASSWORD", integration::TEST_PASSWORD)
            .env("STOFLOW_SELLER_PASSWORD", integration::TEST_PASSWORD)
            .env("SCREENSHOT_DIR", shots)
            .env("CHROMIUM", chromium)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "overview",
        "workers",
        "jobs",
        "job-detail-dead",
        "marketplaces",
        "audit",
    ] {
        assert!(
            root.join(format!("target/screenshots/{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
}

/// What the marketplaces page shows, as the workers and the plugin routes would leave it: an Etsy
/// key's budget half used (at a pace float arithmetic makes 9.200000000000001), Etsy's circuit
/// open after 5xx, a 429 and a database error on record, a Vinted task waiting for the seller's
/// offline extension, a listing refused with a long message, and an eBay sale withdrawn
/// elsewhere 2.5 s later.
async fn seed_marketplace_state(db: &TestDb, api: &Api) {
    let (s, p) = api
        .post(
            "/v1/products",
            &serde_json::json!({"title": "Linen shirt", "condition": "good", "price": "12.00"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO rate_limits (key, marketplace, per_second, per_window, window_ms)
              VALUES ('etsy:app:browser-key', 'etsy', 10 * 0.92::float8, 10000, 86400000);
         INSERT INTO rate_limit_buckets (key, bucket, n)
              VALUES ('etsy:app:browser-key', (extract(epoch FROM now()) * 1000)::bigint / 3600000, 5000);
         INSERT INTO circuit_breakers (marketplace, state, failures, opened_at, next_probe_at, open_ms, last_error)
              VALUES ('etsy', 'open', 5, now(), now() + interval '30 seconds', 30000, 'HTTP 503 from Etsy');
         INSERT INTO marketplace_errors (marketplace, kind, class, message)
              VALUES ('etsy', 'publish_listing', 'rate_limited', 'etsy 429 Too Many Requests: retry after 2 s');
         WITH a AS (INSERT INTO marketplace_accounts (tenant_id, marketplace, external_user_id)
                    VALUES ({tenant}, 'vinted', 'browser-seller') RETURNING id),
              l AS (INSERT INTO listings (product_id, marketplace, account_id, sku, tenant_id)
                    SELECT {product}, 'vinted', a.id, p.sku, p.tenant_id FROM a, products p WHERE p.id = {product}
                    RETURNING id, account_id)
         INSERT INTO plugin_tasks (account_id, product_id, listing_id, action, params, max_attempts, pickup_deadline)
         SELECT l.account_id, {product}, l.id, 'create_listing', '{{}}', 3, now() + interval '1 hour' FROM l;
         UPDATE listings SET last_error = jsonb_build_object('at', now(), 'class', 'rejected',
                'message', 'Vinted refused the item: photo https://images.example/' || repeat('x', 160) || '.jpg unreadable')
          WHERE product_id = {product};
         INSERT INTO marketplace_errors (marketplace, kind, class, message)
              VALUES ('vinted', 'sync_orders', 'database',
                      'error occurred while decoding column 1: unexpected null in relation plugin_tasks');
         -- A sale on eBay 2.5 s before its withdrawal elsewhere finished.
         WITH j AS (INSERT INTO jobs (kind, state, args, max_attempts, finished_at)
                    VALUES ('withdraw_listing', 'done', '{{}}', 3, now()) RETURNING id, finished_at),
              o AS (INSERT INTO orders (account_id, marketplace, remote_order_id, status, placed_at, raw)
                    SELECT a.id, 'ebay', 'browser-order', 'NOT_STARTED', j.finished_at - interval '2.5 seconds', '{{}}'
                      FROM marketplace_accounts a, j WHERE a.external_user_id = 'browser-seller' RETURNING id)
         INSERT INTO order_lines (order_id, line_id, product_id, quantity, sold_out_from, withdraw_jobs)
         SELECT o.id, '1', {product}, 1, 'published', ARRAY[j.id] FROM o, j;",
        tenant = api.seller_login.tenant_id,
        product = p["id"].as_i64().unwrap(),
    )))
    .execute(&db.pool)
    .await
    .unwrap();
}
