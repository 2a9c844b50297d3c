//! `stoflow-dev up`: the whole platform on this machine — Postgres (a private cluster unless
//! `DATABASE_URL` is set), migrations, the API, two worker processes and the scheduler — with
//! their URLs printed. A child that exits is started again (with a growing delay); Ctrl-C stops
//! everything gracefully.
//! `stoflow-dev pg`: start the private cluster and print its URL. `stoflow-dev pg-stop`: stop it.

use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use dev::proc;

const PG_FOLDER: &str = ".stoflow/pg";
const PG_PORT: u16 = 54329;

fn main() -> ExitCode {
    let cmd = std::env::args().nth(1).unwrap_or_else(|| "up".into());
    let res = match cmd.as_str() {
        "up" => up(),
        "pg" => dev::database(PG_FOLDER, PG_PORT)
            .map(|(url, _)| println!("{url}"))
            .map_err(Into::into),
        "pg-stop" => dev::pg::Cluster::ensure(&dev::data_dir(PG_FOLDER), PG_PORT)
            .and_then(|c| c.stop())
            .map_err(Into::into),
        _ => Err(anyhow::anyhow!("usage: stoflow-dev [up|pg|pg-stop]")),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stoflow-dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up() -> anyhow::Result<()> {
    let (url, cluster) = dev::database(PG_FOLDER, PG_PORT)?;
    if cluster.is_some() {
        println!(
            "Postgres: private cluster in {} ({url})",
            dev::data_dir(PG_FOLDER).display()
        );
    }
    let bind = std::env::var("STOFLOW_API__BIND").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let port = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.into());
    let (ebay, etsy, vinted) = (
        format!("http://127.0.0.1:{}", port("STOFLOW_SIM_EBAY_PORT", "8481")),
        format!("http://127.0.0.1:{}", port("STOFLOW_SIM_ETSY_PORT", "8482")),
        format!(
            "http://127.0.0.1:{}",
            port("STOFLOW_SIM_VINTED_PORT", "8483")
        ),
    );
    // Development mode: the published development keys of config.default.toml are accepted.
    // The marketplaces are the simulators, wherever STOFLOW_SIM_*_PORT put them.
    let env = [
        ("DATABASE_URL", url.clone()),
        ("STOFLOW_API__BIND", bind.clone()),
        ("STOFLOW_ENV", "development".into()),
        ("STOFLOW_MARKETPLACES__EBAY__API_BASE", ebay.clone()),
        ("STOFLOW_MARKETPLACES__EBAY__AUTH_BASE", ebay.clone()),
        ("STOFLOW_MARKETPLACES__ETSY__API_BASE", etsy.clone()),
        ("STOFLOW_MARKETPLACES__ETSY__AUTH_BASE", etsy.clone()),
        (
            "STOFLOW_MARKETPLACES__ETSY__REDIRECT_URI",
            format!("http://{bind}/oauth/etsy/callback"),
        ),
        // The simulators serve the catalogue's development image host (https://img.example/):
        // the only loopback address image fetches may reach.
        (
            "STOFLOW_MARKETPLACES__IMAGES__FETCH_REWRITE_TO",
            format!("{etsy}/_admin/photos/"),
        ),
        (
            "STOFLOW_MARKETPLACES__IMAGES__ALLOW_HOSTS",
            format!("[{:?}]", etsy.trim_start_matches("http://")),
        ),
        // eBay's challenge_code answer names the endpoint as registered.
        (
            "STOFLOW_MARKETPLACES__EBAY__NOTIFICATION_ENDPOINT",
            format!("http://{bind}/webhooks/ebay"),
        ),
    ];

    let status = proc::spawn("worker", &["migrate"], &env, None)?.wait()?;
    anyhow::ensure!(status.success(), "migrations failed");

    let mut children: Vec<Supervised> = vec![
        Supervised::start("api", "api", &[], &env)?,
        Supervised::start("worker-1", "worker", &["run"], &env)?,
        Supervised::start("worker-2", "worker", &["run"], &env)?,
        Supervised::start("scheduler", "worker", &["scheduler"], &env)?,
    ];
    // Marketplace simulators, so every flow works with no credentials (STOFLOW_DEV_NO_SIM=1: off).
    let sim = std::env::var("STOFLOW_DEV_NO_SIM").is_err();
    if sim {
        // They approve OAuth consents back to the API and push sales to it (Etsy webhooks, eBay
        // notifications), as the real ones would.
        let sim_env = [
            ("STOFLOW_SIM_API_BASE", format!("http://{bind}")),
            (
                "STOFLOW_SIM_ETSY_WEBHOOK_URL",
                format!("http://{bind}/webhooks/etsy"),
            ),
            (
                "STOFLOW_SIM_EBAY_NOTIFICATION_URL",
                format!("http://{bind}/webhooks/ebay"),
            ),
        ];
        children.push(Supervised::start(
            "simulators",
            "stoflow-sim",
            &[],
            &sim_env,
        )?);
    }

    let base = format!("http://{bind}");
    let ready = wait_ready(&format!("{base}/health/ready"), Duration::from_secs(30));
    let (logins, plugin_token) = if ready {
        demo_users(&url, sim)
    } else {
        (String::new(), None)
    };
    // The reference extension runner for the demo seller, so Vinted publishes go through.
    if let Some(token) = plugin_token {
        children.push(Supervised::start(
            "plugin",
            "stoflow-plugin",
            &["--api", &base, "--vinted", &vinted],
            &[("STOFLOW_PLUGIN_TOKEN", token)],
        )?);
    }
    if ready {
        let sims = if sim {
            format!("  Simulators eBay {ebay}, Etsy {etsy}, Vinted {vinted} (sim/README.md)\n")
        } else {
            String::new()
        };
        println!(
            "\nStoflow Jobs is up:\n  API        {base}/v1/jobs\n  Queues     {base}/v1/queues\n  Docs       {base}/docs\n  OpenAPI    {base}/openapi.json\n  Health     {base}/health/ready\n  Metrics    {base}/metrics\n{sims}{logins}\nTry:\n  TOKEN=$(curl -s -XPOST {base}/v1/auth/login -H 'content-type: application/json' -d '{{\"email\":\"{DEMO_SELLER}\",\"password\":\"{DEMO_PASSWORD}\"}}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')\n  curl -s -XPOST {base}/v1/jobs -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"job\":{{\"kind\":\"noop\",\"sleep_ms\":100}}}}'\n\nCtrl-C stops everything.\n"
        );
    } else {
        eprintln!(
            "the API did not become ready at {base}/health/ready within 30 s; see the logs above"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<_, std::io::Error>(()),
                _ = term.recv() => return Ok(()),
                _ = tick.tick() => {
                    for c in children.iter_mut() {
                        c.supervise();
                    }
                }
            }
        }
    })?;
    println!("stopping…");
    for c in children.iter_mut() {
        if let Some(child) = c.child.as_mut() {
            proc::signal(child, "TERM");
        }
    }
    for c in children.iter_mut() {
        if let Some(child) = c.child.as_mut() {
            match proc::terminate(child, Duration::from_secs(35)) {
                Some(s) if s.success() => {}
                s => eprintln!("{}: {s:?}", c.name),
            }
        }
    }
    if let Some(c) = cluster {
        c.stop()?;
    }
    Ok(())
}

