//! Stock and prices true everywhere, end to end (API → Postgres → worker processes → the eBay
//! and Etsy simulators): deleting, archiving or selling a product by hand withdraws its
//! listings; editing it updates them (eBay's offer included) without another publish; a price
//! in another currency than the shop's is refused or converted, as the seller chose.

use std::time::Duration;

use integration::{Api, Platform, eventually_value};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// A product published to eBay and Etsy, both listings live.
async fn published(p: &Platform, body: Value) -> i64 {
    let product = p.product(body).await;
    for job in p.publish(product, &["ebay", "etsy"]).await {
        p.api.wait_state(job, "done", T).await;
    }
    product
}

async fn patch(p: &Platform, path: &str, body: Value) -> (u16, Value) {
    let r = p
        .api
        .http
        .patch(p.api.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    Api::read(r).await
}

/// The eBay offer the simulator holds for the product's SKU (with its listing state).
async fn ebay_offer(p: &Platform, product: i64) -> Value {
    let sku = p.listing(product, "ebay").await["sku"].clone();
    let state = p.sim_get("ebay", "/_admin/state").await;
    state["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offer"].clone())
        .find(|o| o["sku"] == sku)
        .unwrap_or(Value::Null)
}

/// The eBay inventory item the simulator holds for the product's SKU.
async fn ebay_item(p: &Platform, product: i64) -> Value {
    let sku = p.listing(product, "ebay").await["sku"].clone();
    let state = p.sim_get("ebay", "/_admin/state").await;
    state["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sku"] == sku)
        .map(|i| i["item"].clone())
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

