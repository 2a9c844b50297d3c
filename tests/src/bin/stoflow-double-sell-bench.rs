//! The double-sell window: the time from a sale on one marketplace to the last other listing of
//! that product withdrawn, per detection path. A private Postgres, the API, three worker processes,
//! the scheduler, the three simulators and the reference extension runner (long polling); every
//! product has one unit and is listed on eBay, Etsy and Vinted.
//!
//! Phases, one per path, each selling `--per-path` products at random moments (Poisson arrivals):
//! eBay push (Notification API), eBay polling only (pushes off), Etsy webhook, Etsy polling only,
//! Vinted via the extension (a sales sync task each `--cadence-s`). Then the fleet run:
//! `--fleet-sales` products sold on random marketplaces (pushes on), one worker process killed
//! with SIGKILL half way. A second buyer comes for each sold product at the path's target window
//! (push: 5 s; polling and Vinted: cadence + 10 s; up to 0.5 s later) and at the end: a listing
//! still live on its simulator then is a double sale.
//!
//! `cargo run -p integration --bin stoflow-double-sell-bench -- [--per-path N] [--fleet-sales N]
//!  [--cadence-s S] [--path-rate R] [--rate R]` (defaults 40, 1000, 20, 1 and 8 sales a second)

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use integration::Platform;
use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};

const MARKETS: [&str; 3] = ["ebay", "etsy", "vinted"];
const PUSH_TARGET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    EbayPush,
    EbayPolling,
    EtsyWebhook,
    EtsyPolling,
    VintedExtension,
}

impl Path {
    const ALL: [Path; 5] = [
        Self::EbayPush,
        Self::EbayPolling,
        Self::EtsyWebhook,
        Self::EtsyPolling,
        Self::VintedExtension,
    ];
    fn name(self) -> &'static str {
        match self {
            Self::EbayPush => "eBay push",
            Self::EbayPolling => "eBay polling only",
            Self::EtsyWebhook => "Etsy webhook",
            Self::EtsyPolling => "Etsy polling only",
            Self::VintedExtension => "Vinted via the extension",
        }
    }
    fn source(self) -> &'static str {
        match self {
            Self::EbayPush | Self::EbayPolling => "ebay",
            Self::EtsyWebhook | Self::EtsyPolling => "etsy",
            Self::VintedExtension => "vinted",
        }
    }
    fn pushed(self) -> bool {
        matches!(self, Self::EbayPush | Self::EtsyWebhook)
    }
    fn of_source(m: &str) -> Self {
        match m {
            "ebay" => Self::EbayPush,
            "etsy" => Self::EtsyWebhook,
            _ => Self::VintedExtension,
        }
    }
    /// The target for the p99 of this path.
    fn target(self, cadence: Duration) -> Duration {
        if self.pushed() {
            PUSH_TARGET
        } else {
            cadence + Duration::from_secs(10)
        }
    }
}

/// A product listed on all three marketplaces, with what a buyer needs on each.
#[derive(Debug, Clone)]
struct Listed {
    id: i64,
    sku: String,
    etsy_listing: u64,
    vinted_item: String,
}

struct Sale {
    product: Listed,
    path: Path,
    at: DateTime<Utc>,
    /// The double-sell window, once every other listing is withdrawn.
    window: Option<Duration>,
}

struct Args {
    per_path: usize,
    fleet: usize,
    cadence: Duration,
    /// Sales a second in the per-path phases (spread over several polling ticks) and the fleet run.
    path_rate: f64,
    rate: f64,
}

