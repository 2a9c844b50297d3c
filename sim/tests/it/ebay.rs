use serde_json::{Value, json};

use crate::{body, client, location_query, sims};

const SCOPES: &str = "https://api.ebay.com/oauth/api_scope/sell.inventory https://api.ebay.com/oauth/api_scope/sell.fulfillment";

pub async fn consent(c: &reqwest::Client, base: &str) -> String {
    let s = sim::ebay::Settings::default();
    let r = c
        .get(format!("{base}/oauth2/authorize"))
        .query(&[
            ("client_id", s.client_id.as_str()),
            ("redirect_uri", &s.runame),
            ("response_type", "code"),
            ("scope", SCOPES),
            ("state", "st-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let (target, q) = location_query(&r);
    assert_eq!(target, s.accept_url);
    assert_eq!(q["state"], "st-1");
    q["code"].clone()
}

pub async fn exchange(c: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let s = sim::ebay::Settings::default();
    c.post(format!("{base}/identity/v1/oauth2/token"))
        .basic_auth(&s.client_id, Some(&s.client_secret))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A user access token for the default seller, through the real consent + code flow.
pub async fn token(c: &reqwest::Client, base: &str) -> String {
    let code = consent(c, base).await;
    let runame = sim::ebay::Settings::default().runame;
    let r = exchange(
        c,
        base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &runame),
        ],
    )
    .await;
    body(r).await["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn authorization_code_then_refresh_and_errors() {
    let sims = sims().await;
    let (c, base) = (client(), sims.ebay_url.clone());
    let runame = sim::ebay::Settings::default().runame;
    let code = consent(&c, &base).await;
    assert!(
        code.starts_with("v^1.1#"),
        "code is delivered URL-encoded and decodes to v^1.1#..."
    );

    let r = exchange(
        &c,
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &runame),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let t = body(r).await;
    assert_eq!(t["expires_in"], 7200);
    assert_eq!(t["refresh_token_expires_in"], 47_304_000);
    assert_eq!(t["token_type"], "User Access Token");
    let rt = t["refresh_token"].as_str().unwrap().to_string();

    // A code is single use.
    let again = exchange(
        &c,
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &runame),
        ],
    )
    .await;
    assert_eq!(again.status(), 400);
    assert_eq!(body(again).await["error"], "invalid_grant");

    let r = exchange(
        &c,
        &base,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await;
    assert_eq!(r.status(), 200);
    let t = body(r).await;
    assert!(
        t.get("refresh_token").is_none(),
        "eBay does not rotate refresh tokens"
    );
    assert_eq!(t["expires_in"], 7200);

    // Wrong client secret.
    let r = c
        .post(format!("{base}/identity/v1/oauth2/token"))
        .basic_auth(sim::ebay::Settings::default().client_id, Some("wrong"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(body(r).await["error"], "invalid_client");

    // Revoked refresh token.
    c.post(format!("{base}/_admin/tokens/revoke"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let r = exchange(
        &c,
        &base,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await["error"], "invalid_grant");
}

fn item() -> Value {
    json!({"availability": {"shipToLocationAvailability": {"quantity": 3}}, "condition": "USED_GOOD",
        "product": {"title": "Levi's 501 W32 L32", "description": "Classic jeans", "aspects": {"Brand": ["Levi's"]},
            "imageUrls": ["https://example.com/a.jpg"]}})
}

fn offer() -> Value {
    json!({"sku": "SKU-1", "marketplaceId": "EBAY_US", "format": "FIXED_PRICE", "availableQuantity": 3,
        "categoryId": "11483", "listingDuration": "GTC", "merchantLocationKey": sim::ebay::LOCATION,
        "pricingSummary": {"price": {"value": "29.99", "currency": "USD"}},
        "listingPolicies": {"fulfillmentPolicyId": sim::ebay::FULFILLMENT_POLICY,
            "paymentPolicyId": sim::ebay::PAYMENT_POLICY, "returnPolicyId": sim::ebay::RETURN_POLICY}})
}

#[tokio::test]
async fn inventory_offer_publish_withdraw_and_offer_exists() {
    let sims = sims().await;
    let (c, base) = (client(), sims.ebay_url.clone());
    let tok = token(&c, &base).await;
    let inv = format!("{base}/sell/inventory/v1");

    let r = c
        .put(format!("{inv}/inventory_item/SKU-1"))
        .bearer_auth(&tok)
        .header("Content-Language", "en-US")
        .json(&item())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{inv}/inventory_item/SKU-1"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["sku"], "SKU-1");

    let r = c
        .post(format!("{inv}/offer"))
        .bearer_auth(&tok)
        .header("Content-Language", "en-US")
        .json(&offer())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let offer_id = body(r).await["offerId"].as_str().unwrap().to_string();

    let dup = c
        .post(format!("{inv}/offer"))
        .bearer_auth(&tok)
        .header("Content-Language", "en-US")
        .json(&offer())
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 400);
    let e = body(dup).await;
    assert_eq!(e["errors"][0]["errorId"], 25002);
    assert_eq!(
        e["errors"][0]["parameters"][0],
        json!({"name": "offerId", "value": offer_id})
    );

    let r = c
        .post(format!("{inv}/offer/{offer_id}/publish"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listing_id = body(r).await["listingId"].as_str().unwrap().to_string();

    let r = c
        .get(format!("{inv}/offer"))
        .query(&[("sku", "SKU-1")])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let offers = body(r).await;
    assert_eq!(offers["total"], 1);
    assert_eq!(offers["offers"][0]["status"], "PUBLISHED");
    assert_eq!(
        offers["offers"][0]["listing"]["listingId"],
        listing_id.as_str()
    );

    let r = c
        .post(format!("{inv}/offer/{offer_id}/withdraw"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{inv}/offer/{offer_id}/withdraw"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await["errors"][0]["errorId"], 25713);
}

#[tokio::test]
async fn update_offer_replaces_the_offer_and_a_published_one_must_stay_publishable() {
    let sims = sims().await;
    let (c, base) = (client(), sims.ebay_url.clone());
    let tok = token(&c, &base).await;
    let inv = format!("{base}/sell/inventory/v1");
    let write =
        |r: reqwest::RequestBuilder| r.bearer_auth(&tok).header("Content-Language", "en-US");
    let r = write(c.put(format!("{inv}/inventory_item/SKU-1")))
        .json(&item())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = write(c.post(format!("{inv}/offer")))
        .json(&offer())
        .send()
        .await
        .unwrap();
    let id = body(r).await["offerId"].as_str().unwrap().to_string();
    let r = c
        .post(format!("{inv}/offer/{id}/publish"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut updated = offer();
    updated["pricingSummary"]["price"]["value"] = json!("35.00");
    updated["availableQuantity"] = json!(2);
    updated["listingDescription"] = json!("Classic jeans, now cheaper");
    let put = |b: &Value, lang: bool| {
        let r = c.put(format!("{inv}/offer/{id}")).bearer_auth(&tok);
        let r = if lang {
            r.header("Content-Language", "en-US")
        } else {
            r
        };
        r.json(b).send()
    };
    let r = put(&updated, false).await.unwrap();
    assert_eq!(r.status(), 400, "Content-Language is required");
    let mut no_description = updated.clone();
    no_description
        .as_object_mut()
        .unwrap()
        .remove("listingDescription");
    let r = put(&no_description, true).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        body(r).await["errors"][0]["parameters"][0]["value"],
        "listingDescription"
    );
    let mut bad_price = updated.clone();
    bad_price["pricingSummary"]["price"]["value"] = json!(35);
    let r = put(&bad_price, true).await.unwrap();
    assert_eq!(body(r).await["errors"][0]["errorId"], 25003);
    // A full replacement: leaving the location out would leave the live listing unpublishable.
    let mut partial = updated.clone();
    partial
        .as_object_mut()
        .unwrap()
        .remove("merchantLocationKey");
    let r = put(&partial, true).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await["errors"][0]["errorId"], 25012);

    let r = put(&updated, true).await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{inv}/offer/{id}"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let o = body(r).await;
    assert_eq!(o["pricingSummary"]["price"]["value"], "35.00", "{o}");
    assert_eq!(o["availableQuantity"], 2, "{o}");
    assert_eq!(
        (o["sku"].as_str(), o["status"].as_str()),
        (Some("SKU-1"), Some("PUBLISHED"))
    );
}

#[tokio::test]
async fn publish_reports_missing_fields() {
    let sims = sims().await;
    let (c, base) = (client(), sims.ebay_url.clone());
    let tok = token(&c, &base).await;
    let inv = format!("{base}/sell/inventory/v1");
    c.put(format!("{inv}/inventory_item/SKU-1"))
        .bearer_auth(&tok)
        .header("Content-Language", "en-US")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let bare = json!({"sku": "SKU-1", "marketplaceId": "EBAY_US", "format": "FIXED_PRICE"});
    let r = c
        .post(format!("{inv}/offer"))
        .bearer_auth(&tok)
        .header("Content-Language", "en-US")
        .json(&bare)
        .send()
        .await
        .unwrap();
    let id = body(r).await["offerId"].as_str().unwrap().to_string();
    let r = c
        .post(format!("{inv}/offer/{id}/publish"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let ids: Vec<u64> = body(r).await["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorId"].as_u64().unwrap())
        .collect();
    for want in [25012, 25003, 25007, 25021, 25014] {
        assert!(ids.contains(&want), "publish errors {ids:?} lack {want}");
    }
}

#[tokio::test]
async fn content_language_is_required_on_writes() {
    let sims = sims().await;
    let (c, base) = (client(), sims.ebay_url.clone());
    let tok = token(&c, &base).await;
    let r = c
        .put(format!("{base}/sell/inventory/v1/inventory_item/SKU-1"))
        .bearer_auth(&tok)
        .json(&item())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e = body(r).await;
    assert_eq!(e["errors"][0]["errorId"], 25709);
    assert_eq!(e["errors"][0]["domain"], "API_INVENTORY");
    assert!(
        e["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Language")
    );
}

#[tokio::test]
async fn expired_token_gets_401_1001_and_spent_quota_429_2001() {
    let sims = sims().await;
    let (c, base) = (client(), sims.ebay_url.clone());
    let tok = token(&c, &base).await;
    let url = format!("{base}/sell/inventory/v1/inventory_item?limit=10");
    assert_eq!(
        c.get(&url).bearer_auth(&tok).send().await.unwrap().status(),
        200
    );

    c.put(format!("{base}/_admin/quota"))
        .json(&json!({"daily_quota": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.get(&url).bearer_auth(&tok).send().await.unwrap().status(),
        200
    );
    let r = c.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers().get("retry-after").is_none(),
        "eBay's Retry-After is unverified; off by default"
    );
    let e = body(r).await;
    assert_eq!(e["errors"][0]["errorId"], 2001);
    assert_eq!(e["errors"][0]["domain"], "ACCESS");

    c.post(format!("{base}/_admin/tokens/expire"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let r = c.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e = body(r).await;
    assert_eq!(e["errors"][0]["errorId"], 1001);
    assert_eq!(e["errors"][0]["message"], "Invalid access token");
}

#[tokio::test]
async fn orders_filter_by_last_modified_and_page() {
    let sims = sims().await;
    let (c, base) = (client(), sims.ebay_url.clone());
    let tok = token(&c, &base).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = c
            .post(format!("{base}/_admin/orders"))
            .json(&json!({"line_items": [{"sku": format!("S{i}"), "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        ids.push(body(r).await["orderId"].as_str().unwrap().to_string());
    }
    let now = body(
        c.post(format!("{base}/_admin/clock"))
            .json(&json!({"advance_secs": 60}))
            .send()
            .await
            .unwrap(),
    )
    .await["now"]
        .as_str()
        .unwrap()
        .to_string();
    c.post(format!("{base}/_admin/orders/{}", ids[1]))
        .json(&json!({"orderFulfillmentStatus": "FULFILLED"}))
        .send()
        .await
        .unwrap();

    let url = format!("{base}/sell/fulfillment/v1/order");
    let r = c
        .get(&url)
        .query(&[("filter", format!("lastmodifieddate:[{now}..]"))])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let page = body(r).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["orders"][0]["orderId"], ids[1].as_str());
    assert_eq!(page["orders"][0]["lineItems"][0]["sku"], "S1");

    let r = c
        .get(&url)
        .query(&[("limit", "2"), ("offset", "0")])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let p1 = body(r).await;
    assert_eq!(
        (p1["total"].as_u64(), p1["orders"].as_array().unwrap().len()),
        (Some(3), 2)
    );
    assert!(p1["next"].is_string());
    let r = c
        .get(&url)
        .query(&[("limit", "2"), ("offset", "2")])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let p2 = body(r).await;
    assert_eq!(p2["orders"].as_array().unwrap().len(), 1);
    assert!(p2.get("next").is_none());

    let r = c
        .get(&url)
        .query(&[("filter", "lastmodifieddate:[2024-01-01..]")])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await["errors"][0]["errorId"], 30810);
}
