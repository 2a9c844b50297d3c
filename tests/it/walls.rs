//! Safe defaults and HTTP hardening: what an attacker or a careless deployment would try.

use std::time::Duration;

use integration::{Api, Proc, TestDb, test_env};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Without an explicit development mode, the published development keys stop every process
/// from starting, with a message naming the settings to set.
#[tokio::test]
async fn processes_refuse_to_start_with_the_published_keys_outside_development() {
    let db = TestDb::new().await;
    let env: Vec<_> = test_env(&db)
        .into_iter()
        .filter(|(k, _)| *k != "STOFLOW_ENV")
        .collect();
    for (bin, args) in [
        ("api", vec![]),
        ("worker", vec!["run"]),
        ("worker", vec!["scheduler"]),
    ] {
        let mut p = Proc::spawn(bin, &args, &env);
        let status = p
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{bin} {args:?} started with the development keys"));
        assert!(!status.success());
        let log = p.log_text();
        for setting in [
            "STOFLOW_SECURITY__TOKEN_KEYS",
            "STOFLOW_AUTH__SIGNING_KEYS",
            "STOFLOW_ENV=development",
        ] {
            assert!(log.contains(setting), "{bin}: {setting} not named:\n{log}");
        }
    }
    // Nothing was registered or served.
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 0);
}

/// A client bound to another loopback address (127.0.0.2): another "machine" for the API.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

async fn login_status(
    http: &reqwest::Client,
    api: &Api,
    email: &str,
    password: &str,
) -> (u16, Value) {
    let r = http
        .post(api.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 429 {
        assert!(r.headers().contains_key("retry-after"));
    }
    if status >= 400 {
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn an_attackers_failed_logins_never_lock_the_owner_out_from_another_address() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let email = &api.seller_login.email;
    let attacker = client_from([127, 0, 0, 1]);
    let mut statuses = vec![];
    for _ in 0..10 {
        statuses.push(
            login_status(&attacker, &api, email, "wrong-password-1")
                .await
                .0,
        );
    }
    // The first failures are answered as failures; then the attacker's address has to wait.
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    let (s, v) = login_status(&attacker, &api, email, integration::TEST_PASSWORD).await;
    assert_eq!(
        s, 429,
        "the attacker's address waits even with the right password: {v}"
    );
    // The owner, elsewhere, logs in at once.
    let owner = client_from([127, 0, 0, 2]);
    let (s, v) = login_status(&owner, &api, email, integration::TEST_PASSWORD).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["access_token"].is_string());
}

#[tokio::test]
async fn one_address_trying_many_e_mails_is_limited() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[("STOFLOW_API__LOGIN_PER_CLIENT_PER_MIN", "20")]).await;
    let spray = client_from([127, 0, 0, 3]);
    let mut statuses = vec![];
    for i in 0..30 {
        let email = format!("nobody{i}@example.com");
        statuses.push(login_status(&spray, &api, &email, "guess-123456").await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );
    let (s, _) = login_status(
        &client_from([127, 0, 0, 4]),
        &api,
        &api.seller_login.email,
        integration::TEST_PASSWORD,
    )
    .await;
    assert_eq!(s, 200, "another address is not limited");
}

#[tokio::test]
async fn a_connection_sending_its_headers_slowly_is_dropped() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[("STOFLOW_API__HEADER_TIMEOUT_MS", "2000")]).await;
    let addr = api.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed_after = None;
    for b in request {
        if conn.write_all(&[*b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // Closed by the server? A read returns end of file (or an error) at once.
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => panic!("answered a request whose head took {:?}", started.elapsed()),
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("the slow connection was held to the end");
    assert!(
        closed_after < Duration::from_secs(6),
        "closed after {closed_after:?}"
    );
    // A normal request still works.
    assert_eq!(api.get("/health/live").await.0, 200);
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_connections() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[("STOFLOW_API__MAX_CONNECTIONS_PER_CLIENT", "4")]).await;
    let addr: std::net::SocketAddr = api.base.trim_start_matches("http://").parse().unwrap();
    let from = |ip: [u8; 4]| {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(std::net::SocketAddr::from((ip, 0))).unwrap();
        s
    };
    let mut held = vec![];
    for _ in 0..4 {
        held.push(from([127, 0, 0, 5]).connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fifth = from([127, 0, 0, 5]).connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let _ = fifth
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let n = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf))
        .await
        .expect("the fifth connection is closed, not left hanging");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the fifth connection was served: {n:?}"
    );
    // Another address is served, and so is this one once it lets a connection go.
    let mut other = from([127, 0, 0, 6]).connect(addr).await.unwrap();
    other
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    other.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = from([127, 0, 0, 5]).connect(addr).await.unwrap();
    again
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    again.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_batch_repeating_a_key_with_other_arguments_is_refused_naming_no_job() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (s, v) = api
        .post(
            "/v1/jobs/batch",
            &json!({"jobs": [
                {"job": {"kind": "noop", "sleep_ms": 1}, "idempotency_key": "k-1"},
                {"job": {"kind": "noop", "sleep_ms": 2}, "idempotency_key": "k-1"},
            ]}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("jobs[0] and jobs[1]"), "{v}");
    assert!(
        !detail.contains("job 1"),
        "names a job that does not exist: {v}"
    );
    assert_eq!(db.count("true").await, 0, "nothing enqueued");
    // The same job twice under one key is one job.
    let (s, v) = api
        .post(
            "/v1/jobs/batch",
            &json!({"jobs": [
                {"job": {"kind": "noop"}, "idempotency_key": "k-2"},
                {"job": {"kind": "noop"}, "idempotency_key": "k-2"},
            ]}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["jobs"][0]["id"], v["jobs"][1]["id"], "{v}");
}

#[tokio::test]
async fn a_request_the_http_layer_cannot_parse_still_gets_a_problem_document() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let addr = api.base.trim_start_matches("http://").to_string();
    for bad in [&b"\x01"[..], b"\x7f"] {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut req = b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a".to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"b\r\nConnection: close\r\n\r\n");
        conn.write_all(&req).await.unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).await.unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400"), "{text}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{text}"
        );
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 400, "{v}");
        assert!(v["detail"].as_str().unwrap().contains("header"), "{v}");
    }
}