fn args() -> Args {
    let mut a = Args {
        per_path: 40,
        fleet: 1000,
        cadence: Duration::from_secs(20),
        path_rate: 1.0,
        rate: 8.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_default();
        let n: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("{flag} needs a number, got {v:?}"));
        match flag.as_str() {
            "--per-path" => a.per_path = n as usize,
            "--fleet-sales" => a.fleet = n as usize,
            "--cadence-s" => a.cadence = Duration::from_secs(n as u64),
            "--path-rate" => a.path_rate = n,
            "--rate" => a.rate = n,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let every = format!("*/{} * * * * *", a.cadence.as_secs());
    let p = Platform::start(
        3,
        &[
            ("STOFLOW_SCHEDULER__EBAY_ORDERS_CRON", &every),
            ("STOFLOW_SCHEDULER__ETSY_RECEIPTS_CRON", &every),
            ("STOFLOW_SCHEDULER__VINTED_SALES_CRON", &every),
            ("STOFLOW_SCHEDULER__ETSY_LISTINGS_CRON", "0 0 3 * * *"),
            // One seller lists everything: lift the limits that pace a real one (Etsy's app limits
            // are raised on the simulator too; Vinted's per-seller writes would take days).
            ("STOFLOW_LIMITS__ETSY__PER_SECOND", "200"),
            ("STOFLOW_LIMITS__ETSY__PER_DAY", "5000000"),
            ("STOFLOW_LIMITS__VINTED__SELLER_WRITES_PER_HOUR", "1000000"),
            ("STOFLOW_KINDS__PUBLISH_LISTING__CONCURRENCY", "8"),
        ],
    )
    .await;
    p.sim_request(
        Method::PUT,
        "etsy",
        "/_admin/limits",
        json!({"per_second": 250, "per_day": 5000000}),
    )
    .await;
    p.connect("ebay").await;
    p.connect("etsy").await;
    let v = p.connect_vinted("4242", "seller").await;
    let cfg = plugin::Config::for_simulator(
        &p.api.base,
        v["plugin_token"].as_str().unwrap(),
        &p.sims.vinted_url,
    );
    let runner = plugin::Runner::new(cfg);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let extension = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let _scheduler = p.spawn_worker_bin(&["scheduler"]);

    let total = a.per_path * Path::ALL.len() + a.fleet;
    let started = Instant::now();
    let mut products = list(&p, total).await;
    println!(
        "{total} products listed on eBay, Etsy and Vinted in {:.0} s (3 worker processes, debug build)",
        started.elapsed().as_secs_f64()
    );

    let mut results: BTreeMap<Path, Vec<Duration>> = BTreeMap::new();
    let mut report = Vec::new();
    for path in Path::ALL {
        push(&p, "ebay", path == Path::EbayPush).await;
        push(&p, "etsy", path == Path::EtsyWebhook).await;
        clear_logs(&p).await;
        let batch: Vec<Listed> = products.drain(..a.per_path).collect();
        let sales = batch
            .into_iter()
            .map(|product| (product, path))
            .collect::<Vec<_>>();
        let (done, second) = sell(&p, sales, a.path_rate, a.cadence, None).await;
        let calls = calls(&p).await;
        let windows: Vec<Duration> = done.iter().filter_map(|s| s.window).collect();
        report.push(format!(
            "{:<26} {:>4} sales  p50 {:>6.2} s  p99 {:>6.2} s  max {:>6.2} s  (target p99 ≤ {} s)  second buyers served: {}  calls/sale: {}",
            path.name(),
            done.len(),
            pct(&windows, 50.0),
            pct(&windows, 99.0),
            pct(&windows, 100.0),
            path.target(a.cadence).as_secs(),
            second,
            per_sale(&calls, done.len()),
        ));
        println!("{}", report.last().unwrap());
        results.insert(path, windows);
    }

    // The fleet run: pushes on, sales on random marketplaces, a worker killed half way.
    push(&p, "ebay", true).await;
    push(&p, "etsy", true).await;
    clear_logs(&p).await;
    let mut rng = rand::rng();
    let sales: Vec<(Listed, Path)> = products
        .drain(..)
        .map(|product| {
            let m = MARKETS[rng.random_range(0..3)];
            (product, Path::of_source(m))
        })
        .collect();
    let n = sales.len();
    let (done, second) = sell(&p, sales, a.rate, a.cadence, Some(n / 2)).await;
    let calls = calls(&p).await;
    let live_after = live_listings(&p, &done).await;
    let twice = sold_twice(&p).await;
    let mut by_path: BTreeMap<Path, Vec<Duration>> = BTreeMap::new();
    for s in &done {
        if let Some(w) = s.window {
            by_path.entry(s.path).or_default().push(w);
        }
    }
    let unresolved = done.iter().filter(|s| s.window.is_none()).count();
    let _ = stop.send(());
    let _ = extension.await;

    println!();
    println!(
        "## Per path ({} s polling cadence, {} sales a second)",
        a.cadence.as_secs(),
        a.path_rate
    );
    for line in &report {
        println!("{line}");
    }
    println!();
    println!(
        "## Fleet run: {n} sales at {} /s on random marketplaces, 3 worker processes, one killed (SIGKILL) after sale {}",
        a.rate,
        n / 2
    );
    for (path, w) in &by_path {
        println!(
            "{:<26} {:>4} sales  p50 {:>6.2} s  p99 {:>6.2} s  max {:>6.2} s",
            path.name(),
            w.len(),
            pct(w, 50.0),
            pct(w, 99.0),
            pct(w, 100.0)
        );
    }
    println!("calls/sale: {}", per_sale(&calls, n));
    println!(
        "never withdrawn: {unresolved}; second buyers served at the target window: {second}; \
         listings live after their last unit sold (at the end): {live_after}; products with two orders: {twice}"
    );
    println!(
        "double sales: {}",
        second + live_after + twice as usize + unresolved
    );
}

/// Creates `n` one-unit products and publishes each on all three marketplaces.
async fn list(p: &Platform, n: usize) -> Vec<Listed> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = p
            .product(json!({"title": format!("Wool scarf {i}"),
                "description": "Soft merino wool, barely worn.", "size": "M", "color": "navy",
                "condition": "very_good", "price": "25.00", "stock_quantity": 1}))
            .await;
        p.publish(id, &MARKETS).await;
        ids.push(id);
    }
    let started = Instant::now();
    loop {
        let rows: Vec<(i64, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT p.id, p.sku,
                    max(l.remote_listing_id) FILTER (WHERE l.marketplace = 'etsy'),
                    max(l.remote_listing_id) FILTER (WHERE l.marketplace = 'vinted')
               FROM products p JOIN listings l ON l.product_id = p.id
              WHERE p.id = ANY($1)
              GROUP BY p.id, p.sku
             HAVING count(*) FILTER (WHERE l.status = 'published') = 3
              ORDER BY p.id",
        )
        .bind(&ids)
        .fetch_all(&p.db.pool)
        .await
        .unwrap();
        if rows.len() == n {
            return rows
                .into_iter()
                .map(|(id, sku, etsy, vinted)| Listed {
                    id,
                    sku,
                    etsy_listing: etsy.unwrap().parse().unwrap(),
                    vinted_item: vinted.unwrap(),
                })
                .collect();
        }
        let failed =
            p.db.count("kind = 'publish_listing' AND state = 'dead'")
                .await;
        assert!(failed == 0, "{failed} publishes died");
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "{} of {n} listed on all three",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Points a simulator's pushes at the API, or nowhere.
async fn push(p: &Platform, marketplace: &str, on: bool) {
    let url = if on {
        p.api.url(&format!("/webhooks/{marketplace}"))
    } else {
        String::new()
    };
    let mut body = json!({ "url": url });
    if on && marketplace == "ebay" {
        body["verification_token"] = json!("stoflow-dev-verification-token-0123456789abcdef");
    }
    p.sim_request(Method::PUT, marketplace, "/_admin/webhooks", body)
        .await;
}

async fn clear_logs(p: &Platform) {
    for m in MARKETS {
        p.sim_request(Method::DELETE, m, "/_admin/requests", json!({}))
            .await;
    }
}

/// Marketplace API calls each simulator served since its log was cleared (admin calls aside).
async fn calls(p: &Platform) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for m in MARKETS {
        let n = p
            .sim_requests(m)
            .await
            .iter()
            .filter(|(_, path, _)| !path.starts_with("/_admin"))
            .count();
        out.insert(m, n);
    }
    out
}

