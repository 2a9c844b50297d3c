//! Publishing for real, end to end: API → Postgres → worker process → the eBay simulator.

use std::time::Duration;

use integration::{Api, TestDb, free_port, pid_of_worker, simulators, worker};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

struct Setup {
    db: TestDb,
    api: Api,
    sims: sim::Running,
    workers: Vec<integration::Proc>,
}

async fn setup() -> Setup {
    let db = TestDb::new().await;
    let port = free_port();
    let (sims, mut env) = simulators(port).await;
    env.push((
        "STOFLOW_KINDS__PUBLISH_LISTING__BACKOFF_BASE_MS",
        "200".into(),
    ));
    env.push((
        "STOFLOW_KINDS__PUBLISH_LISTING__BACKOFF_CAP_MS",
        "500".into(),
    ));
    let env: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = Api::spawn_on(port, &db, &env).await;
    let workers = vec![worker(&db, &env), worker(&db, &env)];
    Setup {
        db,
        api,
        sims,
        workers,
    }
}

impl Setup {
    /// The seller connects eBay: our consent URL → the simulator's consent page → our callback.
    async fn connect_ebay(&self) {
        let (s, v) = self.api.get("/v1/connections/ebay/connect").await;
        assert_eq!(s, 200, "{v}");
        let r = self
            .api
            .http
            .get(v["consent_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let (s, account) = Api::read(r).await;
        assert_eq!(
            (s, account["status"].clone()),
            (200, json!("connected")),
            "{account}"
        );
    }

    async fn product(&self, title: &str) -> i64 {
        let body = json!({"title": title, "condition": "good", "price": "20", "images": ["https://img.example/1.jpg"], "brand": "Acme"});
        let (s, p) = self.api.post("/v1/products", &body).await;
        assert_eq!(s, 201, "{p}");
        p["id"].as_i64().unwrap()
    }

    async fn publish(&self, product: i64) -> i64 {
        let (s, v) = self
            .api
            .post(
                &format!("/v1/products/{product}/publish"),
                &json!({"marketplaces": ["ebay"]}),
            )
            .await;
        assert_eq!(s, 202, "{v}");
        v["jobs"][0]["job_id"].as_i64().unwrap()
    }

    async fn sim_admin(&self, path: &str, body: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.sims.ebay_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}");
    }

    /// Offers the simulator holds, from its own state dump.
    async fn sim_offers(&self) -> Vec<Value> {
        let state: Value = reqwest::get(format!("{}/_admin/state", self.sims.ebay_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let offers = &state["offers"];
        offers
            .as_array()
            .cloned()
            .or_else(|| offers.as_object().map(|o| o.values().cloned().collect()))
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn a_product_published_to_ebay_becomes_exactly_one_listing_with_its_remote_ids() {
    let s = setup().await;
    s.connect_ebay().await;
    let product = s.product("Wool scarf").await;
    let job = s.publish(product).await;
    let done = s.api.wait_state(job, "done", T).await;
    let listing_id = done["result"]["listing_id"].as_str().unwrap().to_string();

    let offers = s.sim_offers().await;
    assert_eq!(offers.len(), 1, "{offers:?}");
    let (status, remote): (String, Option<String>) =
        sqlx::query_as("SELECT status, remote_listing_id FROM listings WHERE product_id = $1 AND marketplace = 'ebay'")
            .bind(product)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), remote.as_deref()),
        ("published", Some(listing_id.as_str()))
    );
    // Tokens are sealed at rest: the raw column holds no token text.
    let raw: Vec<u8> = sqlx::query_scalar("SELECT access_token FROM marketplace_accounts")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains("v^1.1"),
        "token stored in clear"
    );
}

#[tokio::test]
async fn a_5xx_in_the_middle_of_publishing_still_gives_one_listing() {
    let s = setup().await;
    s.connect_ebay().await;
    let product = s.product("Lamp").await;
    // The first publishOffer fails after the offer was created: the retry must reuse it.
    s.sim_admin(
        "/_admin/faults",
        json!({"fail_next": 1, "fail_status": 500, "path_prefix": "/sell/inventory/v1/offer/"}),
    )
    .await;
    let job = s.publish(product).await;
    let done = s.api.wait_state(job, "done", T).await;
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["errors"][0]["class"], "unavailable");
    assert_eq!(s.sim_offers().await.len(), 1);
}

#[tokio::test]
async fn a_product_ebay_would_refuse_is_dead_at_once_with_the_field_named() {
    let s = setup().await;
    s.connect_ebay().await;
    let long = "x".repeat(90);
    let product = s.product(&long).await;
    let job = s.publish(product).await;
    let dead = s.api.wait_state(job, "dead", T).await;
    assert_eq!(dead["attempt"], 1, "no retry storm");
    assert_eq!(dead["last_error"]["class"], "rejected");
    assert!(
        dead["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("ebay title"),
        "{dead}"
    );
    assert!(s.sim_offers().await.is_empty());
    let status: String = sqlx::query_scalar("SELECT status FROM listings WHERE product_id = $1")
        .bind(product)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "failed");
}

#[tokio::test]
async fn without_a_connected_account_publishing_fails_with_a_clear_reason() {
    let s = setup().await;
    let product = s.product("Mug").await;
    let job = s.publish(product).await;
    let dead = s.api.wait_state(job, "dead", T).await;
    assert_eq!(dead["last_error"]["class"], "not_connected");
}

#[tokio::test]
async fn a_worker_killed_mid_publish_still_gives_one_listing() {
    let mut s = setup().await;
    s.connect_ebay().await;
    let product = s.product("Vase").await;
    // Slow publishOffer down so the kill lands after the offer exists and before the answer.
    s.sim_admin(
        "/_admin/faults",
        json!({"latency_ms": 3000, "path_prefix": "/sell/inventory/v1/offer/"}),
    )
    .await;
    let job = s.publish(product).await;
    let running = s.api.wait_state(job, "running", T).await;
    // The offer id is recorded just before publishOffer is called (which now takes 3 s).
    integration::eventually(T, "offer recorded", || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT remote_offer_id FROM listings WHERE product_id = $1",
        )
        .bind(product)
        .fetch_optional(&s.db.pool)
        .await
        .unwrap()
        .flatten()
        .is_some()
    })
    .await;
    let owner = pid_of_worker(running["worker"].as_str().unwrap());
    let victim = s
        .workers
        .iter_mut()
        .find(|w| w.pid() == owner)
        .expect("the running worker");
    victim.kill9();
    s.sim_admin("/_admin/faults", json!({})).await;

    let done = s.api.wait_state(job, "done", T).await;
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["errors"][0]["class"], "rescued");
    assert_eq!(s.sim_offers().await.len(), 1, "the retry reused the offer");
    // The retry's createOffer was answered "exists" (25002): the kill fell after the offer.
    let log: Value = reqwest::get(format!("{}/_admin/requests", s.sims.ebay_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let creates: Vec<u64> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/sell/inventory/v1/offer")
        .filter_map(|r| r["status"].as_u64())
        .collect();
    assert_eq!(creates, vec![201, 400], "{creates:?}");
    let listings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM listings WHERE product_id = $1 AND status = 'published'",
    )
    .bind(product)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(listings, 1);
}
