//! Stock given back and quantities kept true, end to end (API → Postgres → worker processes →
//! the eBay and Etsy simulators): an order cancelled before shipment gives its stock back once
//! and re-lists where its sale had withdrawn the product (not where the seller withdrew it), and
//! a sale with units left updates the other listings' quantity (eBay's offer included).

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
    let sku = p.listing(product, "ebay").await["sku"]
        .as_str()
        .unwrap()
        .to_string();
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

/// The eBay offer the simulator holds for `sku`.
async fn ebay_offer(p: &Platform, sku: &str) -> Value {
    let state = p.sim_get("ebay", "/_admin/state").await;
    state["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offer"].clone())
        .find(|o| o["sku"] == sku)
        .unwrap_or(Value::Null)
}

/// The Etsy listing the simulator holds for the product.
async fn etsy_listing(p: &Platform, product: i64) -> Value {
    let id = p.listing(product, "etsy").await["remote_listing_id"].clone();
    let state = p.sim_get("etsy", "/_admin/state").await;
    state["listings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| json!(l["listing_id"].as_u64().unwrap().to_string()) == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn ebay_order(p: &Platform, sku: &str) -> String {
    let o = p
        .sim_admin(
            "ebay",
            "/_admin/orders",
            json!({"line_items": [{"sku": sku, "quantity": 1}]}),
        )
        .await;
    o["orderId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_ebay_order_cancelled_before_shipment_gives_the_stock_back_and_relists_on_etsy() {
    let p = Platform::start(1, &[]).await;
    let ebay = p.connect("ebay").await;
    p.connect("etsy").await;
    // Sold out by the sale: its Etsy listing is withdrawn by it.
    let (sold, sold_sku) = published(&p, 1).await;
    // Withdrawn from Etsy by the seller before its sale: the cancellation must not re-list it.
    let (by_hand, by_hand_sku) = published(&p, 1).await;
    for job in p.product_action(by_hand, "withdraw", &["etsy"]).await {
        p.api.wait_state(job, "done", T).await;
    }
    let order = ebay_order(&p, &sold_sku).await;
    let other = ebay_order(&p, &by_hand_sku).await;
    run_job(&p, json!({"kind": "sync_orders", "account_id": ebay})).await;
    eventually(T, "Etsy listing withdrawn by the sale", || async {
        p.listing(sold, "etsy").await["status"] == "withdrawn"
    })
    .await;
    assert_eq!(stock(&p, sold).await, (0, "sold".into()));
    assert_eq!(stock(&p, by_hand).await, (0, "sold".into()));

    for o in [&order, &other] {
        p.sim_admin(
            "ebay",
            &format!("/_admin/orders/{o}"),
            json!({"cancelState": "CANCELED"}),
        )
        .await;
    }
    let done = run_job(&p, json!({"kind": "sync_orders", "account_id": ebay})).await;
    assert_eq!(done["result"]["imported"]["lines_returned"], 2, "{done}");
    assert_eq!(stock(&p, sold).await, (1, "published".into()));
    assert_eq!(stock(&p, by_hand).await, (1, "published".into()));
    eventually(T, "Etsy listing re-listed", || async {
        p.listing(sold, "etsy").await["status"] == "published"
    })
    .await;
    let l = etsy_listing(&p, sold).await;
    assert_eq!(l["state"], "active", "{l}");
    assert_eq!(l["quantity"], 1, "{l}");
    // The eBay listing follows the stock back too.
    eventually(T, "eBay offer back to 1 unit", || async {
        let o = ebay_offer(&p, &sold_sku).await;
        o["availableQuantity"] == 1 && o["status"] == "PUBLISHED"
    })
    .await;

    // Seen again (and again), the cancelled orders change nothing.
    for _ in 0..2 {
        let again = run_job(&p, json!({"kind": "sync_orders", "account_id": ebay})).await;
        assert_eq!(again["result"]["imported"]["lines_returned"], 0, "{again}");
    }
    assert_eq!(stock(&p, sold).await, (1, "published".into()));
    assert_eq!(stock(&p, by_hand).await, (1, "published".into()));
    // The listing the seller withdrew stays withdrawn.
    let l = p.listing(by_hand, "etsy").await;
    assert_eq!(l["status"], "withdrawn", "{l}");
    assert_eq!(etsy_listing(&p, by_hand).await["state"], "inactive");
}

#[tokio::test]
async fn an_etsy_receipt_cancelled_before_shipment_gives_the_stock_back_and_relists_on_ebay() {
    let p = Platform::start(1, &[]).await;
    p.connect("ebay").await;
    let etsy = p.connect("etsy").await;
    let (product, sku) = published(&p, 1).await;
    let listing_id: u64 = p.listing(product, "etsy").await["remote_listing_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let receipt = p
        .sim_admin(
            "etsy",
            "/_admin/receipts",
            json!({"transactions": [{"listing_id": listing_id, "quantity": 1}]}),
        )
        .await;
    let poll = json!({"kind": "poll_etsy", "account_id": etsy, "what": "receipts"});
    run_job(&p, poll.clone()).await;
    eventually(T, "eBay listing withdrawn by the sale", || async {
        p.listing(product, "ebay").await["status"] == "withdrawn"
    })
    .await;
    assert_ne!(ebay_offer(&p, &sku).await["status"], "PUBLISHED");

    // A later sale of another product moves the poll's cursor past the first receipt...
    let (later, _) = published(&p, 5).await;
    let later_listing: u64 = p.listing(later, "etsy").await["remote_listing_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    p.sim_admin("etsy", "/_admin/clock", json!({"advance_secs": 60}))
        .await;
    p.sim_admin(
        "etsy",
        "/_admin/receipts",
        json!({"transactions": [{"listing_id": later_listing, "quantity": 1}]}),
    )
    .await;
    run_job(&p, poll.clone()).await;
    assert_eq!(stock(&p, later).await, (4, "published".into()));
    // ...and, as Etsy does, the cancellation leaves the receipt's last change as it was: only
    // reading cancelled receipts finds it.
    p.sim_admin(
        "etsy",
        &format!("/_admin/receipts/{}", receipt["receipt_id"]),
        json!({"status": "canceled", "touch": false}),
    )
    .await;
    let done = run_job(&p, poll.clone()).await;
    assert_eq!(done["result"]["imported"]["lines_returned"], 1, "{done}");
    assert_eq!(stock(&p, product).await, (1, "published".into()));
    eventually(T, "eBay offer published again", || async {
        p.listing(product, "ebay").await["status"] == "published"
            && ebay_offer(&p, &sku).await["status"] == "PUBLISHED"
    })
    .await;
    assert_eq!(ebay_offer(&p, &sku).await["availableQuantity"], 1);
    let again = run_job(&p, poll).await;
    assert_eq!(again["result"]["imported"]["lines_returned"], 0, "{again}");
    assert_eq!(stock(&p, product).await, (1, "published".into()));
}

#[tokio::test]
async fn a_sale_with_units_left_updates_the_ebay_offer_quantity() {
    let p = Platform::start(1, &[]).await;
    p.connect("ebay").await;
    let etsy = p.connect("etsy").await;
    let (product, sku) = published(&p, 3).await;
    assert_eq!(ebay_offer(&p, &sku).await["availableQuantity"], 3);
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
    run_job(
        &p,
        json!({"kind": "poll_etsy", "account_id": etsy, "what": "receipts"}),
    )
    .await;
    assert_eq!(stock(&p, product).await, (2, "published".into()));
    eventually(T, "eBay offer and item follow the stock", || async {
        let state = p.sim_get("ebay", "/_admin/state").await;
        let item = state["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["sku"] == sku)
            .map(|i| i["item"].clone())
            .unwrap_or(Value::Null);
        ebay_offer(&p, &sku).await["availableQuantity"] == 2
            && item["availability"]["shipToLocationAvailability"]["quantity"] == 2
    })
    .await;
    assert_eq!(ebay_offer(&p, &sku).await["status"], "PUBLISHED");
    assert_eq!(p.listing(product, "ebay").await["status"], "published");
}
