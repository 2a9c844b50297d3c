//! Login, token expiry, signing-key rotation, refresh rotation with reuse detection, roles.

use std::time::Duration;

use integration::{Api, OPS_EMAIL, SELLER_EMAIL, TEST_PASSWORD, TestDb, client_with, eventually};
use serde_json::{Value, json};

const KEY1: &str = "k1:a2V5LW9uZS1mb3ItdGhlLXRlc3RzLTMyLWJ5dGVzLWxvbmc=";
const KEY2: &str = "k2:a2V5LXR3by1mb3ItdGhlLXRlc3RzLTMyLWJ5dGVzLWxvbmc=";

#[tokio::test]
async fn login_gives_a_working_token_and_wrong_credentials_get_401() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let (s, me) = api.get("/v1/auth/me").await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["role"], "seller");
    assert_eq!(me["tenant_id"], api.seller_login.tenant_id);

    for (email, pw) in [
        (SELLER_EMAIL, "wrong-password-xyz"),
        ("nobody@test.stoflow.dev", TEST_PASSWORD),
    ] {
        let (s, v) = api
            .post_as(
                &api.anon,
                "/v1/auth/login",
                &json!({"email": email, "password": pw}),
            )
            .await;
        assert_eq!(s, 401, "{v}");
        assert_eq!(
            v["detail"], "e-mail or password is wrong",
            "same answer either way"
        );
    }
    // No token, a garbage token, a token with a tampered payload: 401 problem+json.
    let r = api.anon.get(api.url("/v1/products")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let t = &api.seller_login.access_token;
    let mut parts: Vec<String> = t.split('.').map(String::from).collect();
    parts[1] = parts[1].chars().rev().collect();
    for bad in ["nope".to_string(), parts.join(".")] {
        let (s, _) = api.get_as(&client_with(&bad), "/v1/products").await;
        assert_eq!(s, 401);
    }
    // Public routes stay public.
    for p in ["/health/live", "/health/ready", "/openapi.json", "/metrics"] {
        let r = api.anon.get(api.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
}

#[tokio::test]
async fn an_access_token_stops_working_when_it_expires() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[("STOFLOW_AUTH__ACCESS_TTL_S", "1")]).await;
    let (s, v) = api
        .post_as(
            &api.anon,
            "/v1/auth/login",
            &json!({"email": SELLER_EMAIL, "password": TEST_PASSWORD}),
        )
        .await;
    assert_eq!((s, v["expires_in"].clone()), (200, json!(1)));
    let c = client_with(v["access_token"].as_str().unwrap());
    eventually(Duration::from_secs(5), "the token expires", || async {
        api.get_as(&c, "/v1/auth/me").await.0 == 401
    })
    .await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_login() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let r0 = api.seller_login.refresh_token.clone();
    let (s, v1) = api
        .post_as(&api.anon, "/v1/auth/refresh", &json!({"refresh_token": r0}))
        .await;
    assert_eq!(s, 200, "{v1}");
    let r1 = v1["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r0, "a new refresh token each time");
    let (s, _) = api
        .get_as(
            &client_with(v1["access_token"].as_str().unwrap()),
            "/v1/auth/me",
        )
        .await;
    assert_eq!(s, 200);

    // r0 again (a stolen copy): refused, and the whole family is revoked — r1 dies too.
    let (s, v) = api
        .post_as(&api.anon, "/v1/auth/refresh", &json!({"refresh_token": r0}))
        .await;
    assert_eq!(s, 401, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("already used"),
        "{v}"
    );
    let (s, _) = api
        .post_as(&api.anon, "/v1/auth/refresh", &json!({"refresh_token": r1}))
        .await;
    assert_eq!(s, 401);
    // Stored hashed: the raw token is nowhere in the table.
    let hit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'",
    )
    .bind(&r1)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(hit, 0);
    let (s, _) = api
        .post_as(
            &api.anon,
            "/v1/auth/refresh",
            &json!({"refresh_token": "made-up"}),
        )
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn rotated_signing_keys_keep_old_tokens_valid_only_for_the_grace_window() {
    let db = TestDb::new().await;
    let keys = |v: &str| v.to_string();
    let api = Api::spawn(
        &db,
        &[
            (
                "STOFLOW_AUTH__SIGNING_KEYS",
                &keys(&format!("[\"{KEY1}\"]")),
            ),
            ("STOFLOW_AUTH__ACTIVE_SIGNING_KEY", "k1"),
        ],
    )
    .await;
    let old = api.seller_login.access_token.clone();
    drop(api);

    // k2 active, k1 verifying for another hour: the old token still works, new ones use k2.
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let rotated = format!("[\"{KEY2}\", \"{KEY1}:{until}\"]");
    let api = Api::spawn(
        &db,
        &[
            ("STOFLOW_AUTH__SIGNING_KEYS", &rotated),
            ("STOFLOW_AUTH__ACTIVE_SIGNING_KEY", "k2"),
        ],
    )
    .await;
    assert_eq!(api.get_as(&client_with(&old), "/v1/auth/me").await.0, 200);
    let header: Value = {
        use base64::Engine;
        let h = api
            .seller_login
            .access_token
            .split('.')
            .next()
            .unwrap()
            .to_string();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["kid"], "k2");
    drop(api);

    // Grace window over: k1 tokens are refused; k2 tokens still work.
    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let ended = format!("[\"{KEY2}\", \"{KEY1}:{past}\"]");
    let api = Api::spawn(
        &db,
        &[
            ("STOFLOW_AUTH__SIGNING_KEYS", &ended),
            ("STOFLOW_AUTH__ACTIVE_SIGNING_KEY", "k2"),
        ],
    )
    .await;
    assert_eq!(api.get_as(&client_with(&old), "/v1/auth/me").await.0, 401);
    assert_eq!(api.get("/v1/auth/me").await.0, 200);
}

#[tokio::test]
async fn ops_only_routes_refuse_sellers_with_403() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    assert_eq!(api.get("/v1/queues").await.0, 403);
    assert_eq!(api.post("/v1/queues/noop/pause", &json!({})).await.0, 403);
    assert_eq!(api.post("/v1/queues/noop/resume", &json!({})).await.0, 403);
    assert_eq!(api.get("/v1/jobs?tenant_id=1").await.0, 403);
    assert_eq!(api.get_as(&api.ops, "/v1/queues").await.0, 200);
    let (_, me) = api.get_as(&api.ops, "/v1/auth/me").await;
    assert_eq!(me["role"], "ops");
    let _ = OPS_EMAIL;
}

