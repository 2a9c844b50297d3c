//! The fleet heals itself: Postgres stopped or crashed under load, and a worker frozen past its
//! lease. Each test runs its own private cluster (it stops it), so nothing else is disturbed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use integration::{Api, Proc, TestDb, eventually, free_port, pid_of_worker, worker};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

/// A database on a private cluster this test may stop and start.
struct PrivateDb {
    cluster: Arc<dev::pg::Cluster>,
    db: TestDb,
}

async fn private_db(tag: &str) -> PrivateDb {
    let dir = dev::data_dir(&format!("target/pg-{tag}"));
    let port = free_port();
    let cluster = tokio::task::spawn_blocking(move || dev::pg::Cluster::ensure(&dir, port))
        .await
        .unwrap()
        .expect("a private Postgres (install the server binaries)");
    let name = format!("stoflow_o_{:08x}", rand::random::<u32>());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = cluster.url(&name);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    jobs::db::migrate(&pool).await.unwrap();
    PrivateDb {
        cluster: Arc::new(cluster),
        db: TestDb { url, pool, name },
    }
}

/// One client request's fate.
#[derive(Debug)]
struct Answer {
    status: u16,
    took: Duration,
    at: Instant,
    job: Option<i64>,
}

/// Clients posting noop jobs and reading them back until `stop`.
fn clients(
    api: &Api,
    n: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Answer>>> {
    (0..n)
        .map(|_| {
            let http = api.http.clone();
            let url = api.url("/v1/jobs");
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut out = vec![];
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .json(&json!({"job": {"kind": "noop", "sleep_ms": 20}}))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    let (status, job) = match r {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            let v: Value = r.json().await.unwrap_or_default();
                            (s, v["id"].as_i64())
                        }
                        Err(_) => (0, None),
                    };
                    out.push(Answer {
                        status,
                        took: t.elapsed(),
                        at: t,
                        job,
                    });
                    let t = Instant::now();
                    let read = http
                        .get(format!("{url}?limit=1"))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    out.push(Answer {
                        status: read.map_or(0, |r| r.status().as_u16()),
                        took: t.elapsed(),
                        at: t,
                        job: None,
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                out
            })
        })
        .collect()
}

/// A late ack that matches no row on its first write means another process re-ran the job
/// while this one still ran it (the runtime's warning). A retried write that finds its rows
/// already written (the first attempt committed before a crash cut its answer) is logged apart.
fn no_double_run(workers: &[&Proc]) {
    for w in workers {
        let log = w.log_text();
        assert!(
            !log.contains("acks were fenced off"),
            "a job ran in two processes ({}):\n{log}",
            w.log.display()
        );
    }
}

async fn all_done(db: &TestDb, ids: &[i64], within: Duration) {
    eventually(within, "every accepted job done", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ANY($1) AND state = 'done'")
                .bind(ids)
                .fetch_one(&db.pool)
                .await
                .unwrap_or(0);
        done == ids.len() as i64
    })
    .await;
}