async fn jobs_of(p: &Platform, kind: &str, product: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = $1 AND (args->>'product_id')::bigint = $2",
    )
    .bind(kind)
    .bind(product)
    .fetch_one(&p.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn deleting_archiving_or_selling_by_hand_withdraws_every_live_listing() {
    let p = Platform::start(1, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let deleted = published(&p, json!({"title": "Deleted scarf"})).await;
    let archived = published(&p, json!({"title": "Archived scarf"})).await;
    let sold = published(&p, json!({"title": "Sold scarf"})).await;

    let r = p
        .api
        .http
        .delete(p.api.url(&format!("/v1/products/{deleted}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (s, v) = patch(
        &p,
        &format!("/v1/products/{archived}"),
        json!({"status": "archived"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = patch(
        &p,
        &format!("/v1/products/{sold}"),
        json!({"status": "sold"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    for (product, reason) in [
        (deleted, "product deleted"),
        (archived, "product archived"),
        (sold, "marked sold by the seller"),
    ] {
        // Enqueued with the change: one withdraw per live listing, visible at once.
        assert_eq!(jobs_of(&p, "withdraw_listing", product).await, 2);
        for m in ["ebay", "etsy"] {
            let l = eventually_value(T, "listing withdrawn", || async {
                let l = p.listing(product, m).await;
                (l["status"] == "withdrawn").then_some(l)
            })
            .await;
            assert_eq!(l["withdraw_reason"], reason, "{l}");
        }
        let offer = ebay_offer(&p, product).await;
        assert_eq!(offer["status"], "UNPUBLISHED", "{offer}");
        let etsy = etsy_listing(&p, product).await;
        assert_eq!(etsy["state"], "inactive", "{etsy}");
    }
    // The deleted product is gone from the catalogue, its listings are not.
    let (s, _) = p.api.get(&format!("/v1/products/{deleted}")).await;
    assert_eq!(s, 404);
    let (s, v) = p.api.get(&format!("/v1/products/{deleted}/listings")).await;
    assert_eq!(
        (s, v["listings"].as_array().unwrap().len()),
        (200, 2),
        "{v}"
    );
}

#[tokio::test]
async fn an_edit_updates_every_live_listing_without_another_publish() {
    let p = Platform::start(1, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let product = published(
        &p,
        json!({"title": "Green vase", "price": "20.00", "stock_quantity": 1}),
    )
    .await;
    let (s, v) = patch(
        &p,
        &format!("/v1/products/{product}"),
        json!({"title": "Green glass vase", "price": "35.00", "stock_quantity": 3}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(jobs_of(&p, "publish_listing", product).await, 4);

    let offer = eventually_value(T, "eBay offer at the new price", || async {
        let o = ebay_offer(&p, product).await;
        (o["pricingSummary"]["price"]["value"] == "35.00").then_some(o)
    })
    .await;
    assert_eq!(offer["availableQuantity"], 3, "{offer}");
    assert_eq!(offer["status"], "PUBLISHED", "{offer}");
    let offer_id = offer["offerId"].as_str().unwrap().to_string();
    let item = ebay_item(&p, product).await;
    assert_eq!(item["product"]["title"], "Green glass vase", "{item}");
    assert_eq!(
        item["availability"]["shipToLocationAvailability"]["quantity"],
        3
    );
    let calls = p.sim_requests("ebay").await;
    assert!(
        calls.iter().any(|(m, path, s)| m == "PUT"
            && path.ends_with(&format!("/offer/{offer_id}"))
            && *s == 204),
        "updateOffer sent: {calls:?}"
    );
    let etsy = eventually_value(T, "Etsy listing updated", || async {
        let l = etsy_listing(&p, product).await;
        (l["title"] == "Green glass vase" && l["quantity"] == 3).then_some(l)
    })
    .await;
    assert_eq!(etsy["price"]["amount"], 3500, "{etsy}");
    assert_eq!(etsy["state"], "active", "{etsy}");
    // Publishing this version by hand names the same jobs (the publish path's idempotency).
    let (s, v) = p
        .api
        .post(
            &format!("/v1/products/{product}/publish"),
            &json!({"marketplaces": ["ebay", "etsy"]}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["created"] == false),
        "{v}"
    );
}

#[tokio::test]
async fn with_auto_update_off_an_edit_sends_nothing() {
    let p = Platform::start(1, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    // A bad value is a problem naming the field, and changes nothing.
    let (s, v) = patch(&p, "/v1/settings", json!({"currency_mismatch": "round"})).await;
    assert!((400..500).contains(&s), "{v}");
    assert!(v.to_string().contains("currency_mismatch"), "{v}");
    let (s, v) = patch(&p, "/v1/settings", json!({"auto_update_listings": false})).await;
    assert_eq!(
        (
            s,
            v["auto_update_listings"].clone(),
            v["currency_mismatch"].clone()
        ),
        (200, json!(false), json!("refuse")),
        "{v}"
    );
    let product = published(&p, json!({"price": "20.00"})).await;
    let before = marketplace_calls(&p).await;
    let (s, v) = patch(
        &p,
        &format!("/v1/products/{product}"),
        json!({"price": "35.00", "title": "Changed"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Jobs are enqueued in the PATCH's own transaction: none now means none ever.
    assert_eq!(jobs_of(&p, "publish_listing", product).await, 2);
    let offer = ebay_offer(&p, product).await;
    assert_eq!(offer["pricingSummary"]["price"]["value"], "20.00");
    assert_eq!(etsy_listing(&p, product).await["price"]["amount"], 2000);
    assert_eq!(marketplace_calls(&p).await, before);
}

/// The calls the platform made to both simulators (their admin API left out).
async fn marketplace_calls(p: &Platform) -> Vec<(String, String, u64)> {
    let mut calls = p.sim_requests("ebay").await;
    calls.extend(p.sim_requests("etsy").await);
    calls.retain(|(_, path, _)| !path.starts_with("/_admin"));
    calls
}

#[tokio::test]
async fn a_price_in_another_currency_is_refused_by_default_and_converted_when_chosen() {
    let p = Platform::start(
        1,
        &[
            ("STOFLOW_MARKETPLACES__EBAY__MARKETPLACE_ID", "EBAY_US"),
            ("STOFLOW_MARKETPLACES__EBAY__CONTENT_LANGUAGE", "en-US"),
            ("STOFLOW_CURRENCY__RATES__EUR_USD", "1.10"),
        ],
    )
    .await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let shop = sim::etsy::Settings::default().shop_id;
    let v = p
        .sim_request(
            reqwest::Method::PUT,
            "etsy",
            &format!("/_admin/shops/{shop}"),
            json!({"currency_code": "USD"}),
        )
        .await;
    assert_eq!(v["currency_code"], "USD", "{v}");
    let (s, v) = p.api.get("/v1/settings").await;
    assert_eq!((s, v["currency_mismatch"].clone()), (200, json!("refuse")));

    let refused = p
        .product(json!({"price": "35.00", "currency": "EUR"}))
        .await;
    for job in p.publish(refused, &["ebay", "etsy"]).await {
        let dead = p.api.wait_state(job, "dead", T).await;
        assert_eq!(dead["attempt"], 1, "{dead}");
        assert_eq!(dead["last_error"]["class"], "currency_mismatch", "{dead}");
        let message = dead["last_error"]["message"].as_str().unwrap();
        assert!(message.contains("EUR") && message.contains("USD"), "{dead}");
    }
    for m in ["ebay", "etsy"] {
        let l = p.listing(refused, m).await;
        assert_eq!(l["status"], "failed", "{l}");
    }
    let state = p.sim_get("etsy", "/_admin/state").await;
    assert!(state["listings"].as_array().unwrap().is_empty(), "{state}");
    let state = p.sim_get("ebay", "/_admin/state").await;
    assert!(state["offers"].as_array().unwrap().is_empty(), "{state}");

    let (s, v) = patch(&p, "/v1/settings", json!({"currency_mismatch": "convert"})).await;
    assert_eq!((s, v["currency_mismatch"].clone()), (200, json!("convert")));
    let converted = p
        .product(json!({"price": "35.00", "currency": "EUR"}))
        .await;
    for job in p.publish(converted, &["ebay", "etsy"]).await {
        p.api.wait_state(job, "done", T).await;
    }
    // 35.00 EUR × 1.10 = 38.50 USD.
    let offer = ebay_offer(&p, converted).await;
    assert_eq!(
        offer["pricingSummary"]["price"],
        json!({"value": "38.50", "currency": "USD"}),
        "{offer}"
    );
    let etsy = etsy_listing(&p, converted).await;
    assert_eq!(
        etsy["price"],
        json!({"amount": 3850, "divisor": 100, "currency_code": "USD"}),
        "{etsy}"
    );
}

#[tokio::test]
async fn an_edit_followed_at_once_by_a_delete_ends_withdrawn_everywhere() {
    let p = Platform::start(2, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let product = published(&p, json!({"price": "20.00"})).await;
    // eBay's offer calls are slow, so the update is halfway (offer replaced, not yet
    // re-published) when the delete lands: a withdrawal run then would be undone by it.
    p.sim_admin(
        "ebay",
        "/_admin/faults",
        json!({"latency_ms": 2000, "path_prefix": "/sell/inventory/v1/offer/"}),
    )
    .await;
    let (s, v) = patch(
        &p,
        &format!("/v1/products/{product}"),
        json!({"price": "25.00"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    integration::eventually(T, "the eBay update running", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE kind = 'publish_listing' AND state = 'running'
                AND args->>'marketplace' = 'ebay'",
        )
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    let r = p
        .api
        .http
        .delete(p.api.url(&format!("/v1/products/{product}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // The withdrawals wait for the update under way, so nothing is left on sale.
    for m in ["ebay", "etsy"] {
        eventually_value(T, "listing withdrawn", || async {
            (p.listing(product, m).await["status"] == "withdrawn").then_some(())
        })
        .await;
    }
    integration::eventually(T, "every publish and withdraw finished", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE state IN ('available', 'running')
                AND kind IN ('publish_listing', 'withdraw_listing')",
        )
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
            == 0
    })
    .await;
    assert_eq!(ebay_offer(&p, product).await["status"], "UNPUBLISHED");
    assert_eq!(etsy_listing(&p, product).await["state"], "inactive");
}
