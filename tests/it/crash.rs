//! Crashes and shutdowns: kill -9 mid-job, SIGTERM with a job in flight, the shutdown deadline.

use std::time::Duration;

use integration::{Api, TestDb, pid_of_worker, worker};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn kill_9_mid_job_another_process_finishes_it_within_the_lease() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let mut a = worker(&db, &[]);
    let mut b = worker(&db, &[]);
    let id = api
        .enqueue(json!({"kind": "noop", "sleep_ms": 2000}), json!({}))
        .await;
    let running = api.wait_state(id, "running", T).await;
    let first_owner = running["worker"].as_str().unwrap().to_string();
    let victim = if pid_of_worker(&first_owner) == a.pid() {
        &mut a
    } else {
        &mut b
    };
    victim.kill9();
    let killed_at = std::time::Instant::now();

    let done = api.wait_state(id, "done", T).await;
    // Lease 1.5 s + heartbeat 0.25 s to notice + 2 s to run again, with room for a slow machine.
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "rescued after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(done["attempt"], 2);
    let errors = done["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "one interrupted attempt: {errors:?}");
    assert_eq!(errors[0]["class"], "rescued");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains(&first_owner)
    );
    // Done exactly once: the row is final and the dead process's claim cannot come back.
    assert_eq!(
        db.count(&format!(
            "id = {id} AND state = 'done' AND locked_by IS NULL"
        ))
        .await,
        1
    );
    let stopped: bool =
        sqlx::query_scalar("SELECT stopped_at IS NOT NULL FROM workers WHERE id = $1")
            .bind(&first_owner)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(stopped, "the dead process is marked stopped");
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_fetches_nothing_new_and_exits_0() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let mut w = worker(&db, &[("STOFLOW_KINDS__NOOP__CONCURRENCY", "1")]);
    let first = api
        .enqueue(json!({"kind": "noop", "sleep_ms": 1500}), json!({}))
        .await;
    api.wait_state(first, "running", T).await;
    let second = api.enqueue(json!({"kind": "noop"}), json!({})).await;
    w.sigterm();

    let status = w
        .wait_exit(Duration::from_secs(15))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", w.log_text());
    let f = api.job(first).await;
    assert_eq!(
        (f["state"].clone(), f["attempt"].clone()),
        (json!("done"), json!(1))
    );
    let s = api.job(second).await;
    assert_eq!(
        (s["state"].clone(), s["attempt"].clone()),
        (json!("pending"), json!(0)),
        "never started, no attempt lost"
    );
    let stopped: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workers WHERE stopped_at IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stopped, 1, "the worker deregistered");
}

#[tokio::test]
async fn a_job_cut_off_by_the_shutdown_deadline_is_handed_back_without_losing_an_attempt() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let mut w = worker(&db, &[("STOFLOW_WORKER__SHUTDOWN_TIMEOUT_MS", "300")]);
    let id = api
        .enqueue(json!({"kind": "noop", "sleep_ms": 20000}), json!({}))
        .await;
    api.wait_state(id, "running", T).await;
    w.sigterm();
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("exits at the deadline");
    assert!(status.success(), "{status}\n{}", w.log_text());
    let v = api.job(id).await;
    assert_eq!(
        (v["state"].clone(), v["attempt"].clone()),
        (json!("pending"), json!(0))
    );

    // Another process picks it up.
    let _w2 = worker(&db, &[]);
    api.wait_state(id, "running", T).await;
}

/// A claim whose answer never reached the worker (connection lost mid-statement) leaves a row
/// running under a live worker's id; the worker notices it holds no such job and hands it back.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_handed_back_and_run() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    integration::eventually(T, "worker registered", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM workers")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    let worker_id: String = sqlx::query_scalar("SELECT id FROM workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, args, max_attempts, state, attempt, attempted_at, locked_by)
         VALUES ('noop', '{}', 3, 'running', 1, now() - interval '10 seconds', $1) RETURNING id",
    )
    .bind(&worker_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let done = api.wait_state(id, "done", T).await;
    assert_eq!(done["attempt"], 1, "the lost claim did not cost an attempt");
}

/// kill -9 while a process holds a batch of claimed jobs and has acks not yet written: nothing is
/// lost. Claimed-but-unstarted jobs and jobs whose completion was still in the ack batch are
/// rescued and run again (at least once, never lost), each rescue recorded.
#[tokio::test]
async fn kill_9_during_batched_claims_and_acks_loses_no_job() {
    const N: i64 = 4000;
    let db = TestDb::new().await;
    let jobs: Vec<engine::queue::NewJob> = (0..N)
        .map(|_| engine::queue::NewJob {
            kind: "noop",
            args: json!({"sleep_ms": 5}),
            priority: 0,
            run_at: None,
            max_attempts: 3,
            idempotency_key: None,
        })
        .collect();
    let mut conn = db.pool.acquire().await.unwrap();
    engine::queue::bulk_insert(&mut conn, jobs.iter())
        .await
        .unwrap();
    drop(conn);
    // 100 slots: claims come in batches of up to 100, completions in batches of acks.
    let env = [("STOFLOW_KINDS__NOOP__CONCURRENCY", "100")];
    let mut a = worker(&db, &env);
    let a_id = integration::eventually_value(T, "the first process running a batch", || async {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT locked_by, count(*) FROM jobs WHERE state = 'running' GROUP BY locked_by
              HAVING count(*) >= 50",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        row.map(|(w, _)| w)
    })
    .await;
    a.kill9();
    // A statement the process sent just before dying still runs to its end in Postgres (an ack
    // batch committing): read what was held only once that has settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let claimed: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE state = 'running' AND locked_by = $1")
            .bind(&a_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(claimed.len() >= 50, "a batch was held at the kill");

    let _b = worker(&db, &env);
    integration::eventually(Duration::from_secs(120), "every job done", || async {
        db.count("state = 'done'").await == N
    })
    .await;
    assert_eq!(db.count("state <> 'done'").await, 0);
    assert_eq!(db.count("attempt > 2").await, 0, "rescued at most once");
    // Every rerun is explained by the rescue of the killed process, and the held batch was rerun.
    assert_eq!(
        db.count("attempt = 2").await,
        db.count(&format!(
            "attempt = 2 AND errors->0->>'class' = 'rescued' AND errors->0->>'message' LIKE '%{a_id}%'"
        ))
        .await
    );
    let rerun: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ANY($1) AND attempt = 2")
            .bind(&claimed)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(rerun, claimed.len() as i64, "the held batch ran again");
}
