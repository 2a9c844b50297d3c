//! Token refresh jobs against the simulators: Etsy rotation under concurrent refreshes, and a
//! revoked grant that holds the account's jobs until the seller reconnects.

use std::time::Duration;

use integration::{Api, TestDb, free_port, simulators, worker};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

struct Setup {
    db: TestDb,
    api: Api,
    sims: sim::Running,
    workers: Vec<integration::Proc>,
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

/// [`setup`] with `extra` settings for the API and the workers.
async fn setup_with(extra: &[(&'static str, &str)]) -> Setup {
    let db = TestDb::new().await;
    let port = free_port();
    let (sims, mut env) = simulators(port).await;
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = Api::spawn_on(port, &db, &env).await;
    let workers = vec![worker(&db, &env), worker(&db, &env)];
    Setup {
        db,
        api,
        sims,
        workers,
    }
}

impl Setup {
    /// Connects through our consent URL → the simulator (approves at once) → our callback.
    async fn connect(&self, marketplace: &str) -> i64 {
        self.connect_showing_secrets(marketplace).await.0
    }

    /// [`Self::connect`], step by step: also returns the authorization code and state that
    /// travelled in the callback's query string.
    async fn connect_showing_secrets(&self, marketplace: &str) -> (i64, Vec<String>) {
        let (s, v) = self
            .api
            .get(&format!("/v1/connections/{marketplace}/connect"))
            .await;
        assert_eq!(s, 200, "{v}");
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let consent = no_redirect
            .get(v["consent_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let callback = consent.headers()["location"].to_str().unwrap().to_string();
        let secrets: Vec<String> = reqwest::Url::parse(&callback)
            .unwrap()
            .query_pairs()
            .filter(|(k, _)| k == "code" || k == "state")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(secrets.len(), 2, "{callback}");
        let r = self.api.http.get(&callback).send().await.unwrap();
        let (s, account) = Api::read(r).await;
        assert_eq!(
            (s, account["status"].clone()),
            (200, json!("connected")),
            "{account}"
        );
        (account["account_id"].as_i64().unwrap(), secrets)
    }

    async fn expire_access(&self, account: i64) {
        sqlx::query("UPDATE marketplace_accounts SET access_expires_at = now() WHERE id = $1")
            .bind(account)
            .execute(&self.db.pool)
            .await
            .unwrap();
    }

    async fn refresh_jobs(&self, account: i64, n: usize) -> Vec<i64> {
        let jobs: Vec<Value> = (0..n)
            .map(|_| json!({"job": {"kind": "refresh_token", "account_id": account}}))
            .collect();
        let (s, v) = self
            .api
            .post("/v1/jobs/batch", &json!({ "jobs": jobs }))
            .await;
        assert_eq!(s, 202, "{v}");
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect()
    }

    async fn status(&self, account: i64) -> Value {
        let (_, v) = self.api.get("/v1/connections").await;
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["account_id"] == account)
            .cloned()
            .unwrap()
    }
}

#[tokio::test]
async fn etsy_rotation_under_two_concurrent_refreshes_keeps_a_working_connection() {
    let s = setup().await;
    let account = s.connect("etsy").await;
    let scheduled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'refresh_token' AND run_at > now() + interval '45 minutes'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        scheduled, 1,
        "connecting schedules a refresh ahead of the 1 h expiry"
    );

    s.expire_access(account).await;
    let ids = s.refresh_jobs(account, 2).await;
    let mut refreshed = 0;
    for id in ids {
        let v = s.api.wait_state(id, "done", T).await;
        if v["result"]["refreshed"] == true {
            refreshed += 1;
        }
    }
    assert_eq!(refreshed, 1, "the two refreshes collapsed into one");
    assert_eq!(s.status(account).await["status"], "connected");

    // The stored refresh token is the rotated one: the next refresh works too.
    s.expire_access(account).await;
    let id = s.refresh_jobs(account, 1).await[0];
    let v = s.api.wait_state(id, "done", T).await;
    assert_eq!(v["result"]["refreshed"], true, "{v}");
    assert_eq!(s.status(account).await["status"], "connected");
}

#[tokio::test]
async fn a_revoked_refresh_token_holds_the_accounts_jobs_until_it_reconnects() {
    let s = setup().await;
    let account = s.connect("ebay").await;
    let (st, p) = s
        .api
        .post(
            "/v1/products",
            &json!({"title": "Lamp", "condition": "good", "price": "20", "images": ["https://img.example/1.jpg"], "brand": "Acme"}),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let r = reqwest::Client::new()
        .post(format!("{}/_admin/tokens/revoke", s.sims.ebay_url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    s.expire_access(account).await;
    let id = s.refresh_jobs(account, 1).await[0];
    let v = s.api.wait_state(id, "dead", T).await;
    assert_eq!(v["last_error"]["class"], "auth_revoked", "{v}");
    let c = s.status(account).await;
    assert_eq!(c["status"], "broken", "{c}");
    assert!(
        c["status_reason"].as_str().unwrap().contains("reconnect"),
        "{c}"
    );

    // Publishing now is held (not failed), saying why.
    let (st, v) = s
        .api
        .post(
            &format!("/v1/products/{}/publish", p["id"]),
            &json!({"marketplaces": ["ebay"]}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let job = v["jobs"][0]["job_id"].as_i64().unwrap();
    let held = s
        .api
        .wait_job(job, T, |v| v["last_error"]["class"] == "account_broken")
        .await;
    assert_ne!(held["state"], "dead", "{held}");
    assert!(
        held["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("reconnect")
    );

    // Reconnecting releases it at once.
    s.connect("ebay").await;
    let done = s.api.wait_state(job, "done", T).await;
    assert!(done["result"]["listing_id"].is_string(), "{done}");
}

/// Token requests go out on `oauth2` through the same path as every marketplace call: an eBay
/// token endpoint answering 503 is retried (not a reason to reconnect), its failures open eBay's
/// circuit, and once it answers again the refresh completes and the circuit closes.
#[tokio::test]
async fn a_failing_token_endpoint_is_retried_and_opens_the_circuit_without_breaking_the_connection()
{
    let s = setup_with(&[
        ("STOFLOW_LIMITS__CIRCUIT__FAILURE_THRESHOLD", "2"),
        ("STOFLOW_LIMITS__CIRCUIT__OPEN_MS", "1000"),
        ("STOFLOW_LIMITS__CIRCUIT__MAX_OPEN_MS", "2000"),
        ("STOFLOW_KINDS__REFRESH_TOKEN__BACKOFF_BASE_MS", "100"),
        ("STOFLOW_KINDS__REFRESH_TOKEN__BACKOFF_CAP_MS", "300"),
    ])
    .await;
    let account = s.connect("ebay").await;
    let token_path = "/identity/v1/oauth2/token";
    crate::limits::admin(
        &s.sims.ebay_url,
        reqwest::Method::POST,
        "/_admin/faults",
        json!({"fail_next": 100000, "fail_status": 503, "path_prefix": token_path}),
    )
    .await;
    s.expire_access(account).await;
    let id = s.refresh_jobs(account, 1).await[0];
    let circuit = || async {
        let (st, v) = s.api.get_as(&s.api.ops, "/v1/limits").await;
        assert_eq!(st, 200, "{v}");
        v["marketplaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["marketplace"] == "ebay")
            .map(|x| x["circuit"].clone())
            .unwrap()
    };
    integration::eventually(
        T,
        "eBay's circuit opens on token endpoint failures",
        || async { circuit().await != "closed" },
    )
    .await;
    let failing = s
        .api
        .wait_job(id, T, |v| v["last_error"]["class"].is_string())
        .await;
    assert!(
        ["unavailable", "circuit_open"].contains(&failing["last_error"]["class"].as_str().unwrap()),
        "{failing}"
    );
    assert_ne!(failing["state"], "dead", "{failing}");
    assert_eq!(s.status(account).await["status"], "connected");
    let failed = crate::limits::sim_log(&s.sims.ebay_url, token_path)
        .await
        .into_iter()
        .filter(|l| l.status == Some(503))
        .count();
    assert!(
        failed >= 2,
        "the refresh reached eBay's token endpoint: {failed}"
    );

    crate::limits::admin(
        &s.sims.ebay_url,
        reqwest::Method::DELETE,
        "/_admin/faults",
        json!({}),
    )
    .await;
    let v = s.api.wait_state(id, "done", T).await;
    assert_eq!(v["result"]["refreshed"], true, "{v}");
    assert_eq!(circuit().await, "closed");
    assert_eq!(s.status(account).await["status"], "connected");
}

/// Every token the platform holds for `account`, decrypted from its row.
async fn tokens_of(db: &TestDb, account: i64) -> Vec<String> {
    let settings = jobs::Settings::load(jobs::kinds::ALL_KINDS).unwrap();
    let cipher = jobs::secrets::TokenCipher::new(&settings.security).unwrap();
    let (key, access, refresh): (String, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT token_key_id, access_token, refresh_token FROM marketplace_accounts WHERE id = $1",
    )
    .bind(account)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    vec![
        cipher.open(&key, &access).unwrap(),
        cipher.open(&key, &refresh).unwrap(),
    ]
}

#[tokio::test]
async fn no_token_reaches_the_logs_of_a_full_connect_and_refresh_run() {
    let s = setup().await;
    let mut seen = Vec::new();
    for m in ["ebay", "etsy"] {
        let (account, code_and_state) = s.connect_showing_secrets(m).await;
        seen.extend(code_and_state);
        seen.extend(tokens_of(&s.db, account).await);
        // A refresh gets new tokens (Etsy rotates the refresh token too): those must not leak either.
        s.expire_access(account).await;
        let id = s.refresh_jobs(account, 1).await[0];
        let v = s.api.wait_state(id, "done", T).await;
        assert_eq!(v["result"]["refreshed"], true, "{v}");
        let after = tokens_of(&s.db, account).await;
        assert_ne!(
            after[0],
            seen[seen.len() - 2],
            "{m}: the access token changed"
        );
        seen.extend(after);
    }
    // The job API shows no token either (payloads and results are redacted or token-free).
    let (_, jobs) = s.api.get("/v1/jobs?limit=100").await;
    let logs = [
        ("api", s.api.proc.log_text()),
        ("worker 1", s.workers[0].log_text()),
        ("worker 2", s.workers[1].log_text()),
        ("jobs API", jobs.to_string()),
    ];
    assert!(
        logs[0].1.lines().count() > 5 && logs[1].1.len() + logs[2].1.len() > 0,
        "the processes logged"
    );
    // The logins' password, access and refresh tokens.
    seen.push(integration::TEST_PASSWORD.to_string());
    for l in [&s.api.seller_login, &s.api.ops_login] {
        seen.push(l.access_token.clone());
        seen.push(l.refresh_token.clone());
    }
    for token in &seen {
        assert!(token.len() >= 16, "a real secret: {token}");
        for (name, text) in &logs {
            assert!(!text.contains(token.as_str()), "{name} shows a token");
        }
    }
}
