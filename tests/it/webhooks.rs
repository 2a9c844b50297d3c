//! Sales pushed by the marketplaces, end to end: the simulators push signed notifications (Etsy
//! `order.paid` webhooks, eBay Notification API messages) to the API under test, which checks
//! the signature, stores them in the inbox and has a `handle_webhook` job import the order
//! (worker processes → simulators). Polling is set to once a day and no scheduler runs, so
//! whatever is seen here was seen by push.

use std::time::{Duration, Instant};

use integration::{Api, Platform, eventually, eventually_value};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;

const T: Duration = Duration::from_secs(30);
/// A pushed sale must have withdrawn the other listing within this.
const PUSH_WINDOW: Duration = Duration::from_secs(5);

const DAILY: &str = "0 0 3 * * *";

async fn platform() -> Platform {
    Platform::start(
        2,
        &[
            ("STOFLOW_SCHEDULER__ETSY_RECEIPTS_CRON", DAILY),
            ("STOFLOW_SCHEDULER__EBAY_ORDERS_CRON", DAILY),
        ],
    )
    .await
}

/// A product with `stock` units published to eBay and Etsy (both connected); its SKU.
async fn published(p: &Platform, stock: i32) -> (i64, String) {
    p.connect("ebay").await;
    p.connect("etsy").await;
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

/// Points a simulator's pushes at the API under test (plus any switches).
async fn destination(p: &Platform, marketplace: &str, extra: Value) -> Value {
    let mut body = json!({ "url": p.api.url(&format!("/webhooks/{marketplace}")) });
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    p.sim_request(Method::PUT, marketplace, "/_admin/webhooks", body)
        .await
}

async fn inbox_rows(p: &Platform) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_inbox")
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
}

async fn orders(p: &Platform, marketplace: &str) -> Vec<Value> {
    let (s, v) = p
        .api
        .get(&format!("/v1/orders?marketplace={marketplace}"))
        .await;
    assert_eq!(s, 200, "{v}");
    v["orders"].as_array().unwrap().clone()
}

async fn stock(p: &Platform, product: i64) -> i32 {
    sqlx::query_scalar("SELECT stock_quantity FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
}

/// An Etsy sale of the product's listing (the buyer checks out on the simulator).
async fn etsy_sale(p: &Platform, product: i64) -> Value {
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
    .await
}

async fn polling_jobs(p: &Platform) -> i64 {
    p.db.count("kind IN ('poll_etsy', 'sync_orders')").await
}

#[tokio::test]
async fn an_etsy_sale_pushed_by_webhook_withdraws_the_ebay_listing_within_seconds() {
    let p = platform().await;
    let (product, _) = published(&p, 1).await;
    destination(&p, "etsy", json!({})).await;

    let sold = Instant::now();
    let receipt = etsy_sale(&p, product).await;
    eventually(T, "eBay listing withdrawn", || async {
        p.listing(product, "ebay").await["status"] == "withdrawn"
    })
    .await;
    let window = sold.elapsed();
    assert!(window <= PUSH_WINDOW, "double-sell window {window:?}");

    let orders = orders(&p, "etsy").await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(
        orders[0]["remote_order_id"],
        json!(receipt["receipt_id"].as_u64().unwrap().to_string())
    );
    assert_eq!(stock(&p, product).await, 0);
    let (handled, topic, accounts): (bool, String, Vec<i64>) =
        sqlx::query_as("SELECT handled_at IS NOT NULL, topic, account_ids FROM webhook_inbox")
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    let etsy: i64 =
        sqlx::query_scalar("SELECT id FROM marketplace_accounts WHERE marketplace = 'etsy'")
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    // The push is recorded against the shop's account (ops: its last push).
    assert_eq!(
        (handled, topic.as_str(), accounts),
        (true, "order.paid", vec![etsy])
    );
    let pushed: bool = sqlx::query_scalar(
        "SELECT last_push_at IS NOT NULL FROM marketplace_accounts WHERE id = $1",
    )
    .bind(etsy)
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert!(
        pushed,
        "the account's last push is recorded for the dashboard"
    );
    // Seen by push: no polling job ran.
    assert_eq!(polling_jobs(&p).await, 0);
    // The handler fetched that one receipt (getShopReceipt), not the receipts list.
    let calls = p.sim_requests("etsy").await;
    assert!(
        calls.iter().any(|(m, path, s)| m == "GET"
            && path.ends_with(&format!("/receipts/{}", receipt["receipt_id"]))
            && *s == 200),
        "{calls:?}"
    );
}

#[tokio::test]
async fn an_ebay_sale_pushed_by_notification_withdraws_the_etsy_listing_within_seconds() {
    let p = platform().await;
    let (product, sku) = published(&p, 1).await;
    // Registering the destination runs eBay's challenge_code handshake against the API.
    let token = "stoflow-dev-verification-token-0123456789abcdef";
    destination(&p, "ebay", json!({ "verification_token": token })).await;

    let sold = Instant::now();
    let order = p
        .sim_admin(
            "ebay",
            "/_admin/orders",
            json!({"line_items": [{"sku": sku, "quantity": 1}]}),
        )
        .await;
    eventually(T, "Etsy listing withdrawn", || async {
        p.listing(product, "etsy").await["status"] == "withdrawn"
    })
    .await;
    let window = sold.elapsed();
    assert!(window <= PUSH_WINDOW, "double-sell window {window:?}");

    let orders = orders(&p, "ebay").await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["remote_order_id"], order["orderId"]);
    assert_eq!(stock(&p, product).await, 0);
    assert_eq!(polling_jobs(&p).await, 0);
    let topic: String = sqlx::query_scalar("SELECT topic FROM webhook_inbox")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(topic, "ORDER_CONFIRMATION");
    // The topic is one the simulator's Notification API lists.
    let topics = p.sim_get("ebay", "/commerce/notification/v1/topic").await;
    assert!(
        topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["topicId"] == json!(topic)),
        "{topics}"
    );
}

