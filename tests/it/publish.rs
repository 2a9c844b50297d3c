//! Publishing for real, end to end: API → Postgres → worker processes → the eBay and Etsy
//! simulators. Every test counts what the simulator itself holds.

use std::time::Duration;

use integration::{Platform, pid_of_worker};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// eBay offers the simulator holds.
async fn ebay_offers(p: &Platform) -> Vec<Value> {
    let state = p.sim_get("ebay", "/_admin/state").await;
    state["offers"].as_array().cloned().unwrap_or_default()
}

/// Etsy listings the simulator holds (any state), with images and inventory.
async fn etsy_listings(p: &Platform) -> Vec<Value> {
    let state = p.sim_get("etsy", "/_admin/state").await;
    state["listings"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_product_published_to_ebay_and_etsy_becomes_exactly_one_listing_on_each() {
    let p = Platform::start(2, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let product = p
        .product(json!({"title": "Wool scarf", "stock_quantity": 2,
                         "images": ["https://img.example/1.jpg", "https://img.example/2.jpg"]}))
        .await;
    let jobs = p.publish(product, &["ebay", "etsy"]).await;
    for job in &jobs {
        p.api.wait_state(*job, "done", T).await;
    }

    let offers = ebay_offers(&p).await;
    assert_eq!(offers.len(), 1, "{offers:?}");
    let listings = etsy_listings(&p).await;
    assert_eq!(listings.len(), 1, "{listings:?}");
    let etsy = &listings[0];
    assert_eq!(etsy["state"], "active", "{etsy}");
    assert_eq!(etsy["images"].as_array().unwrap().len(), 2, "{etsy}");
    let sku: String = sqlx::query_scalar("SELECT sku FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(
        etsy["inventory"]["products"][0]["sku"],
        json!(sku),
        "{etsy}"
    );
    assert_eq!(etsy["quantity"], 2);

    for (m, remote) in [
        ("ebay", offers[0]["offer"]["listing"]["listingId"].clone()),
        (
            "etsy",
            json!(etsy["listing_id"].as_u64().unwrap().to_string()),
        ),
    ] {
        let l = p.listing(product, m).await;
        assert_eq!(l["status"], "published", "{l}");
        assert_eq!(l["remote_listing_id"], remote, "{m}: {l}");
        assert!(l["url"].as_str().is_some(), "{l}");
    }
    // Tokens are sealed at rest: the raw columns hold no token text (eBay user tokens start
    // `v^1.1`, Etsy's with the user id and a dot).
    let raw: Vec<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT external_user_id, access_token, refresh_token FROM marketplace_accounts",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(raw.len(), 2);
    for (user, access, refresh) in raw {
        for sealed in [access, refresh] {
            let text = String::from_utf8_lossy(&sealed);
            assert!(
                !text.contains("v^1.1") && !text.contains(&format!("{user}.")),
                "token stored in clear"
            );
        }
    }
}

#[tokio::test]
async fn a_5xx_in_the_middle_of_publishing_still_gives_one_listing_on_each() {
    let p = Platform::start(2, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let product = p.product(json!({"title": "Lamp"})).await;
    // eBay: the first publishOffer fails after the offer was created; the retry must reuse it.
    p.sim_admin(
        "ebay",
        "/_admin/faults",
        json!({"fail_next": 1, "fail_status": 500, "path_prefix": "/sell/inventory/v1/offer/"}),
    )
    .await;
    // Etsy: the inventory update after the draft fails once; the retry must reuse the draft.
    p.sim_admin(
        "etsy",
        "/_admin/faults",
        json!({"fail_next": 1, "fail_status": 503, "path_prefix": "/v3/application/listings/"}),
    )
    .await;
    let jobs = p.publish(product, &["ebay", "etsy"]).await;
    for job in &jobs {
        let done = p.api.wait_state(*job, "done", T).await;
        assert_eq!(done["attempt"], 2, "{done}");
        assert_eq!(done["errors"][0]["class"], "unavailable", "{done}");
    }
    assert_eq!(ebay_offers(&p).await.len(), 1);
    assert_eq!(etsy_listings(&p).await.len(), 1);
    let logged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM marketplace_errors WHERE class = 'unavailable'")
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(logged, 2, "one logged failure per marketplace");
}

#[tokio::test]
async fn a_product_a_marketplace_would_refuse_is_dead_at_once_with_the_field_named() {
    let p = Platform::start(1, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    // 90 characters: too long for eBay (80); 150: too long for Etsy (140) as well.
    for (m, len) in [("ebay", 90), ("etsy", 150)] {
        let product = p.product(json!({"title": "x".repeat(len)})).await;
        let job = p.publish(product, &[m]).await[0];
        let dead = p.api.wait_state(job, "dead", T).await;
        assert_eq!(dead["attempt"], 1, "no retry storm: {dead}");
        assert_eq!(dead["last_error"]["class"], "rejected");
        let message = dead["last_error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{m} title")), "{dead}");
        let l = p.listing(product, m).await;
        assert_eq!(l["status"], "failed", "{l}");
        assert!(
            l["last_error"]["message"]
                .as_str()
                .unwrap()
                .contains("title"),
            "{l}"
        );
    }
    assert!(ebay_offers(&p).await.is_empty());
    assert!(etsy_listings(&p).await.is_empty());
    // Nothing but the checks happened: no listing call reached either simulator.
    let calls = p.sim_requests("etsy").await;
    assert!(
        !calls.iter().any(|(_, path, _)| path.contains("/listings")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn without_a_connected_account_publishing_fails_with_a_clear_reason() {
    let p = Platform::start(1, &[]).await;
    let product = p.product(json!({"title": "Mug"})).await;
    for job in p.publish(product, &["ebay", "etsy"]).await {
        let dead = p.api.wait_state(job, "dead", T).await;
        assert_eq!(dead["last_error"]["class"], "not_connected", "{dead}");
    }
}

#[tokio::test]
async fn an_image_the_host_does_not_have_fails_the_etsy_publish_naming_the_image() {
    let p = Platform::start(1, &[]).await;
    p.connect("etsy").await;
    let product = p
        .product(
            json!({"images": ["https://img.example/ok.jpg", "https://img.example/missing.jpg"]}),
        )
        .await;
    let job = p.publish(product, &["etsy"]).await[0];
    let dead = p.api.wait_state(job, "dead", T).await;
    let message = dead["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("etsy images") && message.contains("missing.jpg"),
        "{dead}"
    );
    // The draft stays a draft (Etsy would refuse to activate it half-pictured).
    let listings = etsy_listings(&p).await;
    assert_eq!(listings.len(), 1);
    assert_eq!(listings[0]["state"], "draft");
}

#[tokio::test]
async fn publishing_an_edited_product_updates_the_live_listings_in_place() {
    let p = Platform::start(1, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let product = p
        .product(json!({"title": "Blue vase", "stock_quantity": 1}))
        .await;
    for job in p.publish(product, &["ebay", "etsy"]).await {
        p.api.wait_state(job, "done", T).await;
    }
    let (s, v) = p
        .api
        .http
        .patch(p.api.url(&format!("/v1/products/{product}")))
        .json(&json!({"title": "Blue glass vase", "stock_quantity": 3}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 200, "{:?}", v.text().await);
    let again = p.publish(product, &["ebay", "etsy"]).await;
    for job in &again {
        p.api.wait_state(*job, "done", T).await;
    }
    let listings = etsy_listings(&p).await;
    assert_eq!(listings.len(), 1, "updated, not duplicated");
    assert_eq!(listings[0]["title"], "Blue glass vase");
    assert_eq!(listings[0]["quantity"], 3);
    let offers = ebay_offers(&p).await;
    assert_eq!(offers.len(), 1);
    let state = p.sim_get("ebay", "/_admin/state").await;
    let item = &state["items"][0]["item"];
    assert_eq!(item["product"]["title"], "Blue glass vase", "{item}");
}

#[tokio::test]
async fn withdrawing_takes_the_listings_off_both_marketplaces() {
    let p = Platform::start(1, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let product = p.product(json!({"title": "Tea set"})).await;
    for job in p.publish(product, &["ebay", "etsy"]).await {
        p.api.wait_state(job, "done", T).await;
    }
    for job in p
        .product_action(product, "withdraw", &["ebay", "etsy"])
        .await
    {
        p.api.wait_state(job, "done", T).await;
    }
    for m in ["ebay", "etsy"] {
        let l = p.listing(product, m).await;
        assert_eq!(l["status"], "withdrawn", "{l}");
        assert_eq!(l["withdraw_reason"], "withdrawn by the seller");
    }
    assert_eq!(etsy_listings(&p).await[0]["state"], "inactive");
    let offer = &ebay_offers(&p).await[0]["offer"];
    assert_ne!(offer["status"], "PUBLISHED", "{offer}");
}

#[tokio::test]
async fn a_worker_killed_mid_publish_still_gives_one_listing_on_each() {
    let mut p = Platform::start(2, &[]).await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let product = p.product(json!({"title": "Vase"})).await;
    // Slow the step after the remote id is recorded (eBay publishOffer, Etsy inventory), so the
    // kill lands after the remote object exists and before the job could finish.
    p.sim_admin(
        "ebay",
        "/_admin/faults",
        json!({"latency_ms": 3000, "path_prefix": "/sell/inventory/v1/offer/"}),
    )
    .await;
    p.sim_admin(
        "etsy",
        "/_admin/faults",
        json!({"latency_ms": 3000, "path_prefix": "/v3/application/listings/"}),
    )
    .await;
    let jobs = p.publish(product, &["ebay", "etsy"]).await;
    integration::eventually(T, "both remote ids recorded", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM listings WHERE product_id = $1
               AND coalesce(remote_offer_id, remote_listing_id) IS NOT NULL",
        )
        .bind(product)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
            == 2
    })
    .await;
    let mut owners = Vec::new();
    for job in &jobs {
        let v = p.api.job(*job).await;
        assert_eq!(v["state"], "running", "{v}");
        owners.push(pid_of_worker(v["worker"].as_str().unwrap()));
    }
    for w in p.workers.iter_mut().filter(|w| owners.contains(&w.pid())) {
        w.kill9();
    }
    p.sim_admin("ebay", "/_admin/faults", json!({})).await;
    p.sim_admin("etsy", "/_admin/faults", json!({})).await;
    // The jobs may have run on both workers: a fresh one finishes them either way.
    let fresh = p.spawn_worker_bin(&["run"]);
    p.workers.push(fresh);
    for job in &jobs {
        let done = p.api.wait_state(*job, "done", T).await;
        assert_eq!(done["attempt"], 2, "{done}");
        assert_eq!(done["errors"][0]["class"], "rescued", "{done}");
    }
    assert_eq!(ebay_offers(&p).await.len(), 1, "the retry reused the offer");
    assert_eq!(
        etsy_listings(&p).await.len(),
        1,
        "the retry reused the draft"
    );
    let published: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM listings WHERE product_id = $1 AND status = 'published'",
    )
    .bind(product)
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(published, 2);
}

#[tokio::test]
async fn an_etsy_draft_left_by_a_crashed_run_is_found_and_reused() {
    use chrono::Datelike as _;
    use marketplaces::etsy::EtsyClient;

    let p = Platform::start(1, &[]).await;
    p.connect("etsy").await;
    let product = p.product(json!({"title": "Crashed draft scarf"})).await;
    // What a run that crashed right after createDraftListing leaves: a draft on Etsy and no
    // listing id on our side. Made here with the seller's own token, as that run would have.
    let settings = jobs::Settings::load(jobs::kinds::ALL_KINDS).unwrap();
    let cipher = jobs::secrets::TokenCipher::new(&settings.security).unwrap();
    let (key, sealed, shop): (String, Vec<u8>, String) = sqlx::query_as(
        "SELECT token_key_id, access_token, shop_id FROM marketplace_accounts WHERE marketplace = 'etsy'",
    )
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    let token = cipher.open(&key, &sealed).unwrap();
    let shop: u64 = shop.parse().unwrap();
    let mut es = settings.marketplaces.etsy.clone();
    es.api_base = p.sims.etsy_url.clone();
    es.auth_base = p.sims.etsy_url.clone();
    let etsy = EtsyClient::new(&es);
    let shipping =
        etsy.shipping_profiles(&token, shop).await.unwrap().results[0].shipping_profile_id;
    let readiness =
        etsy.readiness_states(&token, shop).await.unwrap().results[0].readiness_state_id;
    let row = jobs::catalogue::get(&p.db.pool, None, product)
        .await
        .unwrap();
    let draft = jobs::publishing::etsy::draft_for(
        &row,
        es.taxonomy_id,
        Some(shipping),
        Some(readiness),
        chrono::Utc::now().year(),
    )
    .unwrap();
    let orphan = etsy
        .create_draft_listing(&token, shop, &draft)
        .await
        .unwrap();

    let job = p.publish(product, &["etsy"]).await[0];
    p.api.wait_state(job, "done", T).await;
    let listings = etsy_listings(&p).await;
    assert_eq!(
        listings.len(),
        1,
        "the orphan draft was reused: {listings:?}"
    );
    assert_eq!(listings[0]["state"], "active");
    assert_eq!(
        p.listing(product, "etsy").await["remote_listing_id"],
        json!(orphan.listing_id.to_string())
    );
}
