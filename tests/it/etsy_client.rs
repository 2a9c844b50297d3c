//! The Etsy client against the Etsy simulator, in-process on free ports, over real HTTP: OAuth
//! with PKCE and rotating refresh tokens, the draft → inventory → image → active path,
//! receipts paging, and how each failure is classified. No database.

use std::time::Duration;

use chrono::Datelike as _;
use jobs::config::{EtsySettings, Secret};
use marketplaces::MarketplaceError;
use marketplaces::etsy::{
    DraftListing, EtsyClient, InventoryUpdate, ListingState, ListingUpdate, Pkce, Provenance,
    ReceiptQuery, ReceiptSort, SCOPES, SortOrder, Tokens, WhoMade, provenance_for_condition,
    validate_title, when_made,
};
use serde_json::{Value, json};

const KEYSTRING: &str = "1aa2bb33cc44dd55ee66ff77";
const SECRET: &str = "simsharedsecret";
const REDIRECT: &str = "http://127.0.0.1:8080/oauth/etsy/callback";
const SHOP: u64 = 23_456_789;
const SHIPPING: u64 = SHOP + 100;
const READINESS: u64 = SHOP + 300;

struct Sim {
    _running: sim::Running,
    url: String,
    admin: reqwest::Client,
}

impl Sim {
    /// The Etsy simulator with a per-second limit high enough that only tests about limits
    /// meet it (Etsy's default of 10 would throttle a publish path run back to back).
    async fn start() -> Self {
        let mut cfg = sim::SimConfig::default();
        cfg.etsy.per_second = 1000;
        let running = sim::start(cfg).await.expect("start simulators");
        Self {
            url: running.etsy_url.clone(),
            _running: running,
            admin: reqwest::Client::new(),
        }
    }

    fn settings(&self, secret: &str) -> EtsySettings {
        EtsySettings {
            api_base: self.url.clone(),
            auth_base: self.url.clone(),
            keystring: KEYSTRING.into(),
            shared_secret: Secret::new(secret),
            redirect_uri: REDIRECT.into(),
            timeout_ms: 10_000,
            taxonomy_id: 11,
            low_stock_threshold: 1,
            webhook_secret: Secret::new(""),
        }
    }

