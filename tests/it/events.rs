//! Live job status over Server-Sent Events, driven by Postgres notifications.

use std::time::Duration;

use integration::{Api, TestDb, worker};
use serde_json::{Value, json};

#[tokio::test]
async fn an_sse_client_sees_pending_then_running_then_done_in_order() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    // Paused, so the stream certainly starts while the job is pending.
    let r = api
        .ops
        .post(api.url("/v1/queues/noop/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = api
        .enqueue(json!({"kind": "noop", "sleep_ms": 300}), json!({}))
        .await;

    let resp = api
        .http
        .get(api.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut resp = resp;
    let mut buf = String::new();
    let mut states = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut resumed = false;
    while !matches!(states.last().map(String::as_str), Some("done" | "dead")) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events in time")
            .unwrap();
        let Some(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["id"], id);
                states.push(v["state"].as_str().unwrap().to_string());
            }
        }
        if states == ["pending"] && !resumed {
            resumed = true;
            api.ops
                .post(api.url("/v1/queues/noop/resume"))
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(states, ["pending", "running", "done"]);
    let rest = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("stream ends")
        .unwrap();
    assert!(rest.is_none(), "the stream ends after a final state");
    assert_eq!(api.get("/v1/jobs/999999/events").await.0, 404);
}
