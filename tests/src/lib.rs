//! Test harness: a database per test (copied from a migrated template on a private cluster, or on
//! the server named by `DATABASE_URL`), and the platform's real binaries started as child
//! processes against it. Nothing is mocked.

use std::path::PathBuf;
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::OnceCell;

/// Server URL (database `postgres`) and the migrated template's name.
static SERVER: OnceCell<(String, String)> = OnceCell::const_new();
static BUILT: OnceLock<()> = OnceLock::new();

fn with_db(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, last)) if !last.contains('@') => {
            let query = last
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("{base}/{db}{query}")
        }
        _ => format!("{url}/{db}"),
    }
}

/// The api and worker binaries under test, built with the test's profile if missing or stale.
pub fn ensure_binaries() {
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "api", "-p", "worker"])
            .current_dir(dev::workspace_root())
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "building the api and worker binaries failed"
        );
    });
}

async fn server() -> &'static (String, String) {
    SERVER
        .get_or_init(|| async {
            let (url, _cluster) = tokio::task::spawn_blocking(|| {
                dev::database("target/pgtest", 54330)
            })
            .await
            .expect("join")
            .expect(
                "a Postgres for the tests (set DATABASE_URL or install Postgres server binaries)",
            );
            let admin = PgPoolOptions::new()
                .max_connections(2)
                .connect(&url)
                .await
                .expect("connect to test server");
            // Template per migration set, so a schema change never reuses a stale template.
            let hash = jobs::db::MIGRATOR.iter().fold(0u64, |h, m| {
                m.checksum
                    .iter()
                    .fold(h, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
            });
            let tmpl = format!("stoflow_tmpl_{:x}", hash & 0xffff_ffff);
            // Serialise template creation across test processes.
            sqlx::query("SELECT pg_advisory_lock(424242)")
                .execute(&admin)
                .await
                .expect("lock");
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&tmpl)
                    .fetch_one(&admin)
                    .await
                    .expect("query");
            if !exists {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {tmpl}")))
                    .execute(&admin)
                    .await
                    .expect("create template");
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&with_db(&url, &tmpl))
                    .await
                    .expect("template");
                jobs::db::migrate(&pool).await.expect("migrate template");
                pool.close().await;
            }
            // Databases left by earlier runs (tests cannot drop theirs: there is no async drop).
            // Only old ones: another test process may be using the same server right now.
            let old: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database WHERE datname LIKE 'stoflow\\_t\\_%'",
            )
            .fetch_all(&admin)
            .await
            .expect("list old");
            let now = chrono::Utc::now().timestamp();
            for db in old.into_iter().filter(|d| {
                d.split('_')
                    .nth(2)
                    .filter(|t| t.len() <= 10) // older runs named them with 16 random digits
                    .and_then(|t| i64::from_str_radix(t, 16).ok())
                    .is_none_or(|created| now - created > 3 * 3600)
            }) {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                )))
                .execute(&admin)
                .await;
            }
            sqlx::query("SELECT pg_advisory_unlock(424242)")
                .execute(&admin)
                .await
                .expect("unlock");
            admin.close().await;
            (url, tmpl)
        })
        .await
}

/// A fresh, migrated database for one test. Dropped at the start of a later run.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
    pub name: String,
}

impl TestDb {
    /// A database with every migration (the engine's and the platform's) applied.
    pub async fn new() -> Self {
        let (_, tmpl) = server().await;
        Self::create(&format!("{tmpl} STRATEGY FILE_COPY")).await
    }

    /// An empty database (no table at all), for what migrates on its own.
    pub async fn empty() -> Self {
        Self::create("template0").await
    }

    async fn create(template: &str) -> Self {
        let (server_url, _) = server().await;
        // Named with its creation time, so a later run drops only old leftovers.
        let name = format!(
            "stoflow_t_{:x}_{:08x}",
            chrono::Utc::now().timestamp(),
            rand::random::<u32>()
        );
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(server_url)
            .await
            .expect("connect");
        // A template must have no other session while it is copied; retry briefly if busy.
        let mut tries = 0;
        loop {
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {name} TEMPLATE {template}"
            )))
            .execute(&admin)
            .await;
            match r {
                Ok(_) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("create test database: {e}"),
            }
        }
        admin.close().await;
        let url = with_db(server_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect test db");
        Self { url, pool, name }
    }

    pub async fn count(&self, sql_where: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM jobs WHERE {sql_where}"
        )))
        .fetch_one(&self.pool)
        .await
        .expect("count")
    }
}

