//! How a job moves: retries with durable backoff, permanent failures, exhaustion, timeouts,
//! panics, snoozes, schedules, cancel and retry — all through real worker processes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use integration::{Api, TestDb, worker};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_retryable_failure_backs_off_then_succeeds() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(
        &db,
        &[
            ("STOFLOW_KINDS__NOOP__BACKOFF_BASE_MS", "400"),
            ("STOFLOW_KINDS__NOOP__BACKOFF_CAP_MS", "5000"),
        ],
    );
    let id = api
        .enqueue(
            json!({"kind": "noop", "fail": "retryable", "fail_attempts": 2}),
            json!({"max_attempts": 5}),
        )
        .await;

    let done = api.wait_state(id, "done", T).await;
    assert_eq!(done["attempt"], 3, "two failures, then success");
    let errors = done["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], i as i64 + 1);
        assert_eq!(e["class"], "retryable");
        // Full jitter under an exponential ceiling: attempt n waits within [0, base·2^(n-1)].
        let ceiling = 400u64 << i;
        assert!(
            e["delay_ms"].as_u64().unwrap() <= ceiling,
            "attempt {}: {e}",
            i + 1
        );
    }
    // The last run started no earlier than the recorded wait after the last failure.
    let waited = at(&done["attempted_at"]) - at(&errors[1]["at"]);
    assert!(
        waited >= chrono::Duration::milliseconds(errors[1]["delay_ms"].as_i64().unwrap() - 20),
        "{waited}"
    );
}

#[tokio::test]
async fn a_permanent_failure_is_dead_at_once_with_its_reason() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let id = api
        .enqueue(
            json!({"kind": "noop", "fail": "permanent"}),
            json!({"max_attempts": 5}),
        )
        .await;
    let dead = api.wait_state(id, "dead", T).await;
    assert_eq!(dead["attempt"], 1, "no retry after a permanent failure");
    assert_eq!(dead["last_error"]["class"], "permanent");
    assert!(
        dead["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("permanent failure on attempt 1")
    );
}

#[tokio::test]
async fn exhausted_attempts_end_dead() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[("STOFLOW_KINDS__NOOP__BACKOFF_BASE_MS", "50")]);
    let id = api
        .enqueue(
            json!({"kind": "noop", "fail": "retryable"}),
            json!({"max_attempts": 3}),
        )
        .await;
    let dead = api.wait_state(id, "dead", T).await;
    assert_eq!(dead["attempt"], 3);
    assert_eq!(dead["errors"].as_array().unwrap().len(), 3);
    assert!(
        dead["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("attempts exhausted: 3/3")
    );
}

#[tokio::test]
async fn panics_and_timeouts_are_recorded_failures_and_the_worker_keeps_going() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[("STOFLOW_KINDS__NOOP__TIMEOUT_MS", "300")]);
    let panicking = api
        .enqueue(
            json!({"kind": "noop", "fail": "panic"}),
            json!({"max_attempts": 1}),
        )
        .await;
    let slow = api
        .enqueue(
            json!({"kind": "noop", "sleep_ms": 5000}),
            json!({"max_attempts": 1}),
        )
        .await;

    let p = api.wait_state(panicking, "dead", T).await;
    assert_eq!(p["last_error"]["class"], "panic");
    assert!(
        p["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("noop: panic on attempt 1")
    );
    let s = api.wait_state(slow, "dead", T).await;
    assert_eq!(s["last_error"]["class"], "timeout");

    let after = api.enqueue(json!({"kind": "noop"}), json!({})).await;
    api.wait_state(after, "done", T).await;
}

