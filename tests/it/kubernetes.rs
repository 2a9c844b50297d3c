//! The Kubernetes manifests (`k8s/`) against the real platform. They are rendered offline with
//! `kubectl kustomize k8s/production` the way an operator does it (the example Secret file filled
//! in with fresh keys), and every role is then run as its pod would run it: the container's
//! command, with the env its `env` and `envFrom` give it, in production mode, against a test
//! database. So every setting they name must be one the processes accept (they refuse unknown
//! `STOFLOW_` variables), every probe must answer 2xx where it points, the KEDA query must count
//! the queue on a migrated database, and the worker's grace period must outlast its shutdown
//! timeout.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use integration::{OPS_EMAIL, Proc, SELLER_EMAIL, TEST_PASSWORD, TestDb, client_with};
use serde::Deserialize as _;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// Variables the processes read that are not `STOFLOW_` settings.
const OTHER_ENV: [&str; 2] = ["DATABASE_URL", "RUST_LOG"];

fn k8s_dir() -> std::path::PathBuf {
    dev::workspace_root().join("k8s")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read k8s/") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// `NAME=value` lines of an env file (kustomize's `envs`: values as written).
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// What an operator does with `stoflow.env.example`: every `REPLACE…` placeholder replaced by a
/// fresh value of its kind, the database URL pointed at `db_url`.
fn filled_in(example: &[(String, String)], db_url: &str) -> String {
    let mut out = String::new();
    for (name, value) in example {
        let mut v = if name == "DATABASE_URL" {
            db_url.to_string()
        } else {
            value.replace(
                "REPLACE_WITH_BASE64_OF_32_RANDOM_BYTES",
                &B64.encode(rand::random::<[u8; 32]>()),
            )
        };
        while let Some(at) = v.find("REPLACE") {
            let end = v[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .map_or(v.len(), |n| at + n);
            v.replace_range(at..end, &random_hex(32));
        }
        out.push_str(&format!("{name}={v}\n"));
    }
    out
}

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// Renders `k8s/production` from a copy of `k8s/` with `stoflow.env` holding `secret_env`.
fn render(secret_env: &str) -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!("stoflow-k8s-{}", random_hex(4)));
    copy_dir(&k8s_dir(), &dir);
    std::fs::write(dir.join("production/stoflow.env"), secret_env).expect("write stoflow.env");
    let out = std::process::Command::new(kubectl())
        .arg("kustomize")
        .arg(dir.join("production"))
        .output()
        .unwrap_or_else(|e| {
            panic!("run kubectl (scripts/ensure-deps installs it, or set KUBECTL): {e}")
        });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    docs.iter().filter(move |d| d["kind"] == kind)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The single container of a Deployment or Job.
fn container(workload: &Value) -> &Value {
    let cs = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(cs.len(), 1, "one container per role");
    &cs[0]
}

/// The env a container gets: `envFrom` ConfigMaps and Secrets, then `env` (which wins).
fn container_env(docs: &[Value], c: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = from["configMapRef"]["name"].as_str() {
            for (k, v) in find(docs, "ConfigMap", name)["data"]
                .as_object()
                .expect("data")
            {
                env.insert(k.clone(), v.as_str().expect("value").to_string());
            }
        } else if let Some(name) = from["secretRef"]["name"].as_str() {
            for (k, v) in find(docs, "Secret", name)["data"]
                .as_object()
                .expect("data")
            {
                // kubectl folds long values over lines.
                let b64: String = v.as_str().expect("value").split_whitespace().collect();
                let raw = B64.decode(b64).expect("base64");
                env.insert(k.clone(), String::from_utf8(raw).expect("utf-8"));
            }
        } else {
            panic!("unexpected envFrom {from}");
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let v = e["value"]
            .as_str()
            .unwrap_or_else(|| panic!("env {e} has no literal value"));
        env.insert(e["name"].as_str().expect("name").to_string(), v.to_string());
    }
    env
}

/// A role's process under test: its command and env, each probe's listen address moved to a
/// free local port. Returns the process and, per probe, the URL it checks.
struct Role {
    proc: Proc,
    probes: Vec<(&'static str, String)>,
}

fn start(docs: &[Value], workload: &Value, db: &TestDb) -> Role {
    let c = container(workload);
    let cmd = strs(&c["command"]);
    let mut env = container_env(docs, c);
    for name in env.keys() {
        assert!(
            name.starts_with("STOFLOW_") || OTHER_ENV.contains(&name.as_str()),
            "{name}: not a variable the platform reads"
        );
    }
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().expect("port name").to_string(),
                p["containerPort"].as_u64().expect("containerPort"),
            )
        })
        .collect();
    let mut probes = vec![];
    let mut moved = BTreeMap::new();
    for which in ["livenessProbe", "readinessProbe"] {
        let probe = &c[which];
        if probe.is_null() {
            continue;
        }
        let get = &probe["httpGet"];
        let port = match &get["port"] {
            Value::String(name) => *ports
                .get(name)
                .unwrap_or_else(|| panic!("{which}: no container port named {name}")),
            p => p.as_u64().expect("port"),
        };
        // The setting that makes the process listen there (api.bind, worker.metrics_bind).
        let local = match moved.get(&port) {
            Some(local) => *local,
            None => {
                let (setting, _) = env
                    .iter()
                    .find(|(k, v)| k.starts_with("STOFLOW_") && v.ends_with(&format!(":{port}")))
                    .unwrap_or_else(|| {
                        panic!("{which}: no setting makes the process listen on {port}")
                    });
                let setting = setting.clone();
                let local = integration::free_port();
                env.insert(setting, format!("127.0.0.1:{local}"));
                moved.insert(port, local);
                local
            }
        };
        let path = get["path"].as_str().expect("probe path");
        probes.push((which, format!("http://127.0.0.1:{local}{path}")));
    }
    env.insert("DATABASE_URL".into(), db.url.clone());
    // Isolation from a stoflow.toml where the test runs; the container has none either.
    env.insert("STOFLOW_CONFIG".into(), "/nonexistent".into());
    // Proc takes 'static names; a test leaks a few bytes.
    let env: Vec<(&'static str, String)> = env
        .into_iter()
        .map(|(k, v)| (&*Box::leak(k.into_boxed_str()), v))
        .collect();
    let args: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
    Role {
        proc: Proc::spawn(&cmd[0], &args, &env),
        probes,
    }
}