/// A child process restarted when it exits, with a growing delay (a process that keeps
/// crashing is not restarted in a tight loop; one that ran a while starts again at once).
struct Supervised {
    name: &'static str,
    bin: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    child: Option<Child>,
    started: Instant,
    delay: Duration,
    restart_at: Option<Instant>,
}

impl Supervised {
    const FIRST_DELAY: Duration = Duration::from_millis(500);
    const MAX_DELAY: Duration = Duration::from_secs(30);
    /// Up this long, a process is healthy again: its next restart is quick.
    const HEALTHY_AFTER: Duration = Duration::from_secs(60);

    fn start(
        name: &'static str,
        bin: &'static str,
        args: &[&str],
        env: &[(&'static str, String)],
    ) -> std::io::Result<Self> {
        let child = proc::spawn(bin, args, env, None)?;
        Ok(Self {
            name,
            bin,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.to_vec(),
            child: Some(child),
            started: Instant::now(),
            delay: Self::FIRST_DELAY,
            restart_at: None,
        })
    }

    fn supervise(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            if self.started.elapsed() >= Self::HEALTHY_AFTER {
                self.delay = Self::FIRST_DELAY;
            }
            eprintln!(
                "stoflow-dev: {} exited ({status}); restarting in {:.1} s",
                self.name,
                self.delay.as_secs_f64()
            );
            self.child = None;
            self.restart_at = Some(Instant::now() + self.delay);
            self.delay = (self.delay * 2).min(Self::MAX_DELAY);
        }
        if self.restart_at.is_some_and(|at| Instant::now() >= at) {
            self.restart_at = None;
            let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
            match proc::spawn(self.bin, &args, &self.env, None) {
                Ok(c) => {
                    self.child = Some(c);
                    self.started = Instant::now();
                }
                Err(e) => {
                    eprintln!("stoflow-dev: cannot restart {}: {e}", self.name);
                    self.restart_at = Some(Instant::now() + self.delay);
                }
            }
        }
    }
}

const DEMO_SELLER: &str = "seller@demo.stoflow.dev";
const DEMO_OPS: &str = "ops@demo.stoflow.dev";
/// The Vinted simulator's seeded session (sim/src/vinted.rs, `Settings::default`).
const SIM_VINTED_USER: (&str, &str) = ("87654321", "stoflow_seller");
/// Development only: printed on start so a newcomer can log in at once.
const DEMO_PASSWORD: &str = "demo-password-1";

/// Creates the demo seller and ops user (once per database); returns the lines that present them
/// and, with the simulators (`vinted`), the plugin token of the demo seller's Vinted account,
/// connected to the Vinted simulator's seeded session (a new token each start).
fn demo_users(url: &str, vinted: bool) -> (String, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = match jobs::db::connect(url, 2).await {
            Ok(p) => p,
            Err(e) => return (format!("  (demo users not created: {e})\n"), None),
        };
        for (email, role) in [
            (DEMO_SELLER, jobs::auth::Role::Seller),
            (DEMO_OPS, jobs::auth::Role::Ops),
        ] {
            match jobs::auth::create_user(&pool, email, DEMO_PASSWORD, role, None).await {
                Ok(_) | Err(jobs::auth::AuthError::EmailTaken) => {}
                Err(e) => return (format!("  (demo user {email} not created: {e})\n"), None),
            }
        }
        let mut lines = format!(
            "  Logins     seller {DEMO_SELLER} / ops {DEMO_OPS}, password {DEMO_PASSWORD} (POST /v1/auth/login)\n"
        );
        if !vinted {
            return (lines, None);
        }
        let tenant: Result<i64, _> =
            sqlx::query_scalar("SELECT tenant_id FROM users WHERE email = $1")
                .bind(DEMO_SELLER)
                .fetch_one(&pool)
                .await;
        match tenant {
            Ok(t) => match jobs::plugin::connect(&pool, t, SIM_VINTED_USER.0, SIM_VINTED_USER.1).await {
                Ok((_, token)) => {
                    lines.push_str(
                        "  Vinted     the demo seller's account is connected to the simulator; stoflow-plugin runs its tasks\n",
                    );
                    (lines, Some(token))
                }
                Err(e) => (format!("{lines}  (Vinted not connected: {e})\n"), None),
            },
            Err(e) => (format!("{lines}  (Vinted not connected: {e})\n"), None),
        }
    })
}

fn wait_ready(url: &str, within: Duration) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = client.get(url).send().await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    })
}
