//! Orders from the marketplaces, end to end: orders placed in the eBay and Etsy simulators are
//! imported by `sync_orders` / `poll_etsy`, take stock once, and selling the last unit on one
//! marketplace withdraws the listing from the others. The scheduler enqueues each polling tick
//! once per account however many schedulers run.

use std::time::Duration;

use integration::{Platform, eventually};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

async fn published(p: &Platform, stock: i32) -> (i64, String) {
    let product = p
        .product(json!({"title": "Linen shirt", "stock_quantity": stock}))
        .await;
    for job in p.publish(product, &["ebay", "etsy"]).await {
        p.api.wait_state(job, "done", T).await;
    }
    let sku: String = sqlx::query_scalar("SELECT sku FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    (product, sku)
}

async fn stock(p: &Platform, product: i64) -> (i32, String) {
    sqlx::query_as("SELECT stock_quantity, status FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
}

async fn run_job(p: &Platform, job: Value) -> Value {
    let id = p.api.enqueue(job, json!({})).await;
    p.api.wait_state(id, "done", T).await
}

#[tokio::test]
async fn an_ebay_order_is_imported_once_and_takes_stock_once() {
    let p = Platform::start(1, &[]).await;
    let ebay = p.connect("ebay").await;
    p.connect("etsy").await;
    let (product, sku) = published(&p, 3).await;
    p.sim_admin(
        "ebay",
        "/_admin/orders",
        json!({"line_items": [{"sku": sku, "quantity": 1}]}),
    )
    .await;
    let done = run_job(&p, json!({"kind": "sync_orders", "account_id": ebay})).await;
    assert_eq!(done["result"]["imported"]["new_orders"], 1, "{done}");
    // Importing again finds the same order (the cursor keeps its last change) and changes nothing.
    let again = run_job(&p, json!({"kind": "sync_orders", "account_id": ebay})).await;
    assert_eq!(again["result"]["imported"]["new_orders"], 0, "{again}");
    assert_eq!(again["result"]["imported"]["lines_applied"], 0, "{again}");

    let (s, orders) = p.api.get("/v1/orders?marketplace=ebay").await;
    assert_eq!(s, 200);
    let orders = orders["orders"].as_array().unwrap().clone();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["lines"][0]["product_id"], json!(product));
    assert_eq!(stock(&p, product).await, (2, "published".into()));
    // Stock remains: the Etsy listing follows the new quantity.
    eventually(T, "Etsy quantity follows the stock", || async {
        let state = p.sim_get("etsy", "/_admin/state").await;
        state["listings"][0]["quantity"] == 2
    })
    .await;
}

#[tokio::test]
async fn selling_the_last_unit_on_etsy_withdraws_the_ebay_listing() {
    let p = Platform::start(2, &[]).await;
    p.connect("ebay").await;
    let etsy = p.connect("etsy").await;
    let (product, _) = published(&p, 1).await;
    let listing_id: u64 = p.listing(product, "etsy").await["remote_listing_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    p.sim_admin(
        "etsy",
        "/_admin/receipts",
        json!({"transactions": [{"listing_id": listing_id, "quantity": 1}]}),
    )
    .await;
    let done = run_job(
        &p,
        json!({"kind": "poll_etsy", "account_id": etsy, "what": "receipts"}),
    )
    .await;
    assert_eq!(
        done["result"]["imported"]["sold_out"],
        json!([product]),
        "{done}"
    );
    assert_eq!(stock(&p, product).await, (0, "sold".into()));

    // The follow-up withdraw job takes the eBay listing down.
    eventually(T, "eBay listing withdrawn", || async {
        p.listing(product, "ebay").await["status"] == "withdrawn"
    })
    .await;
    let l = p.listing(product, "ebay").await;
    assert!(
        l["withdraw_reason"]
            .as_str()
            .unwrap()
            .contains("sold out on etsy"),
        "{l}"
    );
    let state = p.sim_get("ebay", "/_admin/state").await;
    assert_ne!(
        state["offers"][0]["offer"]["status"], "PUBLISHED",
        "{state}"
    );
    // The Etsy listing itself is sold out on Etsy, not withdrawn by us.
    assert_eq!(p.listing(product, "etsy").await["status"], "published");
    // Polling listings records what Etsy says of it.
    run_job(
        &p,
        json!({"kind": "poll_etsy", "account_id": etsy, "what": "listings"}),
    )
    .await;
    assert_eq!(p.listing(product, "etsy").await["remote_state"], "sold_out");
}

#[tokio::test]
async fn selling_the_last_unit_on_ebay_withdraws_the_etsy_listing() {
    let p = Platform::start(1, &[]).await;
    let ebay = p.connect("ebay").await;
    p.connect("etsy").await;
    let (product, sku) = published(&p, 1).await;
    p.sim_admin(
        "ebay",
        "/_admin/orders",
        json!({"line_items": [{"sku": sku, "quantity": 1}]}),
    )
    .await;
    run_job(&p, json!({"kind": "sync_orders", "account_id": ebay})).await;
    eventually(T, "Etsy listing withdrawn", || async {
        p.listing(product, "etsy").await["status"] == "withdrawn"
    })
    .await;
    let state = p.sim_get("etsy", "/_admin/state").await;
    assert_eq!(state["listings"][0]["state"], "inactive", "{state}");
}

#[tokio::test]
async fn two_schedulers_enqueue_each_polling_tick_once_per_account() {
    let every_second = "* * * * * *";
    let p = Platform::start(
        0,
        &[
            ("STOFLOW_SCHEDULER__ETSY_RECEIPTS_CRON", every_second),
            ("STOFLOW_SCHEDULER__EBAY_ORDERS_CRON", every_second),
        ],
    )
    .await;
    let ebay = p.connect("ebay").await;
    let etsy = p.connect("etsy").await;
    let _a = p.spawn_worker_bin(&["scheduler"]);
    let _b = p.spawn_worker_bin(&["scheduler"]);
    eventually(T, "several ticks enqueued", || async {
        p.db.count("kind = 'poll_etsy'").await >= 4
    })
    .await;
    // Per account, one job per tick: never more jobs than seconds spanned by the ticks, though
    // two schedulers fire every second.
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT kind, (args->>'account_id')::bigint, count(*),
                min(regexp_replace(idempotency_key, '^.*:', '')::bigint),
                max(regexp_replace(idempotency_key, '^.*:', '')::bigint)
           FROM jobs WHERE kind IN ('poll_etsy', 'sync_orders')
          GROUP BY kind, args->>'account_id' ORDER BY kind",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (kind, account, n, first, last) in &rows {
        let expected = if kind == "poll_etsy" { etsy } else { ebay };
        assert_eq!(*account, expected, "{kind}");
        assert!(
            *n <= last - first + 1,
            "{kind}: {n} jobs over {} ticks",
            last - first + 1
        );
    }
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM jobs WHERE kind = 'poll_etsy' ORDER BY id LIMIT 1",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert!(
        keys[0].starts_with(&format!("cron:poll_etsy:{etsy}:receipts:")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn selling_the_last_unit_on_ebay_deletes_the_vinted_item_through_the_plugin() {
    let p = Platform::start(1, &[]).await;
    let ebay = p.connect("ebay").await;
    let v = p.connect_vinted("4242", "seller").await;
    let mut cfg = plugin::Config::for_simulator(
        &p.api.base,
        v["plugin_token"].as_str().unwrap(),
        &p.sims.vinted_url,
    );
    cfg.poll = Duration::from_millis(50);
    let runner = plugin::Runner::new(cfg);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let extension = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });

    let product = p
        .product(
            json!({"title": "Denim jacket", "description": "Classic denim, worn twice.",
                         "size": "M", "color": "blue", "stock_quantity": 1}),
        )
        .await;
    let sku: String = sqlx::query_scalar("SELECT sku FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    for job in p.publish(product, &["ebay", "vinted"]).await {
        p.api.wait_state(job, "done", T).await;
    }
    let items = |state: Value| state["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items(p.sim_get("vinted", "/_admin/state").await).len(), 1);

    p.sim_admin(
        "ebay",
        "/_admin/orders",
        json!({"line_items": [{"sku": sku, "quantity": 1}]}),
    )
    .await;
    run_job(&p, json!({"kind": "sync_orders", "account_id": ebay})).await;
    eventually(T, "Vinted listing withdrawn by the extension", || async {
        p.listing(product, "vinted").await["status"] == "withdrawn"
    })
    .await;
    assert!(
        items(p.sim_get("vinted", "/_admin/state").await).is_empty(),
        "the item is gone from Vinted"
    );
    let _ = stop.send(());
    extension.await.unwrap().unwrap();
}

#[tokio::test]
async fn each_etsy_poll_tick_spends_its_budget_where_a_sale_is_likeliest_and_no_shop_starves() {
    // A receipts tick every second, and an app budget that pays for two polls a tick:
    // 432,000 calls a day × 0.5 for polling × 4/5 for receipts / 86,400 ticks = 2.
    let p = Platform::start(
        0,
        &[
            ("STOFLOW_SCHEDULER__ETSY_RECEIPTS_CRON", "* * * * * *"),
            ("STOFLOW_LIMITS__ETSY__PER_DAY", "432000"),
        ],
    )
    .await;
    let db = &p.db.pool;
    // Shops: selling (live listing, a sale this week), live, pushed (live, Etsy pushes its sales),
    // idle (nothing live), new (nothing live, never polled). All but `new` polled 10 min ago.
    let [selling, live, pushed, idle, new] = [901, 902, 903, 904, 905];
    for id in [selling, live, pushed, idle, new] {
        p.api.seed_account(&p.db, id).await;
    }
    for id in [selling, live, pushed] {
        // One listing per (product, marketplace): a product each.
        let product = p.product(json!({"title": "Linen shirt"})).await;
        sqlx::query(
            "INSERT INTO listings (product_id, marketplace, account_id, sku, status)
             VALUES ($1, 'etsy', $2, 'SKU-' || $2, 'published')",
        )
        .bind(product)
        .bind(id)
        .execute(db)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO orders (account_id, marketplace, remote_order_id, status, raw)
         VALUES ($1, 'etsy', 'r-1', 'paid', '{}')",
    )
    .bind(selling)
    .execute(db)
    .await
    .unwrap();
    let ago = |minutes: i64, ids: Vec<i64>| async move {
        sqlx::query(
            "UPDATE marketplace_accounts SET last_poll_at = now() - make_interval(mins => $1::int)
              WHERE id = ANY($2)",
        )
        .bind(minutes)
        .bind(ids)
        .execute(db)
        .await
        .unwrap();
    };
    ago(10, vec![selling, live, pushed, idle]).await;
    sqlx::query("UPDATE marketplace_accounts SET last_push_at = now() WHERE id = $1")
        .bind(pushed)
        .execute(db)
        .await
        .unwrap();

    // The accounts of the newest tick (one INSERT each, so complete; no worker runs: the jobs stay
    // pending).
    let newest_tick = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (args->>'account_id')::bigint FROM jobs
              WHERE kind = 'poll_etsy' AND idempotency_key LIKE '%:' || (
                    SELECT max(regexp_replace(idempotency_key, '^.*:', '')::bigint)
                      FROM jobs WHERE kind = 'poll_etsy')
              ORDER BY 1",
        )
        .fetch_all(db)
        .await
        .unwrap()
    };
    let since = |n: i64| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE kind = 'poll_etsy'")
            .fetch_one(db)
            .await
            .unwrap()
            >= n
    };
    let _scheduler = p.spawn_worker_bin(&["scheduler"]);
    eventually(T, "three ticks", || since(6)).await;
    // Never polled first, then the shop that sells (10 min × 4 beats 10 min × 2).
    assert_eq!(newest_tick().await, vec![selling, new]);
    // Once both are polled, the budget goes to the next: live (×2), then pushed (×1); the idle
    // shop is not due (polled 10 min ago, idle shops hourly).
    ago(0, vec![selling, new]).await;
    let n = p.db.count("kind = 'poll_etsy'").await;
    eventually(T, "two more ticks", || since(n + 4)).await;
    assert_eq!(newest_tick().await, vec![live, pushed]);
    // A shop passed over waits longer and outweighs the others: the idle shop, due after an
    // hour (2 h × ¼ = 30 min), comes before the live shop polled 10 min ago (× 2 = 20 min).
    ago(120, vec![idle]).await;
    ago(0, vec![pushed]).await;
    let n = p.db.count("kind = 'poll_etsy'").await;
    eventually(T, "two more ticks", || since(n + 4)).await;
    assert_eq!(newest_tick().await, vec![live, idle]);
}