/// Settings for processes under test: fast heartbeats and polls so tests finish quickly.
pub fn test_env(db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("STOFLOW_CONFIG", "/nonexistent".into()),
        // The development keys of config.default.toml are accepted in development mode only.
        ("STOFLOW_ENV", "development".into()),
        ("STOFLOW_WORKER__HEARTBEAT_MS", "250".into()),
        ("STOFLOW_WORKER__LEASE_TIMEOUT_MS", "1500".into()),
        ("STOFLOW_WORKER__POLL_INTERVAL_MS", "100".into()),
        ("STOFLOW_DATABASE__MAX_CONNECTIONS", "6".into()),
        ("RUST_LOG", "info,sqlx=warn".into()),
    ]
}

fn log_path(name: &str) -> PathBuf {
    let dir = dev::workspace_root().join("target/test-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir.join(format!("{name}-{:08x}.log", rand::random::<u32>()))
}

/// A platform process under test; killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(bin: &str, args: &[&str], env: &[(&'static str, String)]) -> Self {
        ensure_binaries();
        let log = log_path(bin);
        let child = dev::proc::spawn(bin, args, env, Some(&log)).expect("spawn");
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        dev::proc::signal(&self.child, "KILL");
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        dev::proc::signal(&self.child, "TERM");
    }

    /// Waits for exit; None if still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker process with the test settings plus `extra` overrides.
