//! Stoflow's existing browser extension (seed 002) against the platform, end to end: the seed's
//! own request and response examples, sent as written, with the seller's access token; the
//! extension's Vinted calls are made on the Vinted simulator, whose state is checked.

use std::time::{Duration, Instant};

use integration::{Platform, TEST_PASSWORD, client_with, ensure_user, eventually};
use plugin::{Config, Runner};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

// ---- seed 002, verbatim ----------------------------------------------------------------

/// "Plugin: GET /api/plugin/tasks" — the example answer.
const SEED_TASKS: &str = r#"[
  {
    "id": 456,
    "task_type": "vinted_publish",
    "payload": {
      "product_id": 123,
      "vinted_product_id": 789,
      "title": "Levi's 501 Jean Regular Taille 32 Très bon état Bleu Vintage 90s (A3) [123]",
      "description": "✨ Découvrez ce magnifique jean Levi's 501 vintage des années 90s !...",
      "price": 27.90,
      "mapped_attributes": {
        "brand_id": 53,
        "color_id": 12,
        "condition_id": 1,
        "size_id": 207
      },
      "product_data": {
        "brand": "Levi's",
        "category": "Jeans",
        "size": "32",
        "color": "Blue",
        "condition": "EXCELLENT",
        "images": "image1.jpg,image2.jpg,image3.jpg"
      }
    },
    "created_at": "2024-12-10T10:30:00Z"
  }
]"#;

/// "Format du Payload (VINTED_PUBLISH)".
const SEED_PAYLOAD: &str = r#"{
  "product_id": 123,
  "vinted_product_id": 789,
  "title": "Levi's 501 Jean Regular Taille 32 Très bon état Bleu Vintage 90s (A3) [123]",
  "description": "✨ Découvrez ce magnifique jean Levi's 501 vintage des années 90s !\n\n📋 Informations:\n• Marque: Levi's\n• Modèle: 501\n...",
  "price": 27.90,
  "mapped_attributes": {
    "brand_id": 53,
    "color_id": 12,
    "condition_id": 1,
    "size_id": 207,
    "category_id": null,
    "gender": "male",
    "is_bottom": true
  },
  "product_data": {
    "brand": "Levi's",
    "category": "Jeans",
    "size": "32",
    "color": "Blue",
    "condition": "EXCELLENT",
    "images": "image1.jpg,image2.jpg,image3.jpg"
  }
}"#;

/// "Exemple résultat SUCCESS".
const SEED_SUCCESS: &str = r#"{
  "success": true,
  "result": {
    "vinted_id": 987654321,
    "url": "https://vinted.fr/items/987654321",
    "image_ids": "123,456,789"
  }
}"#;

/// "Exemple résultat FAILED".
const SEED_FAILED: &str = r#"{
  "success": false,
  "error_message": "Brand not found on Vinted",
  "error_details": {
    "error_type": "mapping_error",
    "error_details": "Brand 'UnknownBrand' n'existe pas dans l'API Vinted"
  }
}"#;

/// "Exemple complet de Test", step 1: the product (POST /api/products there).
const SEED_PRODUCT: &str = r#"{
  "title": "Jean Levi's 501",
  "brand": "Levi's",
  "category": "Jeans",
  "condition": "EXCELLENT",
  "price": 25.00,
  "size": "32",
  "color": "Blue",
  "stock_quantity": 1
}"#;

/// Keys we answer as null where the seed shows a value: we keep no Vinted brand ids and no
/// gender (see jobs::extension).
const UNKNOWN: &[&str] = &["brand_id", "gender"];

/// Every key of the seed's example is in ours, with the same JSON type (null for [`UNKNOWN`]
/// keys, or where the seed has null); arrays are compared element by element.
fn assert_shape(seed: &Value, ours: &Value, path: &str) {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    match (seed, ours) {
        (Value::Object(s), Value::Object(o)) => {
            for (k, v) in s {
                let p = format!("{path}.{k}");
                let theirs = o
                    .get(k)
                    .unwrap_or_else(|| panic!("{p} missing from {ours}"));
                if UNKNOWN.contains(&k.as_str()) && theirs.is_null() {
                    continue;
                }
                assert_shape(v, theirs, &p);
            }
        }
        (Value::Array(s), Value::Array(o)) => {
            assert_eq!(s.len(), o.len(), "{path}: {ours}");
            for (i, (a, b)) in s.iter().zip(o).enumerate() {
                assert_shape(a, b, &format!("{path}[{i}]"));
            }
        }
        (Value::Null, _) => {}
        _ => assert_eq!(kind(seed), kind(ours), "{path}: seed {seed}, ours {ours}"),
    }
}

