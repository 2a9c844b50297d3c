use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{body, client, location_query, multipart, sims};

const VERIFIER: &str = "sim-verifier-0123456789abcdefghijklmnopqrstuvwxyz";

fn key() -> String {
    let s = sim::etsy::Settings::default();
    format!("{}:{}", s.keystring, s.shared_secret)
}

async fn consent(c: &reqwest::Client, base: &str, verifier: &str) -> String {
    let s = sim::etsy::Settings::default();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let r = c
        .get(format!("{base}/oauth/connect"))
        .query(&[
            ("response_type", "code"),
            ("client_id", &s.keystring),
            ("redirect_uri", &s.redirect_uris[0]),
            (
                "scope",
                "listings_r listings_w listings_d shops_r shops_w transactions_r",
            ),
            ("state", "xyz"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let (target, q) = location_query(&r);
    assert_eq!(target, s.redirect_uris[0]);
    assert_eq!(q["state"], "xyz");
    q["code"].clone()
}

async fn exchange(
    c: &reqwest::Client,
    base: &str,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    let s = sim::etsy::Settings::default();
    c.post(format!("{base}/v3/public/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &s.keystring),
            ("redirect_uri", &s.redirect_uris[0]),
            ("code", code),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
}

async fn refresh(c: &reqwest::Client, base: &str, rt: &str) -> reqwest::Response {
    c.post(format!("{base}/v3/public/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &sim::etsy::Settings::default().keystring),
            ("refresh_token", rt),
        ])
        .send()
        .await
        .unwrap()
}

pub async fn token(c: &reqwest::Client, base: &str) -> String {
    let code = consent(c, base, VERIFIER).await;
    body(exchange(c, base, &code, VERIFIER).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn app(base: &str, path: &str) -> String {
    format!("{base}/v3/application{path}")
}

#[tokio::test]
async fn pkce_flow_rejects_wrong_verifier_and_rotates_refresh_tokens() {
    let sims = sims().await;
    let (c, base) = (client(), sims.etsy_url.clone());
    let code = consent(&c, &base, VERIFIER).await;
    let r = exchange(
        &c,
        &base,
        &code,
        "another-verifier-0123456789abcdefghijklmnopqrstuv",
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await["error"], "invalid_grant");

    let code = consent(&c, &base, VERIFIER).await;
    let r = exchange(&c, &base, &code, VERIFIER).await;
    assert_eq!(r.status(), 200);
    let t = body(r).await;
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["access_token"].as_str().unwrap().starts_with("12345678."));
    let rt1 = t["refresh_token"].as_str().unwrap().to_string();

    let r = refresh(&c, &base, &rt1).await;
    assert_eq!(r.status(), 200);
    let rt2 = body(r).await["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    let old = refresh(&c, &base, &rt1).await;
    assert_eq!(old.status(), 400);
    assert_eq!(body(old).await["error"], "invalid_grant");
    assert_eq!(refresh(&c, &base, &rt2).await.status(), 200);
}

#[tokio::test]
async fn x_api_key_must_carry_the_shared_secret() {
    let sims = sims().await;
    let (c, base) = (client(), sims.etsy_url.clone());
    let url = app(&base, "/openapi-ping");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        body(r).await["error"]
            .as_str()
            .unwrap()
            .contains("keystring:shared_secret")
    );
    let r = c
        .get(&url)
        .header("x-api-key", sim::etsy::Settings::default().keystring)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        body(r).await["error"],
        "Shared secret is required in x-api-key header."
    );
    let r = c
        .get(&url)
        .header(
            "x-api-key",
            format!("{}:wrong", sim::etsy::Settings::default().keystring),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(&url).header("x-api-key", key()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(body(r).await["application_id"].is_u64());
}

fn draft(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let s = sim::etsy::Settings::default();
    let mut f: Vec<(&str, String)> = vec![
        ("quantity", "2".into()),
        ("title", "Linen summer dress".into()),
        ("description", "Soft linen".into()),
        ("price", "45.00".into()),
        ("who_made", "i_did".into()),
        ("when_made", "made_to_order".into()),
        ("is_supply", "false".into()),
        ("taxonomy_id", "11".into()),
        ("readiness_state_id", (s.shop_id + 300).to_string()),
    ];
    for (k, v) in extra {
        f.retain(|(x, _)| x != k);
        if !v.is_empty() {
            f.push((k, v.to_string()));
        }
    }
    f
}

async fn create(
    c: &reqwest::Client,
    base: &str,
    tok: &str,
    form: &[(&str, String)],
) -> reqwest::Response {
    let shop = sim::etsy::Settings::default().shop_id;
    c.post(app(base, &format!("/shops/{shop}/listings")))
        .header("x-api-key", key())
        .bearer_auth(tok)
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn create_draft_listing_validates_fields() {
    let sims = sims().await;
    let (c, base) = (client(), sims.etsy_url.clone());
    let tok = token(&c, &base).await;

    let r = create(&c, &base, &tok, &draft(&[("title", "")])).await;
    assert_eq!(r.status(), 400);
    assert!(body(r).await["error"].as_str().unwrap().contains("title"));

    let r = create(&c, &base, &tok, &draft(&[("who_made", "my_cat")])).await;
    assert_eq!(r.status(), 400);
    assert!(
        body(r).await["error"]
            .as_str()
            .unwrap()
            .contains("who_made")
    );

    let r = create(&c, &base, &tok, &draft(&[("when_made", "2020_2024")])).await;
    assert_eq!(r.status(), 400, "a stale year range is rejected");

    // Title rules come back in Etsy's array shape.
    let r = create(&c, &base, &tok, &draft(&[("title", "Cats & dogs & birds")])).await;
    assert_eq!(r.status(), 400);
    let e: Value = body(r).await;
    assert_eq!(e[0]["path"], "/title");
    let r = create(&c, &base, &tok, &draft(&[("title", "Dress $ sale")])).await;
    let e: Value = body(r).await;
    assert_eq!(e[0]["type"], "invalid_characters");

    let r = create(&c, &base, &tok, &draft(&[("tags", "linen,dress,Linen")])).await;
    assert_eq!(
        body(r).await["error"],
        "There was a problem with /tags : You may not have duplicate tags."
    );

    let r = create(&c, &base, &tok, &draft(&[])).await;
    assert_eq!(r.status(), 201);
    let l = body(r).await;
    assert_eq!(l["state"], "draft");
    assert_eq!(
        l["price"],
        json!({"amount": 4500, "divisor": 100, "currency_code": "EUR"})
    );
}

#[tokio::test]
async fn listing_activates_only_with_image_and_shipping_profile() {
    let sims = sims().await;
    let (c, base) = (client(), sims.etsy_url.clone());
    let tok = token(&c, &base).await;
    let shop = sim::etsy::Settings::default().shop_id;
    let id = body(create(&c, &base, &tok, &draft(&[])).await).await["listing_id"]
        .as_u64()
        .unwrap();
    let patch = |form: Vec<(&'static str, String)>| {
        c.patch(app(&base, &format!("/shops/{shop}/listings/{id}")))
            .header("x-api-key", key())
            .bearer_auth(&tok)
            .form(&form)
            .send()
    };

    let r = patch(vec![("state", "active".into())]).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = body(r).await;
    let paths: Vec<&str> = e
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/images", "/shipping_profile_id"]);

    let (ct, bytes) = multipart(&[("rank", "1")], "image", b"\xff\xd8\xff fake jpeg");
    let r = c
        .post(app(&base, &format!("/shops/{shop}/listings/{id}/images")))
        .header("x-api-key", key())
        .bearer_auth(&tok)
        .header("content-type", ct)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(body(r).await["listing_image_id"].is_u64());

    let r = patch(vec![("state", "active".into())]).await.unwrap();
    assert_eq!(r.status(), 400, "still no shipping profile");
    let r = patch(vec![
        ("state", "active".into()),
        ("shipping_profile_id", (shop + 100).to_string()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["state"], "active");

    let r = c
        .get(app(&base, &format!("/shops/{shop}/listings")))
        .query(&[("state", "active")])
        .header("x-api-key", key())
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["count"], 1);
}

#[tokio::test]
async fn rate_limit_headers_and_429_with_retry_after() {
    let sims = sims().await;
    let (c, base) = (client(), sims.etsy_url.clone());
    let url = app(&base, "/seller-taxonomy/nodes");
    let r = c.get(&url).header("x-api-key", key()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-limit-per-second"], "10");
    assert_eq!(r.headers()["x-remaining-this-second"], "9");
    assert_eq!(r.headers()["x-limit-per-day"], "10000");
    assert_eq!(r.headers()["x-remaining-today"], "9999");

    c.put(format!("{base}/_admin/limits"))
        .json(&json!({"per_second": 2, "per_day": 100}))
        .send()
        .await
        .unwrap();
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..3 {
        let r = c.get(&url).header("x-api-key", key()).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(retry.as_deref(), Some("1"));

    // Per day: a fresh window of 1 per day is spent after one call; retry-after is about a day.
    c.put(format!("{base}/_admin/limits"))
        .json(&json!({"per_second": 100, "per_day": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.get(&url)
            .header("x-api-key", key())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c.get(&url).header("x-api-key", key()).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-remaining-today"], "0");
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 86_000, "retry-after {secs}");
}

#[tokio::test]
async fn receipts_page_and_filter_by_created_and_last_modified() {
    let sims = sims().await;
    let (c, base) = (client(), sims.etsy_url.clone());
    let tok = token(&c, &base).await;
    let shop = sim::etsy::Settings::default().shop_id;
    let listing =
        body(create(&c, &base, &tok, &draft(&[("quantity", "10")])).await).await["listing_id"]
            .as_u64()
            .unwrap();
    let mut ids = Vec::new();
    for created in [1_700_000_000i64, 1_700_000_100, 1_700_000_200] {
        let r = c.post(format!("{base}/_admin/receipts"))
            .json(&json!({"transactions": [{"listing_id": listing, "quantity": 1}], "created_timestamp": created}))
            .send().await.unwrap();
        assert_eq!(r.status(), 201);
        ids.push(body(r).await["receipt_id"].as_u64().unwrap());
    }
    let get = |q: Vec<(&'static str, String)>| {
        c.get(app(&base, &format!("/shops/{shop}/receipts")))
            .query(&q)
            .header("x-api-key", key())
            .bearer_auth(&tok)
            .send()
    };
    let p1 = body(
        get(vec![
            ("limit", "2".into()),
            ("offset", "0".into()),
            ("sort_order", "asc".into()),
        ])
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(p1["count"], 3);
    assert_eq!(p1["results"].as_array().unwrap().len(), 2);
    assert_eq!(p1["results"][0]["receipt_id"], ids[0]);
    let p2 = body(
        get(vec![
            ("limit", "2".into()),
            ("offset", "2".into()),
            ("sort_order", "asc".into()),
        ])
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(p2["results"][0]["receipt_id"], ids[2]);

    let r = body(
        get(vec![("min_created", "1700000050".into())])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["count"], 2);

    let now = body(c.get(format!("{base}/_admin/clock")).send().await.unwrap()).await;
    assert!(now["now"].is_string());
    let cutoff = 1_700_000_300i64.max(chrono_now());
    c.post(format!("{base}/_admin/clock"))
        .json(&json!({"advance_secs": 10}))
        .send()
        .await
        .unwrap();
    c.post(format!("{base}/_admin/receipts/{}", ids[0]))
        .json(&json!({"is_shipped": true}))
        .send()
        .await
        .unwrap();
    let r = body(
        get(vec![("min_last_modified", cutoff.to_string())])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["count"], 1);
    assert_eq!(r["results"][0]["receipt_id"], ids[0]);
    assert_eq!(r["results"][0]["transactions"][0]["listing_id"], listing);

    let r = get(vec![("limit", "101".into())]).await.unwrap();
    assert_eq!(r.status(), 400);

    // Three sold of ten.
    let l = c
        .get(app(&base, &format!("/listings/{listing}")))
        .header("x-api-key", key())
        .send()
        .await
        .unwrap();
    assert_eq!(body(l).await["quantity"], 7);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
