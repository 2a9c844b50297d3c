//! Connecting marketplace accounts: eBay and Etsy (PKCE) consent flows against the simulators,
//! with single-use, expiring `state` values and tokens sealed at rest.

use std::collections::BTreeMap;

use integration::{Api, TestDb, free_port, simulators};
use serde_json::json;

struct Setup {
    db: TestDb,
    api: Api,
    _sims: sim::Running,
}

async fn setup() -> Setup {
    let db = TestDb::new().await;
    let port = free_port();
    let (sims, env) = simulators(port).await;
    let env: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = Api::spawn_on(port, &db, &env).await;
    Setup {
        db,
        api,
        _sims: sims,
    }
}

impl Setup {
    /// Follows the consent page's redirect by hand: the callback URL with code and state.
    async fn consent(&self, marketplace: &str) -> reqwest::Url {
        let (s, v) = self
            .api
            .get(&format!("/v1/connections/{marketplace}/connect"))
            .await;
        assert_eq!(s, 200, "{v}");
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = no_redirect
            .get(v["consent_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap()
    }
}

#[tokio::test]
async fn an_etsy_shop_connects_with_pkce_and_its_tokens_are_sealed() {
    let s = setup().await;
    let (_, v) = s.api.get("/v1/connections/etsy/connect").await;
    let url = reqwest::Url::parse(v["consent_url"].as_str().unwrap()).unwrap();
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    let verifier: String = sqlx::query_scalar("SELECT verifier FROM oauth_states WHERE state = $1")
        .bind(&q["state"])
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(
        !url.as_str().contains(&verifier),
        "the verifier never leaves the server"
    );

    let r = s.api.http.get(url).send().await.unwrap();
    let (status, account) = Api::read(r).await;
    assert_eq!(
        (
            status,
            account["status"].clone(),
            account["marketplace"].clone()
        ),
        (200, json!("connected"), json!("etsy")),
        "{account}"
    );
    let (shop, raw): (Option<String>, Vec<u8>) = sqlx::query_as(
        "SELECT shop_id, access_token FROM marketplace_accounts WHERE marketplace = 'etsy'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(shop.as_deref(), Some("23456789"));
    // Etsy access tokens start with the user id: none of it is stored in clear.
    assert!(
        !String::from_utf8_lossy(&raw).contains("12345678."),
        "token stored in clear"
    );
    let (_, list) = s.api.get("/v1/connections").await;
    assert!(
        !list.to_string().contains("12345678."),
        "no token in the API: {list}"
    );
}

#[tokio::test]
async fn a_state_works_once_and_a_tampered_or_expired_one_never() {
    let s = setup().await;
    let callback = s.consent("ebay").await;
    let path = format!("{}?{}", callback.path(), callback.query().unwrap());
    assert_eq!(s.api.get(&path).await.0, 200);
    let (replay, v) = s.api.get(&path).await;
    assert_eq!(replay, 400, "a replayed state is refused: {v}");
    assert!(v["detail"].as_str().unwrap().contains("state"));

    let fresh = s.consent("ebay").await;
    let q: BTreeMap<String, String> = fresh.query_pairs().into_owned().collect();
    let tampered = format!(
        "/oauth/ebay/callback?code={}&state={}x",
        urlencode(&q["code"]),
        q["state"]
    );
    assert_eq!(s.api.get(&tampered).await.0, 400);

    // A state from another marketplace's flow is refused too.
    let etsy = s.consent("etsy").await;
    let eq: BTreeMap<String, String> = etsy.query_pairs().into_owned().collect();
    assert_eq!(
        s.api
            .get(&format!(
                "/oauth/ebay/callback?code=x&state={}",
                eq["state"]
            ))
            .await
            .0,
        400
    );

    // A declined consent comes back without code and state.
    let (declined, v) = s.api.get("/oauth/ebay/callback?error=access_denied").await;
    assert_eq!(declined, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("declined"));

    // Older than ten minutes: expired.
    sqlx::query(
        "UPDATE oauth_states SET created_at = now() - interval '11 minutes' WHERE state = $1",
    )
    .bind(&q["state"])
    .execute(&s.db.pool)
    .await
    .unwrap();
    let late = format!(
        "/oauth/ebay/callback?code={}&state={}",
        urlencode(&q["code"]),
        q["state"]
    );
    assert_eq!(s.api.get(&late).await.0, 400);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM marketplace_accounts")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "only the first, valid callback connected an account");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