fn seed(text: &str) -> Value {
    serde_json::from_str(text).expect("seed example is JSON")
}

// ---- the extension's side ----------------------------------------------------------------

struct Ext<'a> {
    p: &'a Platform,
    http: reqwest::Client,
    vinted: Runner,
}

impl<'a> Ext<'a> {
    /// The extension of the seller whose access token is `token`, on the Vinted simulator.
    fn new(p: &'a Platform, token: &str) -> Self {
        // Only Runner::execute/sync_sales are used: the Vinted calls, with the seeded session.
        let cfg = Config::for_simulator(&p.api.base, "unused", &p.sims.vinted_url);
        Self {
            p,
            http: client_with(token),
            vinted: Runner::new(cfg),
        }
    }

    /// `GET /api/plugin/tasks?limit=10`, as the seed's poller.
    async fn tasks(&self) -> (u16, Value) {
        let r = self
            .http
            .get(self.p.api.url("/api/plugin/tasks?limit=10"))
            .send()
            .await
            .unwrap();
        integration::Api::read(r).await
    }

    /// Polls until a task comes; returns it.
    async fn next_task(&self) -> Value {
        self.next_task_within(T).await
    }

    async fn next_task_within(&self, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (s, v) = self.tasks().await;
            assert_eq!(s, 200, "{v}");
            if let Some(t) = v.as_array().and_then(|a| a.first()) {
                assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
                return t.clone();
            }
            assert!(Instant::now() < deadline, "no task for the extension");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn result(&self, id: i64, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.p.api.url(&format!("/api/plugin/tasks/{id}/result")))
            .json(body)
            .send()
            .await
            .unwrap();
        integration::Api::read(r).await
    }

    /// Runs a listing task on Vinted from its seed payload alone (as the seed's
    /// executeVintedPublish does); returns Vinted's item id.
    async fn execute(&self, task: &Value) -> u64 {
        let p = &task["payload"];
        let m = &p["mapped_attributes"];
        let d = &p["product_data"];
        let action = match task["task_type"].as_str().unwrap() {
            "vinted_publish" => "create_listing",
            "vinted_update" => "update_listing",
            "vinted_delete" => "delete_listing",
            other => panic!("not a listing task: {other}"),
        };
        let params = json!({
            "remote_id": p["vinted_id"], "title": p["title"], "description": p["description"],
            "brand": d["brand"], "catalog_id": m["category_id"], "package_size_id": m["package_size_id"],
            "price": {"amount": p["price"].as_f64().map(|x| format!("{x:.2}")), "currency_code": p["price_currency"]},
            "color_ids": [m["color_id"]], "size_id": m["size_id"], "status_id": m["condition_id"],
            "photo_urls": d["images"].as_str().map(|s| s.split(',').collect::<Vec<_>>()),
        });
        let (id, _) = self
            .vinted
            .execute(action, &params)
            .await
            .unwrap_or_else(|f| panic!("Vinted refused {task}: {f:?}"));
        id.unwrap().parse().unwrap()
    }
}