#[tokio::test]
async fn a_user_over_the_request_rate_gets_429_with_retry_after() {
    let db = TestDb::new().await;
    let api = Api::spawn(
        &db,
        &[
            ("STOFLOW_API__USER_RATE_PER_S", "1"),
            ("STOFLOW_API__USER_RATE_BURST", "3"),
        ],
    )
    .await;
    let mut statuses = vec![];
    for _ in 0..6 {
        let r = api.http.get(api.url("/v1/auth/me")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // Another user's budget is their own.
    assert_eq!(api.get_as(&api.ops, "/v1/auth/me").await.0, 200);
}

#[tokio::test]
async fn cors_answers_for_configured_origins_only() {
    let db = TestDb::new().await;
    let api = Api::spawn(
        &db,
        &[("STOFLOW_API__CORS_ORIGINS", "[\"https://app.example\"]")],
    )
    .await;
    let pre = |origin: &'static str| {
        api.anon
            .request(reqwest::Method::OPTIONS, api.url("/v1/products"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = pre("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = pre("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_documented_create_user_command_makes_an_ops_user_who_can_log_in() {
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    // README: `STOFLOW_NEW_USER_PASSWORD=… worker create-user --email you@example.com --role ops`
    let out = std::process::Command::new(dev::proc::bin("worker"))
        .args([
            "create-user",
            "--email",
            "first-ops@test.stoflow.dev",
            "--role",
            "ops",
        ])
        .env("DATABASE_URL", &db.url)
        .env("STOFLOW_NEW_USER_PASSWORD", "a-long-first-password")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, v) = api
        .post_as(
            &api.anon,
            "/v1/auth/login",
            &json!({"email": "first-ops@test.stoflow.dev", "password": "a-long-first-password"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, me) = api
        .get_as(
            &client_with(v["access_token"].as_str().unwrap()),
            "/v1/auth/me",
        )
        .await;
    assert_eq!((s, me["role"].clone()), (200, json!("ops")), "{me}");
}