async fn probe_ok(role: &Role, which: &str) {
    let url = &role
        .probes
        .iter()
        .find(|(w, _)| *w == which)
        .unwrap_or_else(|| panic!("no {which}"))
        .1;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + T;
    loop {
        let status = http.get(url).send().await.map(|r| r.status());
        if status.as_ref().is_ok_and(|s| s.is_success()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{which} {url}: {status:?}; log:\n{}",
            role.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn grace_s(workload: &Value) -> u64 {
    workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30) // Kubernetes' default
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

#[tokio::test]
async fn manifests_name_only_real_settings_routes_binaries_and_tables() {
    let db = TestDb::new().await;
    let example = env_file(
        &std::fs::read_to_string(k8s_dir().join("production/stoflow.env.example"))
            .expect("k8s/production/stoflow.env.example"),
    );
    let docs = render(&filled_in(&example, &db.url));

    // The roles of the Procfile, each running a binary the image ships.
    let dockerfile =
        std::fs::read_to_string(dev::workspace_root().join("Dockerfile")).expect("Dockerfile");
    let shipped: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from=build"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.split("target/release/").nth(1))
        .collect();
    let api = find(&docs, "Deployment", "stoflow-api");
    let worker = find(&docs, "Deployment", "stoflow-worker");
    let scheduler = find(&docs, "Deployment", "stoflow-scheduler");
    let migrate = find(&docs, "Job", "stoflow-migrate");
    for (w, cmd) in [
        (api, vec!["api"]),
        (worker, vec!["worker", "run"]),
        (scheduler, vec!["worker", "scheduler"]),
        (migrate, vec!["worker", "migrate"]),
    ] {
        let c = strs(&container(w)["command"]);
        assert_eq!(c, cmd, "{}", w["metadata"]["name"]);
        assert!(
            shipped.contains(&c[0].as_str()),
            "{} not in the image",
            c[0]
        );
        let image = container(w)["image"].as_str().expect("image");
        assert!(image.contains("stoflow-jobs"), "{image}");
    }

    // The Service reaches the API's port; every Deployment has a PodDisruptionBudget.
    let svc = find(&docs, "Service", "stoflow-api");
    let api_labels = &api["spec"]["template"]["metadata"]["labels"];
    assert!(selects(
        &json!({"matchLabels": svc["spec"]["selector"]}),
        api_labels
    ));
    let target = &svc["spec"]["ports"][0]["targetPort"];
    assert!(
        container(api)["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| &p["name"] == target),
        "the Service's targetPort {target} is no port of the API"
    );
    for d in of_kind(&docs, "Deployment") {
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            of_kind(&docs, "PodDisruptionBudget").any(|p| selects(&p["spec"]["selector"], labels)),
            "no PodDisruptionBudget for {}",
            d["metadata"]["name"]
        );
    }

    // The kubelet waits longer than a worker gives its in-flight jobs.
    let worker_env = container_env(&docs, container(worker));
    let shutdown_ms = worker_env
        .get("STOFLOW_WORKER__SHUTDOWN_TIMEOUT_MS")
        .map(|v| v.parse().expect("ms"))
        .unwrap_or(jobs::Settings::defaults().worker.shutdown_timeout_ms);
    assert!(
        grace_s(worker) * 1000 > shutdown_ms,
        "worker terminationGracePeriodSeconds {} <= worker.shutdown_timeout_ms {shutdown_ms}",
        grace_s(worker)
    );

    // KEDA scales the worker Deployment with the platform's database URL.
    let so = find(&docs, "ScaledObject", "stoflow-worker");
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "stoflow-worker");
    let trigger = &so["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "postgresql");
    let query = trigger["metadata"]["query"].as_str().expect("query");
    let target: f64 = trigger["metadata"]["targetQueryValue"]
        .as_str()
        .expect("targetQueryValue")
        .parse()
        .expect("number");
    assert!(target > 0.0);
    let auth = find(
        &docs,
        "TriggerAuthentication",
        trigger["authenticationRef"]["name"].as_str().expect("auth"),
    );
    let secret_ref = &auth["spec"]["secretTargetRef"][0];
    assert_eq!(secret_ref["parameter"], "connection");
    let secret = find(&docs, "Secret", secret_ref["name"].as_str().expect("name"));
    let key = secret_ref["key"].as_str().expect("key");
    assert!(!secret["data"][key].is_null(), "the Secret has no {key}");

    // The example file as shipped is refused: its placeholders are no keys.
    let mut as_shipped: Vec<(&'static str, String)> = example
        .iter()
        .map(|(k, v)| (&*Box::leak(k.clone().into_boxed_str()), v.clone()))
        .collect();
    as_shipped.push(("DATABASE_URL", db.url.clone()));
    as_shipped.push(("STOFLOW_ENV", "production".into()));
    let mut refused = Proc::spawn("worker", &["migrate"], &as_shipped);
    let status = refused.wait_exit(T).expect("exits");
    assert!(!status.success(), "the unfilled example was accepted");
    assert!(
        refused.log_text().contains("security.token_keys"),
        "{}",
        refused.log_text()
    );

    // The release step, then the API: both probes answer.
    let mut m = start(&docs, migrate, &db);
    let status = m
        .proc
        .wait_exit(Duration::from_secs(60))
        .expect("migrate ends");
    assert!(status.success(), "worker migrate: {}", m.proc.log_text());
    let api_role = start(&docs, api, &db);
    assert_eq!(
        api_role.probes.len(),
        2,
        "the API has liveness and readiness"
    );
    probe_ok(&api_role, "readinessProbe").await;
    probe_ok(&api_role, "livenessProbe").await;

    // The KEDA query counts what workers would claim: due jobs of kinds not paused.
    let depth = || async {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query.to_string()))
            .fetch_one(&db.pool)
            .await
            .expect("the ScaledObject's query runs on the migrated database")
    };
    assert_eq!(depth().await, 0);
    integration::ensure_user(&db, SELLER_EMAIL, jobs::auth::Role::Seller).await;
    integration::ensure_user(&db, OPS_EMAIL, jobs::auth::Role::Ops).await;
    let base = api_role.probes[0].1.split("/health").next().expect("base");
    let anon = reqwest::Client::new();
    let seller = client_with(
        &integration::login(&anon, base, SELLER_EMAIL, TEST_PASSWORD)
            .await
            .access_token,
    );
    let ops = client_with(
        &integration::login(&anon, base, OPS_EMAIL, TEST_PASSWORD)
            .await
            .access_token,
    );
    for _ in 0..3 {
        let r = seller
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"job": {"kind": "noop", "sleep_ms": 10}}))
            .send()
            .await
            .expect("enqueue");
        assert_eq!(r.status(), 202);
    }
    assert_eq!(depth().await, 3);
    let r = ops
        .post(format!("{base}/v1/queues/noop/pause?reason=k8s%20test"))
        .send()
        .await
        .expect("pause");
    assert!(r.status().is_success(), "pause: {}", r.status());
    assert_eq!(depth().await, 0, "a paused kind's jobs cannot be claimed");
    let r = ops
        .post(format!("{base}/v1/queues/noop/resume"))
        .send()
        .await
        .expect("resume");
    assert!(r.status().is_success(), "resume: {}", r.status());
    assert_eq!(depth().await, 3);

    // A worker as its pod runs it: live on its probe, drains the queue, stops within its grace.
    let mut w = start(&docs, worker, &db);
    probe_ok(&w, "livenessProbe").await;
    integration::eventually(T, "the worker runs the jobs", || async {
        db.count("state = 'done'").await == 3
    })
    .await;
    assert_eq!(depth().await, 0);
    w.proc.sigterm();
    let status = w
        .proc
        .wait_exit(Duration::from_secs(grace_s(worker)))
        .unwrap_or_else(|| panic!("worker outlived its grace period: {}", w.proc.log_text()));
    assert!(status.success(), "worker: {}", w.proc.log_text());

    // The scheduler starts and stops within its grace.
    let mut s = start(&docs, scheduler, &db);
    integration::eventually(T, "the scheduler starts", || async {
        s.proc.log_text().contains("scheduler started")
    })
    .await;
    s.proc.sigterm();
    let status = s
        .proc
        .wait_exit(Duration::from_secs(grace_s(scheduler)))
        .unwrap_or_else(|| panic!("scheduler outlived its grace period: {}", s.proc.log_text()));
    assert!(status.success(), "scheduler: {}", s.proc.log_text());
}