#[tokio::test]
async fn postgres_down_past_the_lease_then_back_every_accepted_job_is_done_without_a_hand() {
    let pg = private_db("outage-stop").await;
    let db = &pg.db;
    let api = Api::spawn(db, &[]).await;
    let mut a = worker(db, &[]);
    let mut b = worker(db, &[]);
    let mut accepted = vec![];
    for _ in 0..40 {
        accepted.push(
            api.enqueue(json!({"kind": "noop", "sleep_ms": 400}), json!({}))
                .await,
        );
    }
    eventually(Duration::from_secs(20), "jobs in flight", || async {
        db.count("state = 'running'").await > 0
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let posting = clients(&api, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = pg.cluster.clone();
    tokio::task::spawn_blocking(move || c.stop_with("fast"))
        .await
        .unwrap()
        .unwrap();
    let down = Instant::now();
    // Readiness names the real reason.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s, v) = api.get("/health/ready").await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("database unreachable"),
        "{v}"
    );
    // Far past the workers' lease (1.5 s here): both lose it during the outage. The 90 s
    // drill: OUTAGE_DRILL_S=90 (the suite keeps it short).
    let outage_s: u64 = std::env::var("OUTAGE_DRILL_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    tokio::time::sleep(Duration::from_secs(outage_s.saturating_sub(1))).await;
    // The server accepts connections before pg_ctl returns: the outage ends when it is started.
    let starting = Instant::now();
    let c = pg.cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .unwrap()
        .unwrap();
    let up = Instant::now();
    // Processing resumes: a job enqueued now is done soon.
    let probe = loop {
        let (s, v) = api
            .post("/v1/jobs", &json!({"job": {"kind": "noop"}}))
            .await;
        if s == 202 {
            break v["id"].as_i64().unwrap();
        }
        assert_eq!(s, 503, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    api.wait_state(probe, "done", Duration::from_secs(30)).await;
    let resumed = up.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut answers = vec![];
    for h in posting {
        answers.extend(h.await.unwrap());
    }

    // During the outage every request got a quick 503, never a 500 or a hang.
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.at > down + Duration::from_millis(200) && a.at + a.took < starting)
        .collect();
    assert!(
        during.len() >= 10,
        "only {} requests during the outage",
        during.len()
    );
    for a in &during {
        assert_eq!(a.status, 503, "during the outage: {a:?}");
        // The pool waits 1 s for a connection (api.db_acquire_timeout_ms); a loaded machine adds.
        assert!(a.took < Duration::from_secs(4), "slow answer: {a:?}");
    }
    assert!(
        answers.iter().all(|a| a.status != 500 && a.status != 0),
        "a 500 or no answer: {:?}",
        answers.iter().find(|a| a.status == 500 || a.status == 0)
    );
    // Every acknowledged job is done, nothing ran twice, and the workers healed themselves.
    accepted.extend(answers.iter().filter_map(|a| a.job));
    accepted.push(probe);
    all_done(db, &accepted, Duration::from_secs(60)).await;
    no_double_run(&[&a, &b]);
    assert!(a.wait_exit(Duration::ZERO).is_none() && b.wait_exit(Duration::ZERO).is_none());
    eventually(Duration::from_secs(30), "both worker processes registered again", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM workers WHERE stopped_at IS NULL AND heartbeat_at > now() - interval '5 seconds'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
            == 2
    })
    .await;
    println!(
        "outage {outage_s} s: {} requests answered 503 during it, processing resumed {:.2} s after Postgres was back",
        during.len(),
        resumed.as_secs_f64()
    );
    let c = pg.cluster.clone();
    let _ = tokio::task::spawn_blocking(move || c.stop()).await;
}

#[tokio::test]
async fn postgres_crash_restart_under_load_answers_no_500() {
    let pg = private_db("outage-crash").await;
    let db = &pg.db;
    let api = Api::spawn(db, &[]).await;
    let w = worker(db, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let posting = clients(&api, 6, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = pg.cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.stop_with("immediate")?;
        c.start()
    })
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = vec![];
    for h in posting {
        answers.extend(h.await.unwrap());
    }
    let count = |s: u16| answers.iter().filter(|a| a.status == s).count();
    assert_eq!(count(500), 0, "500s after a crash restart");
    assert_eq!(count(0), 0, "requests without an answer");
    let accepted: Vec<i64> = answers.iter().filter_map(|a| a.job).collect();
    assert!(accepted.len() > 20, "only {} jobs accepted", accepted.len());
    all_done(db, &accepted, Duration::from_secs(60)).await;
    no_double_run(&[&w]);
    println!(
        "crash restart: {} requests, {} answered 503, 0 answered 500",
        answers.len(),
        count(503)
    );
    let c = pg.cluster.clone();
    let _ = tokio::task::spawn_blocking(move || c.stop()).await;
}

#[tokio::test]
async fn a_worker_frozen_past_its_lease_claims_nothing_and_comes_back_under_a_new_id() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    // One job at a time each, so a backlog is still waiting when the frozen one wakes.
    let env = [("STOFLOW_KINDS__NOOP__CONCURRENCY", "1")];
    let mut a = worker(&db, &env);
    let mut b = worker(&db, &env);
    let long = api
        .enqueue(json!({"kind": "noop", "sleep_ms": 3000}), json!({}))
        .await;
    let running = api
        .wait_state(long, "running", Duration::from_secs(30))
        .await;
    let frozen_id = running["worker"].as_str().unwrap().to_string();
    let (frozen, other) = if pid_of_worker(&frozen_id) == a.pid() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dev::proc::signal(&frozen.child, "STOP");
    // Past the lease (1.5 s): the other process declares it dead and runs its job again.
    let done = api.wait_state(long, "done", Duration::from_secs(30)).await;
    assert_eq!(done["attempt"], 2, "{done}");
    let mut backlog = vec![];
    for _ in 0..30 {
        backlog.push(
            api.enqueue(json!({"kind": "noop", "sleep_ms": 200}), json!({}))
                .await,
        );
    }
    dev::proc::signal(&frozen.child, "CONT");
    let woke = Instant::now();

    // It re-registers under a new id (same process) and takes its share of the backlog.
    let pid = frozen.pid() as i32;
    eventually(
        Duration::from_secs(20),
        "a new worker row for the woken process",
        || {
            let pool = db.pool.clone();
            let old = frozen_id.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM workers WHERE pid = $1 AND id <> $2 AND stopped_at IS NULL",
            )
            .bind(pid)
            .bind(&old)
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
            }
        },
    )
    .await;
    println!(
        "re-registered {:.2} s after waking",
        woke.elapsed().as_secs_f64()
    );
    all_done(&db, &backlog, Duration::from_secs(60)).await;
    // Under its dead id it claimed nothing after waking: no job was ever rescued from it again.
    let claimed_when_dead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE id <> $1 AND errors::text LIKE '%' || $2 || '%'",
    )
    .bind(long)
    .bind(&frozen_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        claimed_when_dead, 0,
        "the dead worker claimed jobs after waking"
    );
    assert!(
        frozen.wait_exit(Duration::ZERO).is_none(),
        "the woken worker exited"
    );
    no_double_run(&[&*other]);
    // The frozen process's own job was mid-run when it froze; on waking, that run may reach its
    // end before the heartbeat notices the lease is gone — its ack is fenced off (one job, and
    // the result already recorded is kept). Nothing else of it may be fenced.
    let fenced: Vec<String> = frozen
        .log_text()
        .lines()
        .filter(|l| l.contains("acks were fenced off"))
        .map(|l| {
            // Without the terminal colour codes of the text log format.
            let mut plain = String::new();
            let mut in_escape = false;
            for c in l.chars() {
                match c {
                    '\u{1b}' => in_escape = true,
                    'm' if in_escape => in_escape = false,
                    _ if !in_escape => plain.push(c),
                    _ => {}
                }
            }
            plain
        })
        .collect();
    assert!(
        fenced.is_empty() || (fenced.len() == 1 && fenced[0].contains("sent=1")),
        "{fenced:?}"
    );
    let long_job = api.job(long).await;
    assert_eq!(long_job["state"], "done", "{long_job}");
}