    fn client(&self) -> EtsyClient {
        EtsyClient::new(&self.settings(SECRET))
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .admin
            .request(method, format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("admin call");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.admin(reqwest::Method::POST, path, body).await
    }

    /// Follows the consent page by hand: the sim approves at once and redirects to our
    /// callback, which nothing serves here; the code is read from the `Location` header.
    async fn consent(&self, etsy: &EtsyClient, scopes: &[&str]) -> (String, Pkce) {
        let pkce = Pkce::new();
        let url = etsy.consent_url("st-1", &pkce, scopes).unwrap();
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = no_redirect.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 302, "{url}");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(loc.starts_with(REDIRECT), "{loc}");
        let loc = reqwest::Url::parse(&loc).unwrap();
        let q = |k: &str| {
            loc.query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(q("error"), None, "{loc}");
        assert_eq!(q("state").as_deref(), Some("st-1"));
        (q("code").expect("code"), pkce)
    }

    async fn connect(&self, etsy: &EtsyClient) -> Tokens {
        let (code, pkce) = self.consent(etsy, SCOPES).await;
        etsy.exchange_code(&code, &pkce.verifier).await.unwrap()
    }
}

fn draft(title: &str) -> DraftListing {
    DraftListing {
        title: title.into(),
        description: "Linen summer dress, worn twice.".into(),
        quantity: 1,
        price_cents: 2450,
        taxonomy_id: 11,
        provenance: provenance_for_condition("very_good", None, chrono::Utc::now().year()).unwrap(),
        shipping_profile_id: None,
        readiness_state_id: Some(READINESS),
        return_policy_id: None,
        shop_section_id: None,
        tags: vec!["linen".into(), "summer dress".into()],
        materials: vec!["linen".into()],
        listing_type: None,
        should_auto_renew: None,
    }
}

fn rejected(e: &MarketplaceError) -> (u16, &str, &str) {
    match e {
        MarketplaceError::Rejected {
            status,
            code,
            message,
            ..
        } => (*status, code.as_str(), message.as_str()),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn pkce_connect_exchange_then_get_me_shop_and_profiles_work() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let tokens = sim.connect(&etsy).await;
    assert_eq!(tokens.user_id(), Some(12_345_678));
    assert_eq!(tokens.expires_in, 3600);
    assert!(!format!("{tokens:?}").contains(&tokens.access_token));

    let me = etsy.get_me(&tokens.access_token).await.unwrap();
    assert_eq!((me.user_id, me.shop_id), (12_345_678, Some(SHOP)));
    let shop = etsy.get_shop(&tokens.access_token, SHOP).await.unwrap();
    assert_eq!((shop.shop_id, shop.currency_code.as_str()), (SHOP, "EUR"));
    let profiles = etsy
        .shipping_profiles(&tokens.access_token, SHOP)
        .await
        .unwrap();
    assert_eq!(profiles.results[0].shipping_profile_id, SHIPPING);
    let ready = etsy
        .readiness_states(&tokens.access_token, SHOP)
        .await
        .unwrap();
    assert_eq!(ready.results[0].readiness_state_id, READINESS);
    let nodes = etsy.taxonomy_nodes(&tokens.access_token).await.unwrap();
    assert!(
        nodes
            .results
            .iter()
            .any(|n| n.children.iter().any(|c| c.id == 11))
    );
}

#[tokio::test]
async fn rate_limit_headers_are_recorded_from_every_answer() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    assert_eq!(etsy.rate_info(), None);
    let t = sim.connect(&etsy).await;
    // The token endpoint is not under /v3/application and carries no limit headers.
    assert_eq!(etsy.rate_info(), None);
    etsy.get_me(&t.access_token).await.unwrap();
    let first = etsy.rate_info().expect("limit headers");
    assert_eq!(first.limit_per_second, Some(1000));
    assert_eq!(first.limit_per_day, Some(10_000));
    etsy.get_shop(&t.access_token, SHOP).await.unwrap();
    let second = etsy.rate_info().unwrap();
    assert_eq!(
        second.remaining_today.unwrap() + 1,
        first.remaining_today.unwrap()
    );
}

#[tokio::test]
async fn a_wrong_verifier_is_auth_revoked_because_the_code_is_spent() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let (code, _) = sim.consent(&etsy, SCOPES).await;
    let other = Pkce::new();
    // 400 invalid_grant: the code is consumed by the failed attempt, so only a new consent
    // helps, which is what AuthRevoked asks of the seller.
    let e = etsy
        .exchange_code(&code, &other.verifier)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MarketplaceError::AuthRevoked { detail, .. } if detail.contains("code_verifier")),
        "{e:?}"
    );
    let (code, pkce) = sim.consent(&etsy, SCOPES).await;
    etsy.exchange_code(&code, &pkce.verifier).await.unwrap();
    let again = etsy.exchange_code(&code, &pkce.verifier).await.unwrap_err();
    assert_eq!(again.class(), "auth_revoked", "a code is single use");
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_is_then_auth_revoked() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let first = sim.connect(&etsy).await;
    let second = etsy.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    etsy.get_me(&second.access_token).await.unwrap();

    let e = etsy.refresh(&first.refresh_token).await.unwrap_err();
    assert!(matches!(e, MarketplaceError::AuthRevoked { .. }), "{e:?}");
    // The rotated one keeps working, once.
    let third = etsy.refresh(&second.refresh_token).await.unwrap();
    etsy.get_me(&third.access_token).await.unwrap();

    // A revoked grant (password change): the next refresh is AuthRevoked too.
    sim.post("/_admin/tokens/revoke", json!({})).await;
    let e = etsy.refresh(&third.refresh_token).await.unwrap_err();
    assert!(
        matches!(&e, MarketplaceError::AuthRevoked { detail, .. } if detail.contains("revoked")),
        "{e:?}"
    );
    // Its access tokens went with it: 401 invalid_token. That alone reads as "refresh first";
    // the refresh (above) is what reveals the grant is gone.
    let e = etsy.get_me(&third.access_token).await.unwrap_err();
    assert_eq!(e.class(), "auth_expired", "{e:?}");
}

#[tokio::test]
async fn an_expired_access_token_is_auth_expired_and_a_refresh_cures_it() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let t = sim.connect(&etsy).await;
    sim.post("/_admin/tokens/expire", json!({"token": t.access_token}))
        .await;
    let e = etsy.get_me(&t.access_token).await.unwrap_err();
    assert_eq!(
        e,
        MarketplaceError::AuthExpired {
            marketplace: "etsy"
        }
    );
    let fresh = etsy.refresh(&t.refresh_token).await.unwrap();
    etsy.get_me(&fresh.access_token).await.unwrap();
}