#[tokio::test]
async fn a_snooze_runs_later_without_consuming_an_attempt() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let id = api
        .enqueue(
            json!({"kind": "noop", "fail": "snooze", "snooze_ms": 400, "fail_attempts": 1}),
            json!({"max_attempts": 1}),
        )
        .await;
    let done = api.wait_state(id, "done", T).await;
    // Two runs, one attempt: the snooze gave its attempt back, so max_attempts=1 was enough.
    assert_eq!(
        (done["attempt"].clone(), done["snoozes"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(done["last_error"]["class"], "snoozed");
    assert!(
        done["errors"].as_array().unwrap().is_empty(),
        "a snooze is not a failure"
    );
}

#[tokio::test]
async fn a_scheduled_job_waits_for_its_time_and_a_cancelled_one_never_runs() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let later = api
        .enqueue(json!({"kind": "noop"}), json!({"delay_ms": 1500}))
        .await;
    let cancelled = api
        .enqueue(json!({"kind": "noop"}), json!({"delay_ms": 1000}))
        .await;
    assert_eq!(api.job(later).await["state"], "scheduled");

    let (s, v) = api
        .post(&format!("/v1/jobs/{cancelled}/cancel"), &json!(null))
        .await;
    assert_eq!((s, v["state"].clone()), (200, json!("cancelled")), "{v}");

    let done = api.wait_state(later, "done", T).await;
    assert!(
        at(&done["attempted_at"]) >= at(&done["created_at"]) + chrono::Duration::milliseconds(1400)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = api.job(cancelled).await;
    assert_eq!(
        (c["state"].clone(), c["attempt"].clone()),
        (json!("cancelled"), json!(0))
    );
    // Cancelling twice, or cancelling a finished job, is a conflict.
    let (s, _) = api
        .post(&format!("/v1/jobs/{cancelled}/cancel"), &json!(null))
        .await;
    assert_eq!(s, 409);
    let (s, _) = api
        .post(&format!("/v1/jobs/{later}/cancel"), &json!(null))
        .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn retrying_a_dead_job_runs_it_again() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let id = api
        .enqueue(
            json!({"kind": "noop", "fail": "permanent", "fail_attempts": 1}),
            json!({"max_attempts": 1}),
        )
        .await;
    api.wait_state(id, "dead", T).await;
    let (s, v) = api
        .post(&format!("/v1/jobs/{id}/retry"), &json!(null))
        .await;
    assert_eq!(s, 200, "{v}");
    let done = api.wait_state(id, "done", T).await;
    assert_eq!(done["attempt"], 2);
    assert_eq!(done["max_attempts"], 2, "retry grants the attempt it needs");
    let (s, _) = api
        .post(&format!("/v1/jobs/{id}/retry"), &json!(null))
        .await;
    assert_eq!(s, 409, "a done job is not retried");
}

/// The backoff wait lives in the row, not in a worker: it holds no slot (another job runs
/// meanwhile on a one-slot worker) and survives a restart of every worker process.
#[tokio::test]
async fn a_backoff_wait_holds_no_slot_and_survives_restarting_every_worker() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let env = [
        ("STOFLOW_KINDS__NOOP__CONCURRENCY", "1"),
        ("STOFLOW_KINDS__NOOP__BACKOFF_BASE_MS", "6000"),
        ("STOFLOW_KINDS__NOOP__BACKOFF_CAP_MS", "6000"),
    ];
    let mut w = worker(&db, &env);
    // Full jitter may draw a wait too short to observe; draw again until it is at least 2 s.
    let flaky = loop {
        let id = api
            .enqueue(
                json!({"kind": "noop", "fail": "retryable", "fail_attempts": 1}),
                json!({}),
            )
            .await;
        let v = api
            .wait_job(id, T, |v| {
                v["errors"].as_array().is_some_and(|e| !e.is_empty())
            })
            .await;
        if v["errors"][0]["delay_ms"].as_u64().unwrap() >= 2000 && v["state"] == "retrying" {
            break id;
        }
    };
    let other = api.enqueue(json!({"kind": "noop"}), json!({})).await;
    api.wait_state(other, "done", T).await;
    assert_eq!(
        api.job(flaky).await["state"],
        "retrying",
        "the other job ran while the first one waited"
    );

    w.sigterm();
    assert!(
        w.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    let _w2 = worker(&db, &env);
    let done = api.wait_state(flaky, "done", T).await;
    assert_eq!(done["attempt"], 2);
}

#[tokio::test]
async fn a_paused_kind_is_not_fetched_until_it_is_resumed() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let (s, v) = api
        .post_as(
            &api.ops,
            "/v1/queues/noop/pause",
            &json!({"reason": "marketplace incident"}),
        )
        .await;
    assert_eq!((s, v["paused"].clone()), (200, json!(true)), "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await; // the worker hears it (NOTIFY)

    let id = api.enqueue(json!({"kind": "noop"}), json!({})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = api.job(id).await;
    assert_eq!(
        (waiting["state"].clone(), waiting["attempt"].clone()),
        (json!("pending"), json!(0))
    );
    let (_, q) = api.get_as(&api.ops, "/v1/queues").await;
    let noop = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "noop")
        .unwrap()
        .clone();
    assert_eq!(noop["paused"], true);

    let r = api
        .ops
        .post(api.url("/v1/queues/noop/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    api.wait_state(id, "done", T).await;
    assert_eq!(
        api.post_as(&api.ops, "/v1/queues/teleport/pause", &json!({}))
            .await
            .0,
        404
    );
}
