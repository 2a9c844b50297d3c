//! The eBay client against the eBay simulator (a real HTTP server started in-process): OAuth,
//! item → offer → publish with idempotent offer creation, orders, and error classification.

use std::collections::BTreeMap;

use chrono::Utc;
use jobs::config::EbaySettings;
use marketplaces::MarketplaceError;
use marketplaces::ebay::{
    Amount, Availability, EbayClient, InventoryItem, ListingPolicies, OfferDetails, PricingSummary,
    Product, ShipTo,
};
use serde_json::json;

struct Env {
    sims: sim::Running,
    client: EbayClient,
    admin: reqwest::Client,
}

async fn env() -> Env {
    let sims = sim::start(sim::SimConfig::default())
        .await
        .expect("simulators");
    let mut s: EbaySettings = jobs::Settings::defaults().marketplaces.ebay;
    s.api_base = sims.ebay_url.clone();
    s.auth_base = sims.ebay_url.clone();
    // The offers below are for EBAY_US (priced in USD); the client looks offers up by its site.
    s.marketplace_id = "EBAY_US".into();
    Env {
        client: EbayClient::new(&s),
        sims,
        admin: reqwest::Client::new(),
    }
}

impl Env {
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let r = self
            .admin
            .request(method, format!("{}{path}", self.sims.ebay_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
        r.json().await.unwrap_or(json!(null))
    }

    /// The consent page approves at once: follow its redirect and exchange the code.
    async fn connect(&self) -> marketplaces::ebay::UserTokens {
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = no_redirect
            .get(self.client.consent_url("st4te").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        let q: BTreeMap<String, String> = loc.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st4te");
        self.client
            .exchange_code(&q["code"])
            .await
            .expect("code exchange")
    }
}

fn item(title: &str) -> InventoryItem {
    InventoryItem {
        availability: Availability {
            ship_to_location_availability: ShipTo { quantity: 2 },
        },
        condition: "USED_VERY_GOOD".into(),
        product: Product {
            title: title.into(),
            description: "Soft wool scarf".into(),
            aspects: BTreeMap::from([("Brand".into(), vec!["Acme".into()])]),
            image_urls: vec!["https://img.example/1.jpg".into()],
            brand: Some("Acme".into()),
        },
    }
}

fn offer(sku: &str) -> OfferDetails {
    OfferDetails {
        sku: sku.into(),
        marketplace_id: "EBAY_US".into(),
        format: "FIXED_PRICE".into(),
        available_quantity: 2,
        category_id: "11450".into(),
        listing_description: "Soft wool scarf".into(),
        listing_duration: "GTC".into(),
        merchant_location_key: "default".into(),
        listing_policies: ListingPolicies {
            fulfillment_policy_id: "6196932000".into(),
            payment_policy_id: "6196933000".into(),
            return_policy_id: "6196934000".into(),
        },
        pricing_summary: PricingSummary {
            price: Amount {
                value: "12.50".into(),
                currency: "USD".into(),
            },
        },
    }
}

#[tokio::test]
async fn ebay_consent_code_exchange_and_refresh_give_working_tokens() {
    let e = env().await;
    let t = e.connect().await;
    assert_eq!(t.expires_in, 7200);
    let fresh = e.client.refresh(&t.refresh_token).await.expect("refresh");
    assert!(
        e.client
            .get_inventory_item(&fresh.access_token, "NOPE")
            .await
            .unwrap()
            .is_none()
    );
    // A code is single-use: replaying it is invalid_grant, which means "reconnect".
    let err = e.client.exchange_code("v^1.1#bogus").await.unwrap_err();
    assert_eq!(err.class(), "auth_revoked", "{err:?}");
}

#[tokio::test]
async fn publishing_is_item_then_offer_then_publish_and_a_second_offer_is_never_created() {
    let e = env().await;
    let token = e.connect().await.access_token;
    e.client
        .put_inventory_item(&token, "SF-1", &item("Wool scarf"))
        .await
        .unwrap();
    assert_eq!(
        e.client
            .get_inventory_item(&token, "SF-1")
            .await
            .unwrap()
            .unwrap()
            .product
            .title,
        "Wool scarf"
    );
    let offer_id = e.client.create_offer(&token, &offer("SF-1")).await.unwrap();
    let listing_id = e.client.publish_offer(&token, &offer_id).await.unwrap();
    assert!(!listing_id.is_empty());

    // A retry after a crash: the offer exists (25002), the client returns the same one.
    let again = e.client.create_offer(&token, &offer("SF-1")).await.unwrap();
    assert_eq!(again, offer_id);
    let offers = e.client.offers_by_sku(&token, "SF-1").await.unwrap();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].status, "PUBLISHED");
    assert_eq!(offers[0].listing.as_ref().unwrap().listing_id, listing_id);

