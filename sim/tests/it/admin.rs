use serde_json::json;

use crate::{body, client, sims};

#[tokio::test]
async fn next_n_requests_fail_with_the_chosen_status() {
    let sims = sims().await;
    let (c, base) = (client(), sims.ebay_url.clone());
    let url = format!("{base}/sell/inventory/v1/inventory_item");
    c.post(format!("{base}/_admin/faults"))
        .json(&json!({"fail_next": 2, "fail_status": 503}))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(body(r).await["errors"][0]["errorId"], 25001);
    }
    // Third request reaches the real handler (401: no token).
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn dropped_connection_and_request_log() {
    let sims = sims().await;
    let (c, base) = (client(), sims.etsy_url.clone());
    let url = format!("{base}/v3/application/openapi-ping");
    c.post(format!("{base}/_admin/faults"))
        .json(&json!({"drop_next": 1}))
        .send()
        .await
        .unwrap();
    let dropped = c.get(&url).send().await;
    assert!(
        dropped.is_err(),
        "the connection is closed without a response: {dropped:?}"
    );
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);

    let log = body(
        c.get(format!("{base}/_admin/requests"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let entries = log["requests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "admin calls are not logged: {entries:?}");
    assert_eq!(entries[0]["dropped"], true);
    assert!(entries[0]["status"].is_null());
    assert_eq!(entries[1]["status"], 403);
    assert_eq!(entries[1]["method"], "GET");
    assert_eq!(entries[1]["path"], "/v3/application/openapi-ping");
    let ts = entries[1]["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "RFC 3339 with ms: {ts}"
    );

    c.delete(format!("{base}/_admin/requests"))
        .send()
        .await
        .unwrap();
    let log = body(
        c.get(format!("{base}/_admin/requests"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(log["requests"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn throttle_storm_and_latency() {
    let sims = sims().await;
    let (c, base) = (client(), sims.vinted_url.clone());
    let url = format!("{base}/api/v2/users/current");
    c.post(format!("{base}/_admin/faults"))
        .json(&json!({"throttle_next": 2, "retry_after": 7, "latency_ms": 150}))
        .send()
        .await
        .unwrap();
    let start = std::time::Instant::now();
    for _ in 0..2 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
    }
    assert!(start.elapsed().as_millis() >= 300);
    c.delete(format!("{base}/_admin/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
}