#[tokio::test]
async fn a_missing_scope_or_a_bad_api_key_is_rejected() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let (code, pkce) = sim.consent(&etsy, &["listings_r"]).await;
    let t = etsy.exchange_code(&code, &pkce.verifier).await.unwrap();
    let e = etsy.get_me(&t.access_token).await.unwrap_err();
    assert_eq!(rejected(&e).0, 403);
    assert_eq!(rejected(&e).1, "insufficient_scope");

    // A wrong shared secret: 403 {"error": "Invalid API key"}, a configuration problem no
    // retry or reconnect fixes.
    let wrong = EtsyClient::new(&sim.settings("not-the-secret"));
    let e = wrong.get_me(&t.access_token).await.unwrap_err();
    assert_eq!(rejected(&e).0, 403);
    assert!(rejected(&e).2.contains("API key"), "{e:?}");
    // Without the secret at all, Etsy names the missing part.
    let bare = reqwest::Client::new()
        .get(format!("{}/v3/application/users/me", sim.url))
        .header("x-api-key", KEYSTRING)
        .bearer_auth(&t.access_token);
    let e = marketplaces::send(marketplaces::Marketplace::Etsy, bare)
        .await
        .unwrap_err();
    assert_eq!(rejected(&e).0, 403);
    assert!(
        rejected(&e).2.contains("Shared secret is required"),
        "{e:?}"
    );
}

#[tokio::test]
async fn drafts_are_created_and_a_bad_title_is_rejected_naming_the_field() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let t = sim.connect(&etsy).await;
    let l = etsy
        .create_draft_listing(&t.access_token, SHOP, &draft("Robe en lin: taille M"))
        .await
        .unwrap();
    assert_eq!(l.state, ListingState::Draft);
    assert_eq!(l.price.cents(), 2450);
    assert_eq!(l.tags, ["linen", "summer dress"]);
    assert_eq!(l.who_made.as_deref(), Some("someone_else"));
    assert_eq!(l.is_supply, Some(false));

    // The local rule and Etsy agree, and both name the field.
    let bad = "50% off: 100% linen";
    assert_eq!(validate_title(bad).unwrap_err().field, "title");
    let e = etsy
        .create_draft_listing(&t.access_token, SHOP, &draft(bad))
        .await
        .unwrap_err();
    let (status, code, message) = rejected(&e);
    assert_eq!((status, code), (400, "invalid_characters"));
    assert!(message.contains("/title"), "{message}");

    // A stale when_made (last year's enum) is refused by Etsy's rolling enum.
    let year = chrono::Utc::now().year();
    let mut stale = draft("Linen dress");
    stale.provenance = Provenance {
        who_made: WhoMade::SomeoneElse,
        when_made: format!("2020_{}", year - 1),
        is_supply: false,
    };
    let e = etsy
        .create_draft_listing(&t.access_token, SHOP, &stale)
        .await
        .unwrap_err();
    assert!(rejected(&e).2.contains("when_made"), "{e:?}");
    // The derived value is current.
    assert_eq!(when_made(year, year), format!("2020_{year}"));
}

#[tokio::test]
async fn activation_needs_an_image_and_a_shipping_profile() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let t = sim.connect(&etsy).await;
    let tok = t.access_token.as_str();
    let l = etsy
        .create_draft_listing(tok, SHOP, &draft("Linen dress"))
        .await
        .unwrap();

    let e = etsy
        .update_listing(tok, SHOP, l.listing_id, &ListingUpdate::activate())
        .await
        .unwrap_err();
    let (status, code, message) = rejected(&e);
    assert_eq!((status, code), (400, "array_too_short"));
    assert!(
        message.contains("/images") && message.contains("/shipping_profile_id"),
        "{message}"
    );

    let img = etsy
        .upload_image(
            tok,
            SHOP,
            l.listing_id,
            vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3],
            "front.jpg",
            1,
        )
        .await
        .unwrap();
    assert_eq!((img.listing_id, img.rank), (l.listing_id, 1));
    let e = etsy
        .update_listing(tok, SHOP, l.listing_id, &ListingUpdate::activate())
        .await
        .unwrap_err();
    assert!(!rejected(&e).2.contains("/images"), "{e:?}");

    let update = ListingUpdate {
        shipping_profile_id: Some(SHIPPING),
        title: Some("Linen summer dress".into()),
        ..ListingUpdate::activate()
    };
    let active = etsy
        .update_listing(tok, SHOP, l.listing_id, &update)
        .await
        .unwrap();
    assert_eq!(active.state, ListingState::Active);
    assert_eq!(active.title, "Linen summer dress");

    let got = etsy.get_listing(tok, l.listing_id).await.unwrap();
    assert_eq!(got.images.map(|i| i.len()), Some(1));
    let page = etsy
        .listings_by_shop(tok, SHOP, ListingState::Active, 10, 0)
        .await
        .unwrap();
    assert_eq!(page.count, 1);
    assert_eq!(page.results[0].listing_id, l.listing_id);

    etsy.delete_listing(tok, l.listing_id).await.unwrap();
    let e = etsy.get_listing(tok, l.listing_id).await.unwrap_err();
    assert_eq!(e.class(), "not_found");
    let e = etsy.delete_listing(tok, l.listing_id).await.unwrap_err();
    assert_eq!(e.class(), "not_found");
}