pub fn worker(db: &TestDb, extra: &[(&'static str, &str)]) -> Proc {
    let mut env = test_env(db);
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Proc::spawn("worker", &["run"], &env)
}

/// The API process on a free port, ready to serve, with a seller and an ops user logged in.
pub struct Api {
    pub proc: Proc,
    pub base: String,
    /// Sends the seller's access token on every request (what most tests act as).
    pub http: reqwest::Client,
    /// Sends the ops user's access token.
    pub ops: reqwest::Client,
    /// Sends no credentials.
    pub anon: reqwest::Client,
    pub seller_login: Login,
    pub ops_login: Login,
}

/// A logged-in user of a test.
#[derive(Debug, Clone)]
pub struct Login {
    pub email: String,
    pub password: String,
    pub user_id: i64,
    pub tenant_id: i64,
    pub access_token: String,
    pub refresh_token: String,
}

pub const SELLER_EMAIL: &str = "seller@test.stoflow.dev";
pub const OPS_EMAIL: &str = "ops@test.stoflow.dev";
pub const TEST_PASSWORD: &str = "test-password-123";

/// Creates a user unless one with this e-mail exists (several APIs may share a test database).
pub async fn ensure_user(db: &TestDb, email: &str, role: jobs::auth::Role) {
    match jobs::auth::create_user(&db.pool, email, TEST_PASSWORD, role, None).await {
        Ok(_) | Err(jobs::auth::AuthError::EmailTaken) => {}
        Err(e) => panic!("create user {email}: {e}"),
    }
}

/// A client that sends `token` as its bearer token.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header value"),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .expect("client")
}

impl Api {
    pub async fn spawn(db: &TestDb, extra: &[(&'static str, &str)]) -> Self {
        Self::spawn_on(free_port(), db, extra).await
    }

    /// The API on `port` (when something, e.g. an OAuth redirect, must know it in advance).
    pub async fn spawn_on(port: u16, db: &TestDb, extra: &[(&'static str, &str)]) -> Self {
        let mut env = test_env(db);
        env.push(("STOFLOW_API__BIND", format!("127.0.0.1:{port}")));
        // Tests fire requests faster than a person; the per-user limit has its own test.
        env.push(("STOFLOW_API__USER_RATE_PER_S", "10000".into()));
        env.push(("STOFLOW_API__USER_RATE_BURST", "10000".into()));
        // Likewise logins and connections from one address (tests/it/walls.rs tests those).
        env.push(("STOFLOW_API__LOGIN_PER_CLIENT_PER_MIN", "100000".into()));
        env.push(("STOFLOW_API__MAX_CONNECTIONS_PER_CLIENT", "100000".into()));
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let proc = Proc::spawn("api", &[], &env);
        let base = format!("http://127.0.0.1:{port}");
        let anon = reqwest::Client::new();
        let ready = format!("{base}/health/ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = anon.get(&ready).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "api not ready; log:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure_user(db, SELLER_EMAIL, jobs::auth::Role::Seller).await;
        ensure_user(db, OPS_EMAIL, jobs::auth::Role::Ops).await;
        let seller_login = login(&anon, &base, SELLER_EMAIL, TEST_PASSWORD).await;
        let ops_login = login(&anon, &base, OPS_EMAIL, TEST_PASSWORD).await;
        Self {
            proc,
            http: client_with(&seller_login.access_token),
            ops: client_with(&ops_login.access_token),
            anon,
            base,
            seller_login,
            ops_login,
        }
    }

    /// A marketplace account row with this id owned by the test seller (jobs naming an
    /// `account_id` must name one of the caller's accounts).
    pub async fn seed_account(&self, db: &TestDb, id: i64) {
        sqlx::query(
            "INSERT INTO marketplace_accounts (id, tenant_id, marketplace, external_user_id)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, 'etsy', 'seeded-' || $1)",
        )
        .bind(id)
        .bind(self.seller_login.tenant_id)
        .execute(&db.pool)
        .await
        .expect("seed account");
    }

    /// Logs in another user (see [`ensure_user`]).
    pub async fn login(&self, email: &str) -> Login {
        login(&self.anon, &self.base, email, TEST_PASSWORD).await
    }

    /// POST JSON as `client`; returns status and body.
    pub async fn post_as(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let r = client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("post");
        Self::read(r).await
    }

    pub async fn get_as(&self, client: &reqwest::Client, path: &str) -> (u16, Value) {
        let r = client.get(self.url(path)).send().await.expect("get");
        Self::read(r).await
    }

    /// The body of `GET path` as text (pages, the OpenAPI document, metrics).
    pub async fn get_text(&self, client: &reqwest::Client, path: &str) -> String {
        let r = client.get(self.url(path)).send().await.expect("get");
        r.text().await.expect("body")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST JSON; returns status and body (JSON, or the raw text as a string).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("post");
        Self::read(r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("get");
        Self::read(r).await
    }

    pub async fn read(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Enqueues `job` (a kind-tagged object) with extra request fields; returns the job id.
    pub async fn enqueue(&self, job: Value, extra: Value) -> i64 {
        let mut body = json!({ "job": job });
        if let Value::Object(m) = extra {
            body.as_object_mut().expect("object").extend(m);
        }
        let (status, v) = self.post("/v1/jobs", &body).await;
        assert_eq!(status, 202, "enqueue failed: {v}");
        v["id"].as_i64().expect("id")
    }

    /// A job as ops users see it (any tenant's, and system jobs tests insert directly).
    pub async fn job(&self, id: i64) -> Value {
        let (status, v) = self.get_as(&self.ops, &format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "get job {id}: {v}");
        v
    }

    /// Polls the job until `pred` holds; panics with the last view after `within`.
    pub async fn wait_job(
        &self,
        id: i64,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.job(id).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not reach the expected state in {within:?}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_state(&self, id: i64, state: &str, within: Duration) -> Value {
        self.wait_job(id, within, |v| v["state"] == state).await
    }
}

/// `POST /v1/auth/login`; panics unless it succeeds.
pub async fn login(http: &reqwest::Client, base: &str, email: &str, password: &str) -> Login {
    let r = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("login");
    let (status, v) = Api::read(r).await;
    assert_eq!(status, 200, "login {email}: {v}");
    Login {
        email: email.into(),
        password: password.into(),
        user_id: v["user"]["user_id"].as_i64().expect("user id"),
        tenant_id: v["user"]["tenant_id"].as_i64().expect("tenant id"),
        access_token: v["access_token"].as_str().expect("access token").into(),
        refresh_token: v["refresh_token"].as_str().expect("refresh token").into(),
    }
}

/// The marketplace simulators, their OAuth redirects pointed at an API that will listen on
/// `api_port`, and the settings that point the platform's clients at them.
pub async fn simulators(api_port: u16) -> (sim::Running, Vec<(&'static str, String)>) {
    let mut cfg = sim::SimConfig::default();
    cfg.ebay.accept_url = format!("http://127.0.0.1:{api_port}/oauth/ebay/callback");
    let etsy_callback = format!("http://127.0.0.1:{api_port}/oauth/etsy/callback");
    cfg.etsy.redirect_uris = vec![etsy_callback.clone()];
    let sims = sim::start(cfg).await.expect("simulators");
    let env = vec![
        (
            "STOFLOW_MARKETPLACES__EBAY__API_BASE",
            sims.ebay_url.clone(),
        ),
        (
            "STOFLOW_MARKETPLACES__EBAY__AUTH_BASE",
            sims.ebay_url.clone(),
        ),
        (
            "STOFLOW_MARKETPLACES__ETSY__API_BASE",
            sims.etsy_url.clone(),
        ),
        (
            "STOFLOW_MARKETPLACES__ETSY__AUTH_BASE",
            sims.etsy_url.clone(),
        ),
        ("STOFLOW_MARKETPLACES__ETSY__REDIRECT_URI", etsy_callback),
        // eBay's challenge_code answer names the endpoint as registered: the API under test.
        (
            "STOFLOW_MARKETPLACES__EBAY__NOTIFICATION_ENDPOINT",
            format!("http://127.0.0.1:{api_port}/webhooks/ebay"),
        ),
        (
            "STOFLOW_MARKETPLACES__IMAGES__FETCH_REWRITE_TO",
            format!("{}/_admin/photos/", sims.etsy_url),
        ),
        // The development image host is on loopback: allowed by name, like `./run`'s.
        (
            "STOFLOW_MARKETPLACES__IMAGES__ALLOW_HOSTS",
            format!(
                "[{:?}]",
                sims.etsy_url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
            ),
        ),
    ];
    (sims, env)
}

/// A TCP port free right now on 127.0.0.1.
/// A port for a process a test starts. `bind(0)` and release would race: between the release and
/// the process binding it, the kernel may hand the same port to anything else binding port 0 (a
/// simulator, another test's listener). So ports come from below the kernel's ephemeral range
/// (32768–60999), where port 0 never lands, and each only once per test process.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(97) % SPAN; // test binaries rarely overlap
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < SPAN, "no free port left in {FIRST}..{}", FIRST + SPAN);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls an async condition until true; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The pid encoded in a worker id (`host-pid-random`).
pub fn pid_of_worker(worker_id: &str) -> u32 {
    worker_id
        .rsplit('-')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("worker id has a pid")
}

/// The whole platform for end-to-end marketplace tests: a database, the simulators, the API wired
/// to them and `workers` worker processes.
pub struct Platform {
    pub db: TestDb,
    pub api: Api,
    pub sims: sim::Running,
    pub workers: Vec<Proc>,
    pub env: Vec<(&'static str, String)>,
}

impl Platform {
    /// Starts it; `extra` settings come after the simulator wiring (and win). Backoff of the
    /// marketplace kinds is short so retries happen within a test.
    pub async fn start(workers: usize, extra: &[(&'static str, &str)]) -> Self {
        let db = TestDb::new().await;
        let port = free_port();
        let (sims, mut env) = simulators(port).await;
        for kind in [
            "PUBLISH_LISTING",
            "WITHDRAW_LISTING",
            "SYNC_ORDERS",
            "POLL_ETSY",
        ] {
            for (k, v) in [("BACKOFF_BASE_MS", "200"), ("BACKOFF_CAP_MS", "500")] {
                let key: &'static str =
                    Box::leak(format!("STOFLOW_KINDS__{kind}__{k}").into_boxed_str());
                env.push((key, v.into()));
            }
        }
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let refs: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let api = Api::spawn_on(port, &db, &refs).await;
        let workers = (0..workers).map(|_| worker(&db, &refs)).collect();
        Self {
            db,
            api,
            sims,
            workers,
            env,
        }
    }

    /// A process of the platform's worker binary with this platform's settings and `args`
    /// (e.g. `["scheduler"]`).
    pub fn spawn_worker_bin(&self, args: &[&str]) -> Proc {
        let mut env = test_env(&self.db);
        env.extend(self.env.iter().cloned());
        Proc::spawn("worker", args, &env)
    }

    /// The simulator URL of a marketplace.
    pub fn sim_url(&self, marketplace: &str) -> &str {
        match marketplace {
            "ebay" => &self.sims.ebay_url,
            "etsy" => &self.sims.etsy_url,
            "vinted" => &self.sims.vinted_url,
            other => panic!("no simulator for {other}"),
        }
    }

    /// The seller connects a marketplace the way a browser would: our consent URL → the
    /// simulator's consent page (which approves) → our callback. Returns the account id.
    pub async fn connect(&self, marketplace: &str) -> i64 {
        let (s, v) = self
            .api
            .get(&format!("/v1/connections/{marketplace}/connect"))
            .await;
        assert_eq!(s, 200, "{v}");
        let r = self
            .api
            .http
            .get(v["consent_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let (s, account) = Api::read(r).await;
        assert_eq!(
            (s, account["status"].clone()),
            (200, json!("connected")),
            "{account}"
        );
        account["account_id"].as_i64().unwrap()
    }

    /// Connects a Vinted account for the seller (Vinted has no OAuth: the account is named and
    /// its browser extension gets a plugin token); the answer (`account_id`, `plugin_token`).
    pub async fn connect_vinted(&self, user_id: &str, login: &str) -> Value {
        let (s, v) = self
            .api
            .post(
                "/v1/connections/vinted",
                &json!({"vinted_user_id": user_id, "login": login}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    /// Creates a product from `body` merged over defaults every marketplace accepts.
    pub async fn product(&self, body: Value) -> i64 {
        let mut p = json!({"title": "Wool scarf", "condition": "good", "price": "20",
                           "images": ["https://img.example/1.jpg"], "brand": "Acme"});
        for (k, v) in body.as_object().into_iter().flatten() {
            p[k] = v.clone();
        }
        let (s, v) = self.api.post("/v1/products", &p).await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_i64().unwrap()
    }

    /// `POST /v1/products/{id}/<action>` (publish or withdraw): the job id per marketplace, in order.
    pub async fn product_action(
        &self,
        product: i64,
        action: &str,
        marketplaces: &[&str],
    ) -> Vec<i64> {
        let (s, v) = self
            .api
            .post(
                &format!("/v1/products/{product}/{action}"),
                &json!({ "marketplaces": marketplaces }),
            )
            .await;
        assert_eq!(s, 202, "{v}");
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_i64().unwrap())
            .collect()
    }

    pub async fn publish(&self, product: i64, marketplaces: &[&str]) -> Vec<i64> {
        self.product_action(product, "publish", marketplaces).await
    }

    /// POSTs to a simulator's admin API.
    pub async fn sim_admin(&self, marketplace: &str, path: &str, body: Value) -> Value {
        self.sim_request(reqwest::Method::POST, marketplace, path, body)
            .await
    }

    /// Calls a simulator's admin API with `method`; asserts a 2xx.
    pub async fn sim_request(
        &self,
        method: reqwest::Method,
        marketplace: &str,
        path: &str,
        body: Value,
    ) -> Value {
        let r = self
            .api
            .http
            .request(method, format!("{}{path}", self.sim_url(marketplace)))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (s, v) = Api::read(r).await;
        assert!((200..300).contains(&s), "{path}: {s} {v}");
        v
    }

    /// GETs from a simulator's admin API.
    pub async fn sim_get(&self, marketplace: &str, path: &str) -> Value {
        let r = self
            .api
            .http
            .get(format!("{}{path}", self.sim_url(marketplace)))
            .send()
            .await
            .unwrap();
        Api::read(r).await.1
    }

    /// The requests a simulator served: (method, path, status).
    pub async fn sim_requests(&self, marketplace: &str) -> Vec<(String, String, u64)> {
        let log = self.sim_get(marketplace, "/_admin/requests").await;
        log["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["method"].as_str().unwrap_or_default().to_string(),
                    r["path"].as_str().unwrap_or_default().to_string(),
                    r["status"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// The listing row of (product, marketplace) as the API shows it.
    pub async fn listing(&self, product: i64, marketplace: &str) -> Value {
        let (s, v) = self
            .api
            .get(&format!("/v1/products/{product}/listings"))
            .await;
        assert_eq!(s, 200, "{v}");
        v["listings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["marketplace"] == marketplace)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// Polls an async lookup until it yields a value; panics with `what` after `within`.
pub async fn eventually_value<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads SSE `data:` lines from a response until `stop` says so or `within` passes.
pub async fn read_events(
    resp: &mut reqwest::Response,
    within: Duration,
    mut stop: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let (mut buf, mut out) = (String::new(), vec![]);
    while !stop(&out) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}