async fn setup(extra: &[(&'static str, &str)]) -> Platform {
    let mut settings = vec![
        ("STOFLOW_PLUGIN__BACKOFF_BASE_MS", "100"),
        ("STOFLOW_PLUGIN__BACKOFF_CAP_MS", "200"),
    ];
    settings.extend_from_slice(extra);
    let p = Platform::start(1, &settings).await;
    // The simulator's seeded Vinted session is this user's.
    p.connect_vinted("87654321", "stoflow_seller").await;
    p
}

/// The seed's product, as our catalogue takes it: condition on Vinted's scale (EXCELLENT →
/// very_good), stock as quantity, a description and photos (Vinted requires both).
async fn seed_product(p: &Platform) -> i64 {
    let s = seed(SEED_PRODUCT);
    p.product(json!({
        "title": s["title"], "brand": s["brand"], "category": s["category"],
        "condition": "very_good", "price": format!("{:.2}", s["price"].as_f64().unwrap()),
        "size": s["size"], "color": s["color"], "stock_quantity": s["stock_quantity"],
        "description": "Jean Levi's 501 vintage, very good condition.",
        "images": ["https://img.example/1.jpg", "https://img.example/2.jpg"],
    }))
    .await
}

async fn sim_item(p: &Platform, id: u64) -> Option<Value> {
    let state = p.sim_get("vinted", "/_admin/state").await;
    state["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"].as_u64() == Some(id))
        .cloned()
}

#[tokio::test]
async fn the_seed_examples_publish_update_and_delete_a_vinted_item() {
    let p = setup(&[]).await;
    let ext = Ext::new(&p, &p.api.seller_login.access_token);
    let product = seed_product(&p).await;
    let job = p.publish(product, &["vinted"]).await[0];

    // The task list has the seed's shape, task and payload alike.
    let task = ext.next_task().await;
    assert_shape(&seed(SEED_TASKS)[0], &task, "task");
    assert_shape(&seed(SEED_PAYLOAD), &task["payload"], "payload");
    assert_eq!(task["task_type"], "vinted_publish");
    assert_eq!(task["payload"]["product_id"], product);
    assert_eq!(task["payload"]["price"], json!(25.0));
    assert_eq!(task["payload"]["title"], "Jean Levi's 501");
    assert_eq!(task["payload"]["product_data"]["category"], "Jeans");
    assert_eq!(task["payload"]["mapped_attributes"]["is_bottom"], true);
    assert_eq!(task["payload"]["mapped_attributes"]["condition_id"], 2);
    // Fetched means executing: the next poll does not hand it out again.
    let (_, again) = ext.tasks().await;
    assert_eq!(again, json!([]));

    // The extension publishes on Vinted, then posts the seed's SUCCESS example with its ids.
    let item = ext.execute(&task).await;
    let stored = sim_item(&p, item)
        .await
        .expect("the simulator stores the item");
    assert_eq!(stored["title"], "Jean Levi's 501");
    let photos: Vec<String> = stored["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ph| ph["id"].to_string())
        .collect();
    let mut ok = seed(SEED_SUCCESS);
    ok["result"]["vinted_id"] = json!(item);
    ok["result"]["url"] = stored["url"].clone();
    ok["result"]["image_ids"] = json!(photos.join(","));
    let id = task["id"].as_i64().unwrap();
    let (s, v) = ext.result(id, &ok).await;
    assert_eq!((s, v["status"].clone()), (200, json!("completed")), "{v}");
    assert_eq!(v["result"]["image_ids"], json!(photos.join(",")), "{v}");

    let done = p.api.wait_state(job, "done", T).await;
    assert_eq!(
        done["result"]["remote_listing_id"],
        json!(item.to_string()),
        "{done}"
    );
    let listing = p.listing(product, "vinted").await;
    assert_eq!(listing["status"], "published", "{listing}");
    // The same result again changes nothing.
    let (s, v) = ext.result(id, &ok).await;
    assert_eq!((s, v["status"].clone()), (200, json!("completed")), "{v}");

    // An edit of the price updates the item: a vinted_update naming it.
    let (s, v) = p
        .api
        .http
        .patch(p.api.url(&format!("/v1/products/{product}")))
        .json(&json!({"price": "27.90"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 200, "{:?}", v.text().await);
    let update = ext.next_task().await;
    assert_eq!(update["task_type"], "vinted_update", "{update}");
    assert_eq!(update["payload"]["vinted_id"], json!(item));
    assert_eq!(update["payload"]["price"], json!(27.9));
    assert_eq!(ext.execute(&update).await, item);
    let (s, v) = ext
        .result(update["id"].as_i64().unwrap(), &{
            let mut r = seed(SEED_SUCCESS);
            r["result"]["vinted_id"] = json!(item);
            r
        })
        .await;
    assert_eq!((s, v["status"].clone()), (200, json!("completed")), "{v}");
    let stored = sim_item(&p, item).await.unwrap();
    assert_eq!(stored["price"]["amount"], "27.9", "{stored}");

    // Withdrawing deletes it: a vinted_delete naming it.
    let withdraw = p.product_action(product, "withdraw", &["vinted"]).await[0];
    let delete = ext.next_task().await;
    assert_eq!(delete["task_type"], "vinted_delete", "{delete}");
    assert_eq!(delete["payload"]["vinted_id"], json!(item));
    assert_eq!(delete["payload"]["product_id"], json!(product));
    ext.execute(&delete).await;
    let (s, v) = ext
        .result(
            delete["id"].as_i64().unwrap(),
            &json!({"success": true, "result": {"vinted_id": item}}),
        )
        .await;
    assert_eq!((s, v["status"].clone()), (200, json!("completed")), "{v}");
    p.api.wait_state(withdraw, "done", T).await;
    assert_eq!(p.listing(product, "vinted").await["status"], "withdrawn");
    let gone = sim_item(&p, item).await;
    assert!(
        gone.is_none() || gone.as_ref().unwrap()["is_closed"] == true,
        "the item is gone from Vinted: {gone:?}"
    );

    // The seed's FAILED example (a mapping error) fails the task at once: no retry can fix it.
    let other = seed_product(&p).await;
    let job = p.publish(other, &["vinted"]).await[0];
    let task = ext.next_task().await;
    let (s, v) = ext
        .result(task["id"].as_i64().unwrap(), &seed(SEED_FAILED))
        .await;
    assert_eq!((s, v["status"].clone()), (200, json!("failed")), "{v}");
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("Brand not found on Vinted"),
        "{v}"
    );
    let dead = p.api.wait_state(job, "dead", T).await;
    assert_eq!(dead["errors"].as_array().unwrap().len(), 1, "{dead}");
}

#[tokio::test]
async fn a_withdrawal_asked_during_a_vinted_publish_runs_as_soon_as_the_publish_ends() {
    let p = setup(&[]).await;
    let ext = Ext::new(&p, &p.api.seller_login.access_token);
    let product = seed_product(&p).await;
    let publish = p.publish(product, &["vinted"]).await[0];
    let task = ext.next_task().await;
    // The publish now sleeps until the task's lease ends (120 s); the withdrawal waits for it.
    let withdraw = p.product_action(product, "withdraw", &["vinted"]).await[0];
    eventually(T, "the withdrawal waits behind the publish", || async {
        let j = p.api.job(withdraw).await;
        j["state"] == "scheduled" && j["snoozes"].as_i64() >= Some(1)
    })
    .await;
    let item = ext.execute(&task).await;
    let mut ok = seed(SEED_SUCCESS);
    ok["result"]["vinted_id"] = json!(item);
    let (s, v) = ext.result(task["id"].as_i64().unwrap(), &ok).await;
    assert_eq!((s, v["status"].clone()), (200, json!("completed")), "{v}");
    p.api.wait_state(publish, "done", T).await;
    // Woken by the publish's end, not at the deadline it read (the lease's 120 s).
    let delete = ext.next_task_within(Duration::from_secs(15)).await;
    assert_eq!(delete["task_type"], "vinted_delete", "{delete}");
    assert_eq!(delete["payload"]["vinted_id"], json!(item));
}

#[tokio::test]
async fn the_extension_sees_only_its_sellers_tasks_and_a_late_or_foreign_result_changes_nothing() {
    let p = setup(&[("STOFLOW_PLUGIN__LEASE_TIMEOUT_MS", "1000")]).await;
    let ext = Ext::new(&p, &p.api.seller_login.access_token);
    ensure_user(&p.db, "other@test.stoflow.dev", jobs::auth::Role::Seller).await;
    let other = integration::login(
        &p.api.anon,
        &p.api.base,
        "other@test.stoflow.dev",
        TEST_PASSWORD,
    )
    .await;
    let stranger = Ext::new(&p, &other.access_token);

    let product = seed_product(&p).await;
    let job = p.publish(product, &["vinted"]).await[0];
    let id: i64 = integration::eventually_value(T, "the publish makes a task", || async {
        sqlx::query_scalar::<_, i64>("SELECT id FROM plugin_tasks WHERE product_id = $1")
            .bind(product)
            .fetch_optional(&p.db.pool)
            .await
            .unwrap()
    })
    .await;
    let mut ok = seed(SEED_SUCCESS);

    // Another seller sees no task and cannot answer this one; nor can anyone not logged in.
    assert_eq!(stranger.tasks().await, (200, json!([])));
    assert_eq!(stranger.result(id, &ok).await.0, 404);
    let r = p
        .api
        .anon
        .get(p.api.url("/api/plugin/tasks?limit=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A result for a task the extension did not fetch: 409.
    assert_eq!(ext.result(id, &ok).await.0, 409);

    // Fetched, then answered after its lease (1 s here, the pickup 1 h): 409, nothing changes.
    let task = ext.next_task().await;
    assert_eq!(task["id"], json!(id));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    ok["result"]["vinted_id"] = json!(111);
    let (s, v) = ext.result(id, &ok).await;
    assert_eq!(s, 409, "{v}");
    let (_, t) = p.api.get(&format!("/v1/plugin-tasks/{id}")).await;
    assert_ne!(t["state"], "succeeded", "{t}");
    assert!(t["result"].is_null(), "{t}");
    assert_eq!(p.listing(product, "vinted").await["status"], "publishing");

    // It is offered again (attempt 2 of 3) and the answer in time is taken.
    let again = ext.next_task().await;
    assert_eq!(again["id"], json!(id));
    let (_, t) = p.api.get(&format!("/v1/plugin-tasks/{id}")).await;
    assert_eq!(
        (t["attempts"].clone(), t["max_attempts"].clone()),
        (json!(2), json!(3))
    );
    let item = ext.execute(&again).await;
    ok["result"]["vinted_id"] = json!(item);
    assert_eq!(ext.result(id, &ok).await.0, 200);
    p.api.wait_state(job, "done", T).await;

    // A task the reference runner leased (device token) cannot be answered with the JWT.
    let token = p.connect_vinted("87654321", "stoflow_seller").await["plugin_token"]
        .as_str()
        .unwrap()
        .to_string();
    p.publish(seed_product(&p).await, &["vinted"]).await;
    let lease = integration::eventually_value(T, "the runner leases a task", || async {
        let r = client_with(&token)
            .get(p.api.url("/api/plugin/tasks"))
            .send()
            .await
            .unwrap();
        let (_, v) = integration::Api::read(r).await;
        v["task_id"].as_i64().map(|_| v)
    })
    .await;
    let leased = lease["task_id"].as_i64().unwrap();
    assert_eq!(ext.result(leased, &ok).await.0, 409);
    let (_, t) = p.api.get(&format!("/v1/plugin-tasks/{leased}")).await;
    assert_eq!(t["state"], "leased", "{t}");
}

#[tokio::test]
async fn a_vinted_sale_reported_by_the_extension_is_imported_as_an_order() {
    let p = setup(&[]).await;
    let ext = Ext::new(&p, &p.api.seller_login.access_token);
    let product = seed_product(&p).await;
    let job = p.publish(product, &["vinted"]).await[0];
    let task = ext.next_task().await;
    let item = ext.execute(&task).await;
    let mut ok = seed(SEED_SUCCESS);
    ok["result"]["vinted_id"] = json!(item);
    ext.result(task["id"].as_i64().unwrap(), &ok).await;
    p.api.wait_state(job, "done", T).await;

    let sale = p
        .sim_admin("vinted", &format!("/_admin/items/{item}/sell"), json!({}))
        .await;
    let (_, conns) = p.api.get("/v1/connections").await;
    let account = conns["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["marketplace"] == "vinted")
        .unwrap()["account_id"]
        .as_i64()
        .unwrap();
    p.api
        .enqueue(
            json!({"kind": "sync_orders", "account_id": account}),
            json!({}),
        )
        .await;
    let sync = ext.next_task().await;
    assert_eq!(sync["task_type"], "vinted_sync_sales", "{sync}");
    assert_eq!(sync["payload"]["user_id"], "87654321");
    let read = ext.vinted.sync_sales(&sync["payload"]).await.unwrap();
    let (s, v) = ext
        .result(
            sync["id"].as_i64().unwrap(),
            &json!({"success": true, "result": read}),
        )
        .await;
    assert_eq!((s, v["status"].clone()), (200, json!("completed")), "{v}");

    eventually(T, "the Vinted sale is an order", || async {
        let (_, o) = p.api.get("/v1/orders").await;
        o["orders"].as_array().is_some_and(|o| {
            o.iter().any(|o| {
                o["remote_order_id"] == json!(sale["transaction_id"].as_u64().unwrap().to_string())
            })
        })
    })
    .await;
}