#[tokio::test]
async fn inventory_update_round_trips_sku_price_and_quantity() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let t = sim.connect(&etsy).await;
    let tok = t.access_token.as_str();
    let l = etsy
        .create_draft_listing(tok, SHOP, &draft("Linen dress"))
        .await
        .unwrap();

    let put = etsy
        .update_inventory(
            tok,
            l.listing_id,
            &InventoryUpdate::single("SKU-42", 1999, 3, Some(READINESS)),
        )
        .await
        .unwrap();
    let got = etsy.get_inventory(tok, l.listing_id).await.unwrap();
    for inv in [&put, &got] {
        assert_eq!(inv.products.len(), 1);
        assert_eq!(inv.products[0].sku, "SKU-42");
        let o = &inv.products[0].offerings[0];
        assert_eq!((o.price.cents(), o.quantity, o.is_enabled), (1999, 3, true));
        assert_eq!(o.readiness_state_id, Some(READINESS));
    }
    let listing = etsy.get_listing(tok, l.listing_id).await.unwrap();
    assert_eq!((listing.quantity, listing.price.cents()), (3, 1999));

    // Change one thing on what Etsy has, send it back.
    let mut next = InventoryUpdate::from(&got);
    next.products[0].offerings[0].quantity = 1;
    etsy.update_inventory(tok, l.listing_id, &next)
        .await
        .unwrap();
    let got = etsy.get_inventory(tok, l.listing_id).await.unwrap();
    assert_eq!(got.products[0].sku, "SKU-42");
    assert_eq!(got.products[0].offerings[0].quantity, 1);
    assert_eq!(got.products[0].offerings[0].price.cents(), 1999);

    // Shape errors come back as Rejected with Etsy's path.
    let mut bad = InventoryUpdate::single("SKU-42", 1999, 1, None);
    bad.products[0].offerings[0].readiness_state_id = None;
    let e = etsy
        .update_inventory(tok, l.listing_id, &bad)
        .await
        .unwrap_err();
    assert!(rejected(&e).2.contains("readiness_state_id"), "{e:?}");
}

#[tokio::test]
async fn receipts_come_back_with_line_items_and_min_last_modified_paging() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let t = sim.connect(&etsy).await;
    let tok = t.access_token.as_str();
    let l = etsy
        .create_draft_listing(tok, SHOP, &draft("Linen dress"))
        .await
        .unwrap();
    etsy.update_inventory(
        tok,
        l.listing_id,
        &InventoryUpdate::single("SKU-7", 1000, 20, Some(READINESS)),
    )
    .await
    .unwrap();

    let now = chrono::Utc::now().timestamp();
    let old = now - 10 * 86_400;
    let mut ids = Vec::new();
    for created in [Some(old), Some(old + 60), Some(old + 120), None, None, None] {
        let mut body =
            json!({"transactions": [{"listing_id": l.listing_id, "quantity": 2, "sku": "SKU-7"}]});
        if let Some(c) = created {
            body["created_timestamp"] = json!(c);
        }
        let r = sim.post("/_admin/receipts", body).await;
        ids.push(r["receipt_id"].as_u64().unwrap());
    }
    // An old receipt ships (bumps updated_timestamp); another is canceled without a bump, the
    // gap Etsy is known for.
    sim.post(
        &format!("/_admin/receipts/{}", ids[0]),
        json!({"is_shipped": true}),
    )
    .await;
    sim.post(
        &format!("/_admin/receipts/{}", ids[1]),
        json!({"status": "canceled", "touch": false}),
    )
    .await;

    let since = now - 3600;
    // Page by hand, two at a time.
    let mut seen = Vec::new();
    let mut q = ReceiptQuery {
        min_last_modified: Some(since),
        sort_on: Some(ReceiptSort::Updated),
        sort_order: Some(SortOrder::Asc),
        limit: Some(2),
        offset: Some(0),
        ..ReceiptQuery::default()
    };
    loop {
        let page = etsy.receipts(tok, SHOP, &q).await.unwrap();
        assert_eq!(page.count, 4);
        if page.results.is_empty() {
            break;
        }
        assert!(page.results.len() <= 2);
        seen.extend(page.results);
        q.offset = Some(q.offset.unwrap() + 2);
    }
    let mut got: Vec<u64> = seen.iter().map(|r| r.receipt_id).collect();
    got.sort();
    let mut want = vec![ids[0], ids[3], ids[4], ids[5]];
    want.sort();
    assert_eq!(got, want);
    let r = &seen[0];
    assert_eq!(r.transactions.len(), 1);
    let tx = &r.transactions[0];
    assert_eq!(
        (tx.listing_id, tx.sku.as_deref(), tx.quantity),
        (Some(l.listing_id), Some("SKU-7"), 2)
    );

    // The helper pages through all of them, each once, oldest change first.
    let all = etsy
        .receipts_modified_since(tok, SHOP, since)
        .await
        .unwrap();
    let mut ids_all: Vec<u64> = all.iter().map(|r| r.receipt_id).collect();
    assert!(
        all.windows(2)
            .all(|w| w[0].updated_timestamp <= w[1].updated_timestamp)
    );
    ids_all.sort();
    assert_eq!(ids_all, want);
    assert!(
        !ids_all.contains(&ids[1]),
        "a cancel without a bump is missed"
    );

    // min_created finds new receipts; stock went down by 6 × 2.
    let created = etsy
        .receipts(
            tok,
            SHOP,
            &ReceiptQuery {
                min_created: Some(since),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.count, 3);
    let listing = etsy.get_listing(tok, l.listing_id).await.unwrap();
    assert_eq!(listing.quantity, 20 - 12);
}

