use serde_json::{Value, json};

use crate::{body, client, multipart, sims};

fn s() -> sim::vinted::Settings {
    sim::vinted::Settings::default()
}

async fn photo(c: &reqwest::Client, base: &str) -> u64 {
    let (ct, bytes) = multipart(
        &[("photo[type]", "item"), ("photo[temp_uuid]", "u-1")],
        "photo[file]",
        b"\xff\xd8jpeg",
    );
    let r = c
        .post(format!("{base}/api/v2/photos"))
        .bearer_auth(s().access_token)
        .header("X-CSRF-Token", s().csrf_token)
        .header("content-type", ct)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    body(r).await["id"].as_u64().unwrap()
}

fn item(photo: u64, title: &str) -> Value {
    json!({"item": {"id": null, "currency": "EUR", "temp_uuid": "u-1", "title": title, "description": "Jean brut taille haute",
        "brand_id": 53, "brand": "Levi's", "catalog_id": 5, "price": 27.9, "package_size_id": 1, "color_ids": [12],
        "assigned_photos": [{"id": photo, "orientation": 0}], "size_id": 206, "status_id": 6,
        "item_attributes": [{"code": "size", "ids": [206]}, {"code": "condition", "ids": [6]}]},
        "feedback_id": null, "push_up": false, "parcel": null, "upload_session_id": "u-1"})
}

#[tokio::test]
async fn create_update_delete_with_session_and_csrf() {
    let sims = sims().await;
    let (c, base) = (client(), sims.vinted_url.clone());
    let p = photo(&c, &base).await;
    let r = c
        .post(format!("{base}/api/v2/item_upload/items"))
        .bearer_auth(s().access_token)
        .header("X-CSRF-Token", s().csrf_token)
        .json(&item(p, "Jean Levi's 501"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let it = body(r).await;
    let id = it["item"]["id"].as_u64().unwrap();
    assert_eq!(
        it["item"]["price"],
        json!({"amount": "27.9", "currency_code": "EUR"})
    );

    let r = c
        .put(format!("{base}/api/v2/item_upload/items/{id}"))
        .header("cookie", format!("access_token_web={}", s().access_token))
        .header("X-CSRF-Token", s().csrf_token)
        .json(&item(p, "Jean Levi's 501 bleu"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = c
        .post(format!("{base}/api/v2/items/{id}/delete"))
        .bearer_auth(s().access_token)
        .header("X-CSRF-Token", s().csrf_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{base}/api/v2/items/{id}/delete"))
        .bearer_auth(s().access_token)
        .header("X-CSRF-Token", s().csrf_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn missing_csrf_is_403_106_and_expired_session_is_401_100() {
    let sims = sims().await;
    let (c, base) = (client(), sims.vinted_url.clone());
    let p = photo(&c, &base).await;
    let r = c
        .post(format!("{base}/api/v2/item_upload/items"))
        .bearer_auth(s().access_token)
        .json(&item(p, "Jean Levi's"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        body(r).await,
        json!({"code": 106, "message_code": "access_denied"})
    );

    let r = c
        .get(format!("{base}/api/v2/users/current"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    c.post(format!("{base}/_admin/sessions/expire"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let r = c
        .get(format!("{base}/api/v2/users/current"))
        .bearer_auth(s().access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e = body(r).await;
    assert_eq!(e["code"], 100);
    assert_eq!(e["message_code"], "invalid_authentication_token");
}

#[tokio::test]
async fn validation_errors_use_code_99() {
    let sims = sims().await;
    let (c, base) = (client(), sims.vinted_url.clone());
    let p = photo(&c, &base).await;
    let mut bad = item(p, "JEAN LEVIS TOUT NEUF");
    bad["item"]["size_id"] = Value::Null;
    bad["item"]["item_attributes"] = json!([]);
    let r = c
        .post(format!("{base}/api/v2/item_upload/items"))
        .bearer_auth(s().access_token)
        .header("X-CSRF-Token", s().csrf_token)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e = body(r).await;
    assert_eq!(e["code"], 99);
    assert_eq!(e["message_code"], "validation_error");
    let fields: Vec<&str> = e["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"title") && fields.contains(&"size_id"),
        "{fields:?}"
    );
}

#[tokio::test]
async fn anti_bot_block_answers_403_with_captcha_url() {
    let sims = sims().await;
    let (c, base) = (client(), sims.vinted_url.clone());
    c.put(format!("{base}/_admin/block"))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    let r = c
        .get(format!("{base}/api/v2/users/current"))
        .bearer_auth(s().access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-datadome"], "protected");
    assert!(
        body(r).await["url"]
            .as_str()
            .unwrap()
            .contains("captcha-delivery.com")
    );
    c.put(format!("{base}/_admin/block"))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    let r = c
        .get(format!("{base}/api/v2/users/current"))
        .bearer_auth(s().access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A read with the seeded session; asserts a 200.
async fn get(c: &reqwest::Client, base: &str, path: &str) -> Value {
    let r = c
        .get(format!("{base}{path}"))
        .bearer_auth(s().access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    body(r).await
}

#[tokio::test]
async fn a_sale_closes_the_item_and_shows_in_my_orders_newest_first() {
    let sims = sims().await;
    let (c, base) = (client(), sims.vinted_url.clone());
    let mut ids = Vec::new();
    for title in ["Jean Levi's 501", "Veste en jean"] {
        let p = photo(&c, &base).await;
        let r = c
            .post(format!("{base}/api/v2/item_upload/items"))
            .bearer_auth(s().access_token)
            .header("X-CSRF-Token", s().csrf_token)
            .json(&item(p, title))
            .send()
            .await
            .unwrap();
        ids.push(body(r).await["item"]["id"].as_u64().unwrap());
    }
    let orders = get(&c, &base, "/api/v2/my_orders?type=sold&status=all").await;
    assert_eq!(orders["my_orders"], json!([]));

    let mut txns = Vec::new();
    for id in &ids {
        let r = c
            .post(format!("{base}/_admin/items/{id}/sell"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        txns.push(body(r).await["transaction_id"].as_u64().unwrap());
    }
    // Selling twice is refused.
    let r = c
        .post(format!("{base}/_admin/items/{}/sell", ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let page1 = get(
        &c,
        &base,
        "/api/v2/my_orders?type=sold&status=all&per_page=1&page=1",
    )
    .await;
    assert_eq!(page1["pagination"]["total_pages"], 2, "{page1}");
    let o = &page1["my_orders"][0];
    assert_eq!(
        (o["transaction_id"].as_u64(), o["item_id"].as_u64()),
        (Some(txns[1]), Some(ids[1])),
        "newest first: {o}"
    );
    assert_eq!(o["transaction_user_status"], "in_progress");
    assert_eq!(
        o["price"],
        json!({"amount": "27.9", "currency_code": "EUR"})
    );
    assert!(o["date"].is_string(), "{o}");
    let done = get(&c, &base, "/api/v2/my_orders?type=sold&status=completed").await;
    assert_eq!(done["my_orders"], json!([]));
    let bought = get(&c, &base, "/api/v2/my_orders?type=purchased&status=all").await;
    assert_eq!(bought["my_orders"], json!([]));

    let wardrobe = get(
        &c,
        &base,
        &format!("/api/v2/wardrobe/{}/items", s().user_id),
    )
    .await;
    for i in wardrobe["items"].as_array().unwrap() {
        assert_eq!(
            (i["is_closed"].clone(), i["item_closing_action"].clone()),
            (json!(true), json!("sold"))
        );
    }
}
