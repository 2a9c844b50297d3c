//! Regression tests for the apalis-postgres 1.0 defects (shared/apalis.md, D1–D12) that made
//! us write our own backend: each shows our backend does not have it.

use std::time::Duration;

use integration::{Api, Proc, TestDb, test_env, worker};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// D1/D2: new jobs waited up to 30 s for a heartbeat. With polling made useless (60 s), every
/// job must still start within a few seconds: the LISTEN/NOTIFY wake-up does it.
#[tokio::test]
async fn d1_d2_an_idle_worker_is_woken_by_new_jobs_without_polling() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[("STOFLOW_WORKER__POLL_INTERVAL_MS", "60000")]);
    tokio::time::sleep(Duration::from_millis(500)).await; // let the listener connect
    for _ in 0..10 {
        let id = api.enqueue(json!({"kind": "noop"}), json!({})).await;
        api.wait_state(id, "done", Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// D3: the claim query hash-joined a sequential scan of the whole table once it was big.
#[tokio::test]
async fn d3_claim_walks_the_waiting_index_however_many_finished_rows_there_are() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO jobs (kind, state, args, max_attempts, finished_at)
         SELECT 'noop', 'done', '{}'::jsonb, 3, now() FROM generate_series(1, 300000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO jobs (kind, args, max_attempts) SELECT 'noop', '{}'::jsonb, 3 FROM generate_series(1, 30000)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE jobs").execute(&db.pool).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        engine::backend::CLAIM_SQL
    )))
    .bind("w")
    .bind("noop")
    .bind(200i64)
    .bind(30.0f64)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("jobs_fetch_idx"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

/// D4: a worker busy with long jobs stopped heartbeating and its running jobs were re-run
/// elsewhere. Our lease is renewed by its own task, so jobs longer than the lease run once.
#[tokio::test]
async fn d4_a_busy_worker_is_not_declared_dead_and_nothing_runs_twice() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let env = [
        ("STOFLOW_KINDS__NOOP__CONCURRENCY", "1"),
        ("STOFLOW_WORKER__CLAIM_BATCH", "10"),
    ];
    let _a = worker(&db, &env);
    let _b = worker(&db, &env);
    let mut ids = vec![];
    for _ in 0..4 {
        ids.push(
            api.enqueue(json!({"kind": "noop", "sleep_ms": 2000}), json!({}))
                .await,
        );
    }
    for id in ids {
        let v = api.wait_state(id, "done", T).await;
        assert_eq!(v["attempt"], 1, "{v}");
        assert!(v["errors"].as_array().unwrap().is_empty(), "{v}");
    }
}

/// D5: RetryAfterError looped thousands of times a second. A snooze waits its time.
#[tokio::test]
async fn d5_a_snoozing_job_waits_between_runs() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let id = api
        .enqueue(
            json!({"kind": "noop", "fail": "snooze", "snooze_ms": 400}),
            json!({"max_attempts": 1}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let v = api.job(id).await;
    let snoozes = v["snoozes"].as_i64().unwrap();
    assert!(
        (2..=6).contains(&snoozes),
        "2 s of 400 ms snoozes ran {snoozes} times"
    );
    assert!(
        v["attempt"].as_i64().unwrap() <= 1,
        "snoozes consume no attempts: {v}"
    );
}

/// D8: a restarted process reusing its name kept its dead predecessor's jobs locked.
#[tokio::test]
async fn d8_every_process_start_has_its_own_worker_id() {
    let db = TestDb::new().await;
    for _ in 0..2 {
        let mut w = worker(&db, &[]);
        integration::eventually(T, "worker registered", || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM workers WHERE stopped_at IS NULL")
                .fetch_one(&db.pool)
                .await
                .unwrap()
                == 1
        })
        .await;
        w.sigterm();
        assert!(w.wait_exit(Duration::from_secs(10)).is_some());
    }
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM workers")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}

/// D9: one row the worker could not decode killed the worker and blocked the queue.
#[tokio::test]
async fn d9_an_undecodable_payload_goes_dead_and_the_queue_flows_on() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let bad: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, args, max_attempts) VALUES ('noop', '{\"sleep_ms\": \"later\"}', 3) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let _w = worker(&db, &[]);
    let good = api.enqueue(json!({"kind": "noop"}), json!({})).await;
    api.wait_state(good, "done", T).await;
    let v = api.wait_state(bad, "dead", T).await;
    assert_eq!(v["last_error"]["class"], "invalid_payload");
}

/// D11: nothing pruned finished jobs. The retention job deletes what is old enough, only that.
#[tokio::test]
async fn d11_retention_deletes_old_finished_jobs_only() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO jobs (kind, state, args, max_attempts, finished_at, run_at) VALUES
           ('noop', 'done', '{}', 1, now() - interval '200 hours', now()),
           ('noop', 'done', '{}', 1, now() - interval '1 hour', now()),
           ('noop', 'dead', '{}', 1, now() - interval '1000 hours', now()),
           ('noop', 'dead', '{}', 1, now() - interval '100 hours', now()),
           ('noop', 'cancelled', '{}', 1, now() - interval '200 hours', now()),
           ('noop', 'available', '{}', 1, NULL, now() + interval '1 day')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO jobs (kind, args, max_attempts) VALUES ('prune_jobs', '{}', 1)")
        .execute(&db.pool)
        .await
        .unwrap();
    let _w = worker(&db, &[("STOFLOW_RETENTION__PRUNE_BATCH", "1")]);
    integration::eventually(T, "prune job done", || async {
        db.count("kind = 'prune_jobs' AND state = 'done'").await == 1
    })
    .await;
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, extract(epoch FROM now() - coalesce(finished_at, now()))::bigint / 3600 FROM jobs
          WHERE kind = 'noop' ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        vec![
            ("available".into(), 0),
            ("dead".into(), 100),
            ("done".into(), 1)
        ]
    );
    let result: serde_json::Value =
        sqlx::query_scalar("SELECT result FROM jobs WHERE kind = 'prune_jobs'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(result["deleted_jobs"], 3);
}

/// D12: apalis-cron fires in every replica. Two schedulers: each tick becomes one job.
#[tokio::test]
async fn d12_two_schedulers_enqueue_each_tick_once() {
    let db = TestDb::new().await;
    let mut env = test_env(&db);
    env.push(("STOFLOW_SCHEDULER__PRUNE_CRON", "* * * * * *".into()));
    let mut s1 = Proc::spawn("worker", &["scheduler"], &env);
    let mut s2 = Proc::spawn("worker", &["scheduler"], &env);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        s1.child.try_wait().unwrap().is_none() && s2.child.try_wait().unwrap().is_none(),
        "both schedulers run"
    );
    s1.sigterm();
    s2.sigterm();
    assert!(
        s1.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    assert!(
        s2.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    let (rows, ticks): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT args->>'tick') FROM jobs WHERE kind = 'prune_jobs'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(ticks >= 2, "ticks: {ticks}");
    assert_eq!(rows, ticks, "one job per tick");
    let dup_logs = [s1.log_text(), s2.log_text()]
        .iter()
        .map(|l| l.matches("cron tick enqueued").count())
        .sum::<usize>();
    assert_eq!(
        dup_logs as i64, rows,
        "each tick was enqueued by exactly one of the two"
    );
}