fn per_sale(calls: &BTreeMap<&'static str, usize>, sales: usize) -> String {
    let total: usize = calls.values().sum();
    let each: Vec<String> = calls
        .iter()
        .map(|(m, n)| format!("{m} {:.1}", *n as f64 / sales.max(1) as f64))
        .collect();
    format!(
        "{:.1} ({})",
        total as f64 / sales.max(1) as f64,
        each.join(", ")
    )
}

/// The buyer pays on the product's source marketplace.
async fn buy(p: &Platform, product: &Listed, marketplace: &str) {
    match marketplace {
        "ebay" => {
            p.sim_admin(
                "ebay",
                "/_admin/orders",
                json!({"line_items": [{"sku": product.sku, "quantity": 1}]}),
            )
            .await;
        }
        "etsy" => {
            p.sim_admin(
                "etsy",
                "/_admin/receipts",
                json!({"transactions": [{"listing_id": product.etsy_listing, "quantity": 1}]}),
            )
            .await;
        }
        _ => {
            p.sim_admin(
                "vinted",
                &format!("/_admin/items/{}/sell", product.vinted_item),
                json!({}),
            )
            .await;
        }
    }
}

/// Sells every product on its path's marketplace at Poisson moments (`rate` a second), follows
/// each until its other listings are withdrawn, and sends a second buyer at the path's target
/// window. `kill_after`: SIGKILL one worker process after that many sales. Returns the sales and
/// how many second buyers found a listing still live.
async fn sell(
    p: &Platform,
    sales: Vec<(Listed, Path)>,
    rate: f64,
    cadence: Duration,
    kill_after: Option<usize>,
) -> (Vec<Sale>, usize) {
    let mut rng = rand::rng();
    let mut done: Vec<Sale> = Vec::new();
    let mut open: HashMap<i64, usize> = HashMap::new();
    // (when, sale index): second buyers still to come.
    let mut probes: Vec<(Instant, usize)> = Vec::new();
    let mut second = 0;
    let mut pending = sales.into_iter();
    let mut next_sale = Instant::now();
    let settle = cadence + Duration::from_secs(60);
    let mut last_sale = Instant::now();
    let mut last_check = Instant::now();
    let mut last_probe = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_sale {
            match pending.next() {
                Some((product, path)) => {
                    let at = Utc::now();
                    buy(p, &product, path.source()).await;
                    open.insert(product.id, done.len());
                    probes.push((Instant::now() + path.target(cadence), done.len()));
                    done.push(Sale {
                        product,
                        path,
                        at,
                        window: None,
                    });
                    if kill_after == Some(done.len()) {
                        let pid = p.workers[0].pid();
                        let _ = std::process::Command::new("kill")
                            .args(["-9", &pid.to_string()])
                            .status();
                        println!("  worker {pid} killed (SIGKILL) after sale {}", done.len());
                    }
                    let gap: f64 = -(1.0 - rng.random::<f64>()).ln() / rate;
                    next_sale = Instant::now() + Duration::from_secs_f64(gap);
                    last_sale = Instant::now();
                }
                None => next_sale = Instant::now() + Duration::from_secs(3600),
            }
        }
        if last_check.elapsed() >= Duration::from_millis(100) {
            last_check = Instant::now();
            resolve(p, &mut done, &mut open).await;
            // Second buyers are served in batches every 0.5 s (each batch reads the simulators'
            // whole state), so one may come up to 0.5 s after its target.
            let due: Vec<usize> = probes
                .iter()
                .filter(|(t, _)| *t <= Instant::now())
                .map(|(_, i)| *i)
                .collect();
            if !due.is_empty() && last_probe.elapsed() >= Duration::from_millis(500) {
                last_probe = Instant::now();
                probes.retain(|(t, _)| *t > Instant::now());
                let live = live_by_product(p).await;
                for i in due {
                    let s = &done[i];
                    let others = live
                        .get(&s.product.id)
                        .map(|ms| ms.iter().filter(|m| **m != s.path.source()).count());
                    if others.unwrap_or(0) > 0 {
                        second += 1;
                    }
                }
            }
        }
        let finished = pending.len() == 0 && next_sale > Instant::now() + Duration::from_secs(60);
        if finished && open.is_empty() && probes.is_empty() {
            return (done, second);
        }
        if finished && last_sale.elapsed() > settle && probes.is_empty() {
            println!("  {} sales never fully withdrawn", open.len());
            return (done, second);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records the window of every open sale whose other listings are all withdrawn now.
async fn resolve(p: &Platform, done: &mut [Sale], open: &mut HashMap<i64, usize>) {
    if open.is_empty() {
        return;
    }
    let ids: Vec<i64> = open.keys().copied().collect();
    let sources: Vec<String> = ids
        .iter()
        .map(|id| done[open[id]].path.source().to_string())
        .collect();
    let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT l.product_id, max(l.updated_at) FROM listings l
           JOIN unnest($1::bigint[], $2::text[]) AS s(product_id, source) USING (product_id)
          WHERE l.marketplace <> s.source
          GROUP BY l.product_id
         HAVING bool_and(l.status = 'withdrawn')",
    )
    .bind(&ids)
    .bind(&sources)
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    for (product, last) in rows {
        if let Some(i) = open.remove(&product) {
            let w = (last - done[i].at).to_std().unwrap_or_default();
            done[i].window = Some(w);
        }
    }
}

/// Marketplaces where each product's listing can be bought now, as the simulators say: an eBay
/// offer whose listing is ACTIVE, an active Etsy listing with stock, an open Vinted item.
async fn live_by_product(p: &Platform) -> HashMap<i64, Vec<&'static str>> {
    let skus: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT sku, id FROM products")
            .fetch_all(&p.db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let remote: HashMap<(String, String), i64> = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT marketplace, remote_listing_id, product_id FROM listings WHERE remote_listing_id IS NOT NULL",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(m, r, id)| ((m, r), id))
    .collect();
    let mut out: HashMap<i64, Vec<&'static str>> = HashMap::new();
    let ebay = p.sim_get("ebay", "/_admin/state").await;
    for o in ebay["offers"].as_array().into_iter().flatten() {
        let offer = &o["offer"];
        if offer["listing"]["listingStatus"] == "ACTIVE"
            && let Some(id) = offer["sku"].as_str().and_then(|s| skus.get(s))
        {
            out.entry(*id).or_default().push("ebay");
        }
    }
    let etsy = p.sim_get("etsy", "/_admin/state").await;
    for l in etsy["listings"].as_array().into_iter().flatten() {
        let key = ("etsy".to_string(), l["listing_id"].to_string());
        if l["state"] == "active"
            && l["quantity"].as_u64().unwrap_or(0) > 0
            && let Some(id) = remote.get(&key)
        {
            out.entry(*id).or_default().push("etsy");
        }
    }
    let vinted = p.sim_get("vinted", "/_admin/state").await;
    for i in vinted["items"].as_array().into_iter().flatten() {
        let key = (
            "vinted".to_string(),
            i["id"].to_string().trim_matches('"').to_string(),
        );
        if i["is_closed"] != Value::Bool(true)
            && let Some(id) = remote.get(&key)
        {
            out.entry(*id).or_default().push("vinted");
        }
    }
    out
}

/// Sold products with a listing still live on another marketplace, as the simulators say.
async fn live_listings(p: &Platform, sales: &[Sale]) -> usize {
    let live = live_by_product(p).await;
    sales
        .iter()
        .filter(|s| {
            live.get(&s.product.id)
                .is_some_and(|ms| ms.iter().any(|m| *m != s.path.source()))
        })
        .count()
}

/// Products with more than one order line imported (each has one unit).
async fn sold_twice(p: &Platform) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT product_id FROM order_lines WHERE product_id IS NOT NULL
           GROUP BY product_id HAVING sum(quantity) > 1) t",
    )
    .fetch_one(&p.db.pool)
    .await
    .unwrap()
}

fn pct(w: &[Duration], q: f64) -> f64 {
    if w.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<f64> = w.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(f64::total_cmp);
    let i = ((q / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}