    e.client.withdraw_offer(&token, &offer_id).await.unwrap();
    assert_eq!(
        e.client.offers_by_sku(&token, "SF-1").await.unwrap()[0].status,
        "UNPUBLISHED"
    );
    e.client
        .delete_inventory_item(&token, "SF-1")
        .await
        .unwrap();
    e.client
        .delete_inventory_item(&token, "SF-1")
        .await
        .expect("deleting twice is fine");
}

#[tokio::test]
async fn orders_placed_in_the_simulator_come_back_by_last_modified_date() {
    let e = env().await;
    let token = e.connect().await.access_token;
    e.client
        .put_inventory_item(&token, "SF-2", &item("Lamp"))
        .await
        .unwrap();
    let offer_id = e.client.create_offer(&token, &offer("SF-2")).await.unwrap();
    e.client.publish_offer(&token, &offer_id).await.unwrap();
    let since = Utc::now() - chrono::Duration::minutes(5);
    e.admin(
        reqwest::Method::POST,
        "/_admin/orders",
        json!({"line_items": [{"sku": "SF-2", "quantity": 1}]}),
    )
    .await;

    let page = e
        .client
        .orders_modified_since(&token, since, 50, 0)
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    let o = &page.orders[0];
    assert_eq!(
        (o.line_items[0].sku.as_deref(), o.line_items[0].quantity),
        (Some("SF-2"), 1)
    );
    assert!(o.last_modified_date >= since);
}

#[tokio::test]
async fn ebay_failures_are_classified_for_the_queue() {
    let e = env().await;
    let token = e.connect().await.access_token;

    // Publishing an offer whose item lacks required fields is a permanent rejection.
    let mut bare = item("x");
    bare.product.image_urls.clear();
    e.client
        .put_inventory_item(&token, "SF-3", &bare)
        .await
        .unwrap();
    let offer_id = e.client.create_offer(&token, &offer("SF-3")).await.unwrap();
    let err = e.client.publish_offer(&token, &offer_id).await.unwrap_err();
    assert_eq!(err.class(), "rejected", "{err:?}");

    e.admin(
        reqwest::Method::POST,
        "/_admin/faults",
        json!({"fail_next": 1, "fail_status": 503}),
    )
    .await;
    assert_eq!(
        e.client
            .get_inventory_item(&token, "SF-3")
            .await
            .unwrap_err()
            .class(),
        "unavailable"
    );

    e.admin(
        reqwest::Method::POST,
        "/_admin/faults",
        json!({"drop_next": 1}),
    )
    .await;
    assert_eq!(
        e.client
            .get_inventory_item(&token, "SF-3")
            .await
            .unwrap_err()
            .class(),
        "unavailable"
    );

    e.admin(
        reqwest::Method::PUT,
        "/_admin/quota",
        json!({"daily_quota": 0}),
    )
    .await;
    let err = e
        .client
        .get_inventory_item(&token, "SF-3")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MarketplaceError::RateLimited {
                retry_after: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    e.admin(
        reqwest::Method::PUT,
        "/_admin/quota",
        json!({"daily_quota": 1000}),
    )
    .await;

    e.admin(reqwest::Method::POST, "/_admin/tokens/expire", json!({}))
        .await;
    assert_eq!(
        e.client
            .get_inventory_item(&token, "SF-3")
            .await
            .unwrap_err()
            .class(),
        "auth_expired"
    );
}