#[tokio::test]
async fn the_ebay_challenge_is_answered_and_a_wrong_token_fails_the_handshake() {
    let p = Platform::start(0, &[]).await;
    let endpoint = p.api.url("/webhooks/ebay");
    let token = "stoflow-dev-verification-token-0123456789abcdef";
    let (s, v) = p
        .api
        .get("/webhooks/ebay?challenge_code=a8628072-3d33-45ee")
        .await;
    assert_eq!(s, 200, "{v}");
    let want: String = sha2::Sha256::digest(format!("a8628072-3d33-45ee{token}{endpoint}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v, json!({ "challengeResponse": want }));

    let r = p
        .api
        .anon
        .get(p.api.url("/webhooks/ebay"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let (s, v) = Api::read(r).await;
    assert_eq!(s, 400);
    assert!(
        v["detail"].as_str().unwrap().contains("challenge_code"),
        "{v}"
    );

    // The simulator validates a destination the way eBay does: right token → accepted.
    destination(&p, "ebay", json!({ "verification_token": token })).await;
    let r = p
        .api
        .http
        .put(format!("{}/_admin/webhooks", p.sim_url("ebay")))
        .json(
            &json!({"url": endpoint, "verification_token": "another-token-0123456789-0123456789"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn a_forged_or_missing_signature_is_refused_and_nothing_is_stored() {
    let p = Platform::start(1, &[]).await;
    let body = json!({"event_type": "order.paid",
        "resource_url": "https://openapi.etsy.com/v3/application/shops/1/receipts/2", "shop_id": 1})
    .to_string();
    let now = chrono::Utc::now().timestamp().to_string();
    let etsy = |headers: Vec<(&'static str, String)>| {
        let mut r = p
            .api
            .anon
            .post(p.api.url("/webhooks/etsy"))
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    };
    let forged = vec![
        ("webhook-id", "msg_1".to_string()),
        ("webhook-timestamp", now.clone()),
        (
            "webhook-signature",
            "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=".to_string(),
        ),
    ];
    for (what, headers) in [("forged", forged), ("missing", vec![])] {
        let r = etsy(headers).send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
    }

    // eBay: a header naming the simulator's real key, with a signature that is not over this body.
    let ebay_body = json!({"metadata": {"topic": "MARKETPLACE_ACCOUNT_DELETION"},
        "notification": {"notificationId": "n-1", "data": {"userId": "x", "username": "y"}}})
    .to_string();
    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    // A valid DER ECDSA signature shape (r = s = 1) that cannot verify.
    let bogus_der = [0x30u8, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
    let header = json!({"alg": "ecdsa", "kid": sim::ebay::NOTIFICATION_KID,
                        "signature": b64(&bogus_der), "digest": "SHA1"});
    let unknown_kid = json!({"alg": "ecdsa", "kid": "00000000-0000-0000-0000-000000000000",
                             "signature": b64(&bogus_der), "digest": "SHA1"});
    for sig in [
        Some(b64(header.to_string().as_bytes())),
        Some(b64(unknown_kid.to_string().as_bytes())),
        Some("not base64 json".to_string()),
        None,
    ] {
        let mut r = p
            .api
            .anon
            .post(p.api.url("/webhooks/ebay"))
            .header("content-type", "application/json")
            .body(ebay_body.clone());
        if let Some(s) = &sig {
            r = r.header("x-ebay-signature", s);
        }
        let (s, v) = Api::read(r.send().await.unwrap()).await;
        assert_eq!(s, 401, "{sig:?}: {v}");
    }
    assert_eq!(inbox_rows(&p).await, 0);
    assert_eq!(p.db.count("kind = 'handle_webhook'").await, 0);
}

#[tokio::test]
async fn a_replayed_notification_makes_one_order_and_one_inbox_row() {
    let p = platform().await;
    let (product, sku) = published(&p, 3).await;
    destination(&p, "etsy", json!({ "replay": true })).await;
    destination(&p, "ebay", json!({ "replay": true })).await;
    etsy_sale(&p, product).await;
    p.sim_admin(
        "ebay",
        "/_admin/orders",
        json!({"line_items": [{"sku": sku, "quantity": 1}]}),
    )
    .await;
    for m in ["etsy", "ebay"] {
        eventually(T, "both copies delivered", || async {
            let v = p.sim_get(m, "/_admin/webhooks").await;
            v["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["delivered"] == true)
                .count()
                == 2
        })
        .await;
    }
    eventually(T, "both notifications handled", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_inbox WHERE handled_at IS NOT NULL",
        )
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
            == 2
    })
    .await;
    assert_eq!(inbox_rows(&p).await, 2, "one row per notification");
    assert_eq!(orders(&p, "etsy").await.len(), 1);
    assert_eq!(orders(&p, "ebay").await.len(), 1);
    assert_eq!(stock(&p, product).await, 1, "each sale took stock once");
    assert_eq!(p.db.count("kind = 'handle_webhook'").await, 2);
}

#[tokio::test]
async fn out_of_order_deliveries_import_every_sale() {
    let p = platform().await;
    let (product, sku) = published(&p, 3).await;
    destination(&p, "ebay", json!({ "hold": true })).await;
    for _ in 0..2 {
        p.sim_admin(
            "ebay",
            "/_admin/orders",
            json!({"line_items": [{"sku": sku, "quantity": 1}]}),
        )
        .await;
    }
    // The newer notification arrives first.
    let flushed = p
        .sim_admin("ebay", "/_admin/webhooks/flush", json!({"reverse": true}))
        .await;
    assert_eq!(flushed["sent"], 2);
    eventually(T, "both orders imported", || async {
        orders(&p, "ebay").await.len() == 2
    })
    .await;
    eventually(T, "stock taken once per sale", || async {
        stock(&p, product).await == 1
    })
    .await;
}

#[tokio::test]
async fn an_old_timestamp_is_refused_and_the_marketplace_retry_gets_through() {
    let p = platform().await;
    let (product, _) = published(&p, 1).await;
    // The simulator signs as if it were 10 minutes ago (a captured, replayed message).
    destination(&p, "etsy", json!({ "timestamp_offset_s": -600 })).await;
    etsy_sale(&p, product).await;
    eventually(T, "the API refused the stale delivery", || async {
        let v = p.sim_get("etsy", "/_admin/webhooks").await;
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["status"] == "401")
    })
    .await;
    assert_eq!(inbox_rows(&p).await, 0);
    assert_eq!(p.listing(product, "ebay").await["status"], "published");
    // Its clock right again, the simulator's next retry of the undelivered push is accepted.
    destination(&p, "etsy", json!({ "timestamp_offset_s": 0 })).await;
    eventually(T, "eBay listing withdrawn", || async {
        p.listing(product, "ebay").await["status"] == "withdrawn"
    })
    .await;
    let delivered = eventually_value(T, "the delivery", || async {
        let v = p.sim_get("etsy", "/_admin/webhooks").await;
        let log = v["deliveries"].as_array().unwrap().clone();
        log.into_iter().find(|d| d["delivered"] == true)
    })
    .await;
    assert!(delivered["attempts"].as_u64().unwrap() > 1, "{delivered}");
    assert_eq!(inbox_rows(&p).await, 1);
}

#[tokio::test]
async fn an_ebay_account_deletion_erases_tokens_and_is_audited() {
    let p = Platform::start(1, &[]).await;
    let account = p.connect("ebay").await;
    let (user_id,): (Option<String>,) =
        sqlx::query_as("SELECT setup->>'ebay_user_id' FROM marketplace_accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert!(user_id.is_some(), "the eBay user id is recorded at connect");
    destination(&p, "ebay", json!({})).await;
    p.sim_admin("ebay", "/_admin/account_deletion", json!({}))
        .await;

    eventually(T, "account disconnected", || async {
        let (s, v) = p.api.get("/v1/connections").await;
        s == 200 && v["connections"][0]["status"] == "disconnected"
    })
    .await;
    let row: (bool, bool, Option<String>, String) = sqlx::query_as(
        "SELECT access_token IS NULL, refresh_token IS NULL, setup->>'ebay_username', status_reason
           FROM marketplace_accounts WHERE id = $1",
    )
    .bind(account)
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert_eq!((row.0, row.1, row.2), (true, true, None));
    assert!(row.3.contains("MARKETPLACE_ACCOUNT_DELETION"), "{}", row.3);
    let audit: (String, i64, String) = eventually_value(T, "an audit row", || async {
        sqlx::query_as(
            "SELECT actor, count, target FROM audit_log WHERE action = 'marketplace_account_deletion'",
        )
        .fetch_optional(&p.db.pool)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(
        (audit.0.as_str(), audit.1, audit.2),
        ("ebay", 1, format!("accounts [{account}]"))
    );
    // The notification itself named the user: its stored body is erased too.
    let (body, accounts): (Option<String>, Vec<i64>) =
        sqlx::query_as("SELECT body, account_ids FROM webhook_inbox")
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!((body, accounts), (None, vec![account]));
}

#[tokio::test]
async fn a_dropped_push_is_caught_by_polling() {
    let p = platform().await;
    let (product, _) = published(&p, 1).await;
    destination(&p, "etsy", json!({ "drop_next": 1 })).await;
    etsy_sale(&p, product).await;
    let log = eventually_value(T, "the drop recorded", || async {
        let v = p.sim_get("etsy", "/_admin/webhooks").await;
        v["deliveries"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(log["dropped"], true, "{log}");
    assert_eq!(inbox_rows(&p).await, 0);
    assert_eq!(p.listing(product, "ebay").await["status"], "published");
    // The safety net: the next receipts poll imports the sale the push lost.
    let account: i64 =
        sqlx::query_scalar("SELECT id FROM marketplace_accounts WHERE marketplace = 'etsy'")
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    let job = p
        .api
        .enqueue(
            json!({"kind": "poll_etsy", "account_id": account, "what": "receipts"}),
            json!({}),
        )
        .await;
    p.api.wait_state(job, "done", T).await;
    eventually(T, "eBay listing withdrawn", || async {
        p.listing(product, "ebay").await["status"] == "withdrawn"
    })
    .await;
    assert_eq!(orders(&p, "etsy").await.len(), 1);
}
