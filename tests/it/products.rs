//! The catalogue API: products CRUD with validation, and publishing (jobs enqueued atomically).

use integration::{Api, TestDb};
use serde_json::json;

#[tokio::test]
async fn a_product_is_created_read_updated_listed_and_soft_deleted() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (s, p) = api
        .post(
            "/v1/products",
            &json!({"title": "Wool scarf", "condition": "very_good", "price": "12.5", "brand": "Acme",
                    "size": "M", "color": "red", "stock_quantity": 2, "images": ["https://img.example/1.jpg"]}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(
        (
            p["price"].clone(),
            p["currency"].clone(),
            p["status"].clone()
        ),
        (json!("12.50"), json!("EUR"), json!("draft"))
    );
    assert!(p["sku"].as_str().unwrap().starts_with("SF"));
    let id = p["id"].as_i64().unwrap();

    let r = api
        .http
        .patch(api.url(&format!("/v1/products/{id}")))
        .json(&json!({"price": "9.99", "stock_quantity": 0}))
        .send()
        .await
        .unwrap();
    let (s, u) = Api::read(r).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        (
            u["price"].clone(),
            u["stock_quantity"].clone(),
            u["title"].clone()
        ),
        (json!("9.99"), json!(0), json!("Wool scarf"))
    );

    let (_, list) = api.get("/v1/products?status=draft").await;
    assert_eq!(list["products"].as_array().unwrap().len(), 1);

    let r = api
        .http
        .delete(api.url(&format!("/v1/products/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(api.get(&format!("/v1/products/{id}")).await.0, 404);
    let (_, list) = api.get("/v1/products").await;
    assert!(list["products"].as_array().unwrap().is_empty());
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM products WHERE deleted_at IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(kept, 1, "soft delete keeps the row");
}

#[tokio::test]
async fn invalid_products_are_rejected_with_the_field_named() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let cases = [
        (json!({"condition": "good", "price": "1"}), 422, "title"),
        (
            json!({"title": "x", "condition": "mint", "price": "1"}),
            400,
            "mint",
        ),
        (
            json!({"title": "x", "condition": "good", "price": "1,50"}),
            400,
            "price",
        ),
        (
            json!({"title": "x", "condition": "good", "price": "0"}),
            422,
            "price",
        ),
        (
            json!({"title": "x", "condition": "good", "price": "1", "sku": "has space"}),
            400,
            "sku",
        ),
        (
            json!({"title": "x", "condition": "good", "price": "1", "images": ["ftp://a"]}),
            422,
            "images",
        ),
        (
            json!({"title": "x", "condition": "good", "price": "1", "stock_quantity": -1}),
            400,
            "stock_quantity",
        ),
        (
            json!({"title": "", "condition": "good", "price": "1"}),
            400,
            "title",
        ),
        (
            json!({"title": "a\u{0}b", "condition": "good", "price": "1"}),
            422,
            "title",
        ),
        (
            json!({"title": "x", "condition": "good", "price": "1", "images": ["https://a/\u{0}"]}),
            400,
            "NUL",
        ),
        (
            json!({"title": "x", "condition": "good", "price": "1", "colour": "red"}),
            400,
            "colour",
        ),
    ];
    for (body, want, needle) in cases {
        let (s, v) = api.post("/v1/products", &body).await;
        assert_eq!(s, want, "{body}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let (s, _) = api
        .post(
            "/v1/products",
            &json!({"title": "a", "condition": "good", "price": "1", "sku": "S1"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = api
        .post(
            "/v1/products",
            &json!({"title": "b", "condition": "good", "price": "1", "sku": "S1"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn publishing_enqueues_one_job_per_marketplace_once_per_version() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (_, p) = api
        .post(
            "/v1/products",
            &json!({"title": "Lamp", "condition": "good", "price": "30"}),
        )
        .await;
    let id = p["id"].as_i64().unwrap();
    let body = json!({"marketplaces": ["ebay", "etsy", "vinted"]});

    let (s, first) = api.post(&format!("/v1/products/{id}/publish"), &body).await;
    assert_eq!(s, 202, "{first}");
    let jobs = first["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j["created"] == true));
    let job = api.job(jobs[1]["job_id"].as_i64().unwrap()).await;
    assert_eq!(
        (job["kind"].clone(), job["args"].clone()),
        (
            json!("publish_listing"),
            json!({"product_id": id, "marketplace": "etsy"})
        )
    );
    assert_eq!(
        api.get(&format!("/v1/products/{id}")).await.1["status"],
        "published"
    );

    let (_, again) = api.post(&format!("/v1/products/{id}/publish"), &body).await;
    assert!(
        again["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["created"] == false),
        "{again}"
    );
    assert_eq!(
        db.count("kind = 'publish_listing'").await,
        3,
        "same version, same jobs"
    );

    // An edited product is a new version: publishing it enqueues anew.
    api.http
        .patch(api.url(&format!("/v1/products/{id}")))
        .json(&json!({"price": "25"}))
        .send()
        .await
        .unwrap();
    let (_, edited) = api
        .post(
            &format!("/v1/products/{id}/publish"),
            &json!({"marketplaces": ["ebay"]}),
        )
        .await;
    assert_eq!(edited["jobs"][0]["created"], true);
    assert_eq!(db.count("kind = 'publish_listing'").await, 4);

    for (body, want) in [
        (json!({"marketplaces": []}), 400),
        (json!({"marketplaces": ["ebay", "ebay"]}), 400),
        (json!({"marketplaces": ["amazon"]}), 400),
    ] {
        assert_eq!(
            api.post(&format!("/v1/products/{id}/publish"), &body)
                .await
                .0,
            want,
            "{body}"
        );
    }
    assert_eq!(api.post("/v1/products/999999/publish", &body).await.0, 404);
    assert_eq!(
        db.count("kind = 'publish_listing'").await,
        4,
        "rejected requests enqueue nothing"
    );
}