#[tokio::test]
async fn limits_and_throttling_are_rate_limited_with_retry_after() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let t = sim.connect(&etsy).await;
    let tok = t.access_token.as_str();

    // The simulator's own per-second window.
    sim.admin(
        reqwest::Method::PUT,
        "/_admin/limits",
        json!({"per_second": 2, "per_day": 10000}),
    )
    .await;
    let mut outcome = None;
    for _ in 0..5 {
        if let Err(e) = etsy.get_me(tok).await {
            outcome = Some(e);
            break;
        }
    }
    match outcome.expect("the third call in a second is refused") {
        MarketplaceError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("{other:?}"),
    }
    let info = etsy.rate_info().unwrap();
    assert_eq!(info.limit_per_second, Some(2));

    // The per-day window: 429 with retry-after until the window frees.
    sim.admin(
        reqwest::Method::PUT,
        "/_admin/limits",
        json!({"per_second": 100, "per_day": 1}),
    )
    .await;
    etsy.get_me(tok).await.unwrap();
    let e = etsy.get_me(tok).await.unwrap_err();
    assert!(
        matches!(e, MarketplaceError::RateLimited { retry_after: Some(d), .. } if d > Duration::from_secs(60)),
        "{e:?}"
    );

    // A 429 storm injected in front of the API.
    sim.admin(
        reqwest::Method::PUT,
        "/_admin/limits",
        json!({"per_second": 100, "per_day": 10000}),
    )
    .await;
    sim.post(
        "/_admin/faults",
        json!({"throttle_next": 3, "retry_after": 7}),
    )
    .await;
    for _ in 0..3 {
        let e = etsy.get_shop(tok, SHOP).await.unwrap_err();
        assert_eq!(
            e,
            MarketplaceError::RateLimited {
                marketplace: "etsy",
                retry_after: Some(Duration::from_secs(7)),
                detail: "Too many requests".into()
            }
        );
    }
    etsy.get_shop(tok, SHOP).await.unwrap();
}

#[tokio::test]
async fn server_errors_and_lost_connections_are_unavailable() {
    let sim = Sim::start().await;
    let etsy = sim.client();
    let t = sim.connect(&etsy).await;
    let tok = t.access_token.as_str();

    sim.post(
        "/_admin/faults",
        json!({"fail_next": 1, "fail_status": 503}),
    )
    .await;
    let e = etsy.get_me(tok).await.unwrap_err();
    assert!(
        matches!(&e, MarketplaceError::Unavailable { detail, .. } if detail.contains("503")),
        "{e:?}"
    );
    etsy.get_me(tok).await.unwrap();

    // The token endpoint's transient 500 is retried, not a lost grant.
    sim.post(
        "/_admin/faults",
        json!({"fail_next": 1, "path_prefix": "/v3/public/oauth/token"}),
    )
    .await;
    let e = etsy.refresh(&t.refresh_token).await.unwrap_err();
    assert_eq!(e.class(), "unavailable");
    etsy.refresh(&t.refresh_token).await.unwrap();

    sim.post("/_admin/faults", json!({"drop_next": 1})).await;
    let e = etsy.get_me(tok).await.unwrap_err();
    assert_eq!(e.class(), "unavailable");
}
