//! Marketplace rate limits that hold for the whole fleet, and a circuit breaker per marketplace.
//!
//! Every marketplace request passes [`Limits::admit`] (called by [`marketplaces::send`]) and
//! reports its outcome back. Budgets are keyed per (marketplace, app key) — `etsy:app:<keystring>`,
//! `ebay:app:<client_id>:<api>` — and per (marketplace, seller) when a handler names the seller
//! ([`set_seller`]); their quotas come from `[limits.*]`.
//!
//! **Shared through Postgres.** Each key is a row (`rate_limits`) that `rate_limit_acquire`
//! updates atomically with the database clock: the per-second budget is a GCRA whose slots are
//! *reserved* (the next free slot `tat` moves on by 1/rate), the per-day (per-hour) budget is 24
//! buckets per window counted conservatively, so N processes together stay under the limit. A
//! caller gets a slot at most `max_wait_ms` ahead and sleeps in-process until it: sub-second waits
//! would cost more as snoozes (a snoozed job comes back through the claim poll) and would leave the
//! marketplace idle, which is what keeps the fleet at ≥ 90 % of the limit. A dead process strands
//! at most the slots it reserved, i.e. that horizon. A request that wakes later than
//! `late_tolerance_ms` after its slot gives it up and asks again, so late wake-ups cannot bunch
//! requests into one second. governor paces each key in-process first, so a process never asks
//! the row more often than the key's rate.
//!
//! **No budget soon enough:** the job snoozes (no attempt used, no slot held) until the budget
//! returns, plus jitter: [`MarketplaceError::RateLimited`] / [`MarketplaceError::CircuitOpen`]
//! become `JobError::Snooze`. A run that already spent calls waits longer in-process
//! (`inflight_wait_ms`) rather than start over and spend them again.
//!
//! **The marketplace's signals win:** a `Retry-After` (429) or a spent quota (eBay 2001) blocks the
//! key for the fleet until then; Etsy's `x-limit-per-second`/`x-limit-per-day` lower the limits
//! when lower than configured; `x-remaining-today` below what we counted adds the difference.
//!
//! **Circuit breaker** (`circuit_breakers`, per marketplace): `failure_threshold` consecutive
//! unavailable answers open it; while open one probe request goes out per period (half-open),
//! everyone else snoozes until the next probe; a successful probe closes it, a failed one doubles
//! the period up to `max_open_ms`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng as _;
use sqlx::PgPool;

use engine::metrics::Metrics;
use futures::future::BoxFuture;
use marketplaces::Marketplace;
use marketplaces::MarketplaceError;
use marketplaces::http::{Gate, Ticket};
use reqwest::header::HeaderMap;

/// Fleet-wide marketplace limits and the circuit breaker ([`crate::limits`]).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Off: requests go out unpaced (the marketplace's 429s still snooze jobs).
    pub enabled: bool,
    /// Share of each per-second limit the fleet aims at; the gap absorbs network jitter.
    pub utilisation: f64,
    /// Longest in-process wait for a run's first request; beyond it the job snoozes.
    pub max_wait_ms: u64,
    /// Longest in-process wait for later requests of a run that already spent calls.
    pub inflight_wait_ms: u64,
    /// A request woken this much after its slot gives the slot up and asks again.
    pub late_tolerance_ms: u64,
    /// Length of the `per_day` windows (a day; tests shorten it).
    pub day_window_ms: u64,
    /// Snoozes are spread over up to this much past the time the budget returns.
    pub snooze_jitter_ms: u64,
    pub circuit: CircuitSettings,
    pub etsy: EtsyLimits,
    pub ebay: EbayLimits,
    pub vinted: VintedLimits,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitSettings {
    /// Consecutive unavailable answers (5xx, timeouts, refused connections) that open it.
    pub failure_threshold: u32,
    /// First open period; each failed probe doubles it up to `max_open_ms`.
    pub open_ms: u64,
    pub max_open_ms: u64,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtsyLimits {
    /// Per app key (x-limit-per-second / x-limit-per-day).
    pub per_second: f64,
    pub per_day: u32,
    /// Per seller (Etsy counts private calls per OAuth token); 0 = not limited apart.
    pub seller_per_second: f64,
    pub seller_per_day: u32,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbayLimits {
    /// eBay publishes no per-second limit; 0 = unpaced.
    pub per_second: f64,
    /// Daily call limits per API (path family: inventory, fulfillment, account, identity).
    pub per_day: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VintedLimits {
    /// Writes per seller per hour before Vinted's anti-bot blocks.
    pub seller_writes_per_hour: u32,
}

/// The limiter of this process, when installed (worker processes install one at start).
static INSTALLED: OnceLock<Arc<Limits>> = OnceLock::new();

/// Installs `l` as this process's limiter; later calls are ignored.
pub fn install(l: Arc<Limits>) {
    marketplaces::http::install_gate(l.clone());
    let _ = INSTALLED.set(l);
}

pub fn installed() -> Option<&'static Arc<Limits>> {
    INSTALLED.get()
}

tokio::task_local! {
    static RUN: RunScope;
}

/// Per-run state: calls spent so far and the seller the run acts for.
#[derive(Default)]
struct RunScope {
    spent: AtomicU32,
    seller: Mutex<Option<(Marketplace, i64)>>,
}

/// The limiter's families: rate-limit waits. Kept apart from the engine's
/// ([`engine::metrics::global`]) and the clients' ([`marketplaces::http::metrics`]); both
/// binaries render all three at `/metrics`.
pub const FAMILIES: &[engine::metrics::Family3] = &[
    (
        "stoflow_rate_limit_waits_total",
        "counter",
        "Marketplace requests that waited for budget, by outcome (waited in-process, late, snoozed_rate, snoozed_quota, snoozed_blocked, snoozed_circuit_open, circuit_opened).",
    ),
    (
        "stoflow_rate_limit_wait_seconds",
        "histogram",
        "In-process waits for a marketplace request's rate-limit slot.",
    ),
];

/// This process's marketplace metrics ([`FAMILIES`]).
pub fn metrics() -> &'static Metrics {
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    M.get_or_init(|| Metrics::new(FAMILIES))
}

/// Runs a job's handler with its own limiter scope (the backend wraps every run in one).
pub async fn scoped<F: std::future::Future>(f: F) -> F::Output {
    RUN.scope(RunScope::default(), f).await
}

/// Names the seller account the current run acts for: its requests then also count against that
/// seller's budget (`seller_per_second` / `seller_per_day`, Vinted's writes per hour).
pub fn set_seller(m: Marketplace, account_id: i64) {
    let _ = RUN
        .try_with(|r| *r.seller.lock().unwrap_or_else(|e| e.into_inner()) = Some((m, account_id)));
}

fn run_spent() -> u32 {
    RUN.try_with(|r| r.spent.load(Ordering::Relaxed))
        .unwrap_or(0)
}

fn run_seller() -> Option<(Marketplace, i64)> {
    RUN.try_with(|r| *r.seller.lock().unwrap_or_else(|e| e.into_inner()))
        .ok()
        .flatten()
}

/// One quota a request counts against.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub key: String,
    /// Requests per second the fleet aims at (after `utilisation`); 0 = unpaced.
    pub per_second: f64,
    /// Requests per `window_ms`; 0 = none.
    pub per_window: u32,
    pub window_ms: u64,
}

/// A granted request: what to report afterwards.
#[derive(Debug, Default)]
pub struct Admission {
    marketplace: Option<Marketplace>,
    /// The key a Retry-After blocks (the app key).
    block_key: Option<String>,
    /// This request is the open circuit's probe.
    probe: bool,
    /// Consecutive failures the circuit had when the request was admitted.
    failures_seen: i32,
    /// Day use counted at admission (for comparing with x-remaining-today).
    used: i32,
    window: Option<(u32, u64)>,
}

#[derive(sqlx::FromRow)]
struct Acquired {
    granted: bool,
    wait_ms: i64,
    reason: String,
    probe: bool,
    used: i32,
    circuit_failures: i32,
}

pub struct Limits {
    pool: PgPool,
    cfg: LimitSettings,
    etsy_app: String,
    ebay_app: String,
    local: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    /// Announced limits already written, so headers are written once per change.
    announced: Mutex<HashMap<String, (u64, u64)>>,
    pub metrics: &'static Metrics,
}

impl Limits {
    /// `etsy_app` and `ebay_app` name the app keys the marketplaces count calls against.
    pub fn new(pool: PgPool, cfg: &LimitSettings, etsy_app: &str, ebay_app: &str) -> Self {
        Self {
            pool,
            cfg: cfg.clone(),
            etsy_app: etsy_app.to_string(),
            ebay_app: ebay_app.to_string(),
            local: Mutex::default(),
            announced: Mutex::default(),
            metrics: metrics(),
        }
    }

    /// The budgets a request to `path` of `m` counts against, seller first.
    pub fn budgets(&self, m: Marketplace, path: &str, seller: Option<i64>) -> Vec<Budget> {
        let c = &self.cfg;
        let util = c.utilisation;
        let mut out = vec![];
        match m {
            Marketplace::Etsy => {
                // Etsy counts /v3/application calls; the OAuth token endpoint is not one.
                if !path.starts_with("/v3/application") {
                    return out;
                }
                if let Some(acc) = seller
                    && (c.etsy.seller_per_second > 0.0 || c.etsy.seller_per_day > 0)
                {
                    out.push(Budget {
                        key: format!("etsy:seller:{acc}"),
                        per_second: c.etsy.seller_per_second * util,
                        per_window: c.etsy.seller_per_day,
                        window_ms: c.day_window_ms,
                    });
                }
                out.push(Budget {
                    key: format!("etsy:app:{}", self.etsy_app),
                    per_second: c.etsy.per_second * util,
                    per_window: c.etsy.per_day,
                    window_ms: c.day_window_ms,
                });
            }
            Marketplace::Ebay => {
                let api = ebay_api(path);
                out.push(Budget {
                    key: format!("ebay:app:{}:{api}", self.ebay_app),
                    per_second: c.ebay.per_second * util,
                    per_window: c.ebay.per_day.get(api).copied().unwrap_or(0),
                    window_ms: c.day_window_ms,
                });
            }
            Marketplace::Vinted => {
                if let Some(acc) = seller {
                    out.push(self.vinted_seller_writes(acc));
                }
            }
        }
        out
    }

    /// Vinted's per-seller write budget (the plugin flow takes it before handing a write to the
    /// seller's browser extension).
    pub fn vinted_seller_writes(&self, account_id: i64) -> Budget {
        Budget {
            key: format!("vinted:seller:{account_id}"),
            per_second: 0.0,
            per_window: self.cfg.vinted.seller_writes_per_hour,
            window_ms: 3_600_000,
        }
    }

    /// Waits for (or refuses) the budget of one request to `path` of `m`.
    pub async fn admit(&self, m: Marketplace, path: &str) -> Result<Admission, MarketplaceError> {
        if !self.cfg.enabled {
            return Ok(Admission::default());
        }
        let seller = run_seller().filter(|(sm, _)| *sm == m).map(|(_, a)| a);
        let budgets = self.budgets(m, path, seller);
        if budgets.is_empty() {
            return Ok(Admission::default());
        }
        self.admit_budgets(m, &budgets).await
    }

    /// Takes one request's budget from each of `budgets`; the last one is the key a Retry-After
    /// blocks.
    pub async fn admit_budgets(
        &self,
        m: Marketplace,
        budgets: &[Budget],
    ) -> Result<Admission, MarketplaceError> {
        let horizon = if run_spent() > 0 {
            self.cfg.inflight_wait_ms
        } else {
            self.cfg.max_wait_ms
        };
        let mk = m.as_str();
        for _try in 0..5 {
            let mut adm = Admission {
                marketplace: Some(m),
                block_key: budgets.last().map(|b| b.key.clone()),
                ..Admission::default()
            };
            let mut wait = Duration::ZERO;
            let mut asked = Instant::now();
            for b in budgets {
                if let Some(l) = self.local(b) {
                    l.until_ready().await;
                }
                let r = self.acquire(m, b, horizon).await.map_err(|e| {
                    // Without the shared budget nothing may go out: wait a little and try again.
                    MarketplaceError::RateLimited {
                        marketplace: mk,
                        retry_after: Some(self.jittered(Duration::from_secs(1))),
                        detail: format!("rate limiter unavailable: {e}"),
                    }
                })?;
                // The wait counts from the answer, never from the question: time spent waiting
                // for a pooled connection would otherwise make the request early.
                asked = Instant::now();
                adm.probe |= r.probe;
                adm.failures_seen = adm.failures_seen.max(r.circuit_failures);
                if !r.granted {
                    return Err(self.refusal(m, b, &r));
                }
                if b.per_window > 0 {
                    adm.used = r.used;
                    adm.window = Some((b.per_window, b.window_ms));
                }
                wait = wait.max(Duration::from_millis(r.wait_ms.max(0) as u64));
            }
            if wait.is_zero() {
                self.spend();
                return Ok(adm);
            }
            let slot = asked + wait;
            // Wake a little early to look for a Retry-After that arrived meanwhile, so the
            // look-up does not delay the request past its slot.
            tokio::time::sleep_until((slot - wait.min(Duration::from_millis(20))).into()).await;
            self.metrics.inc(
                "stoflow_rate_limit_waits_total",
                &[("marketplace", mk), ("outcome", "waited")],
                1,
            );
            self.metrics.observe(
                "stoflow_rate_limit_wait_seconds",
                &[("marketplace", mk)],
                wait,
            );
            // A Retry-After may have arrived while this request slept.
            if let Some(key) = &adm.block_key
                && let Some(left) = self.blocked_for(key).await
            {
                return Err(MarketplaceError::RateLimited {
                    marketplace: mk,
                    retry_after: Some(self.jittered(left)),
                    detail: format!("{key}: blocked by the marketplace"),
                });
            }
            tokio::time::sleep_until(slot.into()).await;
            if Instant::now() > slot + Duration::from_millis(self.cfg.late_tolerance_ms) {
                // Woken late (an overloaded process, a slow pool): sending now could bunch
                // with the next slots, so this slot is given up. Checked last, right before
                // the request goes out.
                self.metrics.inc(
                    "stoflow_rate_limit_waits_total",
                    &[("marketplace", mk), ("outcome", "late")],
                    1,
                );
                continue;
            }
            self.spend();
            return Ok(adm);
        }
        Err(MarketplaceError::RateLimited {
            marketplace: mk,
            retry_after: Some(self.jittered(Duration::from_millis(self.cfg.max_wait_ms))),
            detail: "woken late for every slot: process overloaded".into(),
        })
    }

    fn spend(&self) {
        let _ = RUN.try_with(|r| r.spent.fetch_add(1, Ordering::Relaxed));
    }

    fn local(&self, b: &Budget) -> Option<Arc<DefaultDirectRateLimiter>> {
        if b.per_second <= 0.0 {
            return None;
        }
        let mut map = self.local.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            map.entry(b.key.clone())
                .or_insert_with(|| {
                    // The key's full (configured) rate, with a second's burst: it only stops one
                    // process from asking the shared row more often than the whole fleet may send.
                    let full = b.per_second / self.cfg.utilisation;
                    let burst = NonZeroU32::new(full.ceil() as u32).unwrap_or(NonZeroU32::MIN);
                    let q = Quota::with_period(Duration::from_secs_f64(1.0 / full))
                        .expect("positive period")
                        .allow_burst(burst);
                    Arc::new(RateLimiter::direct(q))
                })
                .clone(),
        )
    }

    async fn acquire(
        &self,
        m: Marketplace,
        b: &Budget,
        horizon_ms: u64,
    ) -> Result<Acquired, sqlx::Error> {
        sqlx::query_as(
            "SELECT granted, wait_ms, reason, probe, used, circuit_failures
               FROM rate_limit_acquire($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&b.key)
        .bind(m.as_str())
        .bind(b.per_second)
        .bind(b.per_window as i32)
        .bind(b.window_ms as i64)
        .bind(horizon_ms as i64)
        .bind(self.cfg.circuit.open_ms as i64)
        .fetch_one(&self.pool)
        .await
    }

    async fn blocked_for(&self, key: &str) -> Option<Duration> {
        let ms: Option<i64> = sqlx::query_scalar(
            "SELECT ceil(extract(epoch FROM blocked_until - clock_timestamp()) * 1000)::bigint
               FROM rate_limits WHERE key = $1 AND blocked_until > clock_timestamp()",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .ok()
        .flatten();
        ms.map(|ms| Duration::from_millis(ms.max(1) as u64))
    }

    fn refusal(&self, m: Marketplace, b: &Budget, r: &Acquired) -> MarketplaceError {
        let mk = m.as_str();
        let wait = Duration::from_millis(r.wait_ms.max(1) as u64);
        self.metrics.inc(
            "stoflow_rate_limit_waits_total",
            &[
                ("marketplace", mk),
                ("outcome", &format!("snoozed_{}", r.reason)),
            ],
            1,
        );
        let after = self.jittered(wait);
        match r.reason.as_str() {
            "circuit_open" => MarketplaceError::CircuitOpen {
                marketplace: mk,
                retry_after: after,
                detail: format!("next probe in {wait:?}"),
            },
            reason => MarketplaceError::RateLimited {
                marketplace: mk,
                retry_after: Some(after),
                detail: match reason {
                    "quota" => format!(
                        "{}: {} requests per {} ms spent; budget returns in {wait:?}",
                        b.key, b.per_window, b.window_ms
                    ),
                    "blocked" => format!("{}: blocked by the marketplace for {wait:?}", b.key),
                    _ => format!("{}: no slot within the wait limit; next in {wait:?}", b.key),
                },
            },
        }
    }

    /// `d` plus up to `snooze_jitter_ms` (or a tenth of `d` when longer), so snoozed jobs do not
    /// all come back at once.
    pub fn jittered(&self, d: Duration) -> Duration {
        let spread = (self.cfg.snooze_jitter_ms as u128).max(d.as_millis() / 10) as u64;
        d + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// Reports the outcome of an admitted request; may turn it into a snooze (a failed probe).
    pub async fn report(
        &self,
        adm: &Admission,
        outcome: &Result<reqwest::header::HeaderMap, MarketplaceError>,
    ) -> Option<MarketplaceError> {
        let m = adm.marketplace?;
        let mk = m.as_str();
        match outcome {
            Err(MarketplaceError::Unavailable { detail, .. }) => {
                match self.circuit_failure(m, detail).await {
                    Ok(Some(next)) if adm.probe => {
                        return Some(MarketplaceError::CircuitOpen {
                            marketplace: mk,
                            retry_after: self.jittered(next),
                            detail: format!("probe failed: {detail}"),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "recording a circuit failure"),
                }
            }
            Err(MarketplaceError::RateLimited {
                retry_after,
                detail,
                ..
            }) => {
                let d = retry_after.unwrap_or(Duration::from_secs(30));
                if let Some(key) = &adm.block_key
                    && let Err(e) = self.block(key, d, detail).await
                {
                    tracing::warn!(error = %e, "recording a marketplace block");
                }
                self.circuit_ok(m, adm).await;
            }
            Err(_) => self.circuit_ok(m, adm).await,
            Ok(headers) => {
                self.circuit_ok(m, adm).await;
                if m == Marketplace::Etsy {
                    self.etsy_headers(adm, headers).await;
                }
            }
        }
        None
    }

    async fn circuit_ok(&self, m: Marketplace, adm: &Admission) {
        if adm.failures_seen == 0 && !adm.probe {
            return;
        }
        let r = sqlx::query(
            "UPDATE circuit_breakers SET state = 'closed', failures = 0, next_probe_at = NULL,
                    open_ms = 0, updated_at = clock_timestamp()
              WHERE marketplace = $1 AND (failures > 0 OR state <> 'closed')",
        )
        .bind(m.as_str())
        .execute(&self.pool)
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "closing a circuit");
        }
    }

    /// Counts a failure; returns the wait until the next probe when the circuit is (now) open.
    async fn circuit_failure(
        &self,
        m: Marketplace,
        detail: &str,
    ) -> Result<Option<Duration>, sqlx::Error> {
        let c = &self.cfg.circuit;
        sqlx::query(
            "INSERT INTO circuit_breakers AS c (marketplace, failures, last_error) VALUES ($1, 1, $2)
             ON CONFLICT (marketplace) DO UPDATE SET failures = c.failures + 1, last_error = $2,
                    updated_at = clock_timestamp()",
        )
        .bind(m.as_str())
        .bind(detail.chars().take(300).collect::<String>())
        .execute(&self.pool)
        .await?;
        // Open when the threshold is reached while closed, or again (longer) when a probe fails.
        let opened: Option<(String, i64)> = sqlx::query_as(
            "UPDATE circuit_breakers SET
                    state = 'open',
                    open_ms = CASE WHEN state = 'half_open' THEN least(greatest(open_ms, $2) * 2, $3) ELSE $2 END,
                    opened_at = CASE WHEN state = 'closed' THEN clock_timestamp() ELSE opened_at END,
                    next_probe_at = clock_timestamp() + (CASE WHEN state = 'half_open'
                        THEN least(greatest(open_ms, $2) * 2, $3) ELSE $2 END) * interval '1 millisecond',
                    updated_at = clock_timestamp()
              WHERE marketplace = $1
                AND ((state = 'closed' AND failures >= $4) OR state = 'half_open')
             RETURNING state, open_ms",
        )
        .bind(m.as_str())
        .bind(c.open_ms as i64)
        .bind(c.max_open_ms as i64)
        .bind(c.failure_threshold as i32)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((_, ms)) = &opened {
            tracing::warn!(marketplace = m.as_str(), open_ms = ms, "circuit open");
            self.metrics.inc(
                "stoflow_rate_limit_waits_total",
                &[("marketplace", m.as_str()), ("outcome", "circuit_opened")],
                1,
            );
        }
        Ok(opened.map(|(_, ms)| Duration::from_millis(ms.max(0) as u64)))
    }

    /// Nothing goes out on `key` for `d` (the marketplace said so).
    async fn block(&self, key: &str, d: Duration, why: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE rate_limits SET
                    blocked_until = greatest(coalesce(blocked_until, '-infinity'), clock_timestamp() + $2 * interval '1 millisecond'),
                    tat = greatest(tat, clock_timestamp() + $2 * interval '1 millisecond'),
                    blocked_reason = $3, updated_at = clock_timestamp()
              WHERE key = $1",
        )
        .bind(key)
        .bind(d.as_millis() as i64)
        .bind(why.chars().take(300).collect::<String>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Etsy's limit headers: lower announced limits and use counted elsewhere win.
    async fn etsy_headers(&self, adm: &Admission, h: &reqwest::header::HeaderMap) {
        let get = |k: &str| h.get(k)?.to_str().ok()?.trim().parse::<u64>().ok();
        let Some(key) = adm.block_key.as_deref() else {
            return;
        };
        let (per_s, per_d) = (get("x-limit-per-second"), get("x-limit-per-day"));
        if let (Some(ps), Some(pd)) = (per_s, per_d) {
            let known = self
                .announced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.to_string(), (ps, pd));
            if known != Some((ps, pd)) {
                let r = sqlx::query(
                    "UPDATE rate_limits SET
                            announced_per_second = CASE WHEN $2 > 0 AND $2 < $4 THEN $2 END,
                            announced_per_window = CASE WHEN $3 > 0 AND $3 < $5 THEN $3 END
                      WHERE key = $1",
                )
                .bind(key)
                .bind(ps as f64 * self.cfg.utilisation)
                .bind(pd as i32)
                .bind(self.cfg.etsy.per_second * self.cfg.utilisation)
                .bind(self.cfg.etsy.per_day as i32)
                .execute(&self.pool)
                .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "recording announced limits");
                }
            }
        }
        // Calls Etsy counted beyond ours (another app instance on the key): add the difference,
        // allowing for requests admitted after this one that arrived before it.
        if let (Some(pd), Some(rem), Some((_, window_ms))) =
            (per_d, get("x-remaining-today"), adm.window)
        {
            let theirs = pd.saturating_sub(rem) as i64;
            let slack = (self.cfg.etsy.per_second.ceil() as i64)
                * (self.cfg.inflight_wait_ms as i64 / 1000 + 1);
            if rem == 0 || theirs > adm.used as i64 + slack {
                let r = sqlx::query(
                    "WITH cur AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint / $3 AS b),
                          ours AS (SELECT coalesce(sum(n), 0) AS u FROM rate_limit_buckets, cur
                                    WHERE key = $1 AND bucket >= cur.b - 24)
                     INSERT INTO rate_limit_buckets (key, bucket, n)
                     SELECT $1, cur.b, ($2 - ours.u)::int FROM cur, ours WHERE $2 - ours.u > 0
                     ON CONFLICT (key, bucket) DO UPDATE SET n = rate_limit_buckets.n + excluded.n",
                )
                .bind(key)
                .bind(theirs)
                .bind((window_ms as i64 / 24).max(1))
                .execute(&self.pool)
                .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "recording Etsy's day count");
                }
            }
        }
    }
}

// ---- what GET /v1/limits shows ---------------------------------------------------------

/// One budget key as the fleet sees it now.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct KeyState {
    /// `etsy:app:<keystring>`, `ebay:app:<client_id>:<api>`, `<marketplace>:seller:<account>`.
    pub key: String,
    pub marketplace: String,
    /// Requests per second the fleet sends at most (configured × utilisation, or lower when the
    /// marketplace announced less); 0 = unpaced.
    pub per_second: f64,
    /// Requests allowed per window (a day, an hour); 0 = no such limit.
    pub window_limit: i32,
    pub window_ms: i64,
    /// Requests counted in the current window.
    pub used: i64,
    /// `window_limit - used`, when there is a window limit.
    pub remaining: Option<i64>,
    /// When the oldest counted requests leave the window and budget returns.
    pub resets_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Nothing goes out on this key before this (Retry-After, a spent quota).
    pub blocked_until: Option<chrono::DateTime<chrono::Utc>>,
    pub blocked_reason: Option<String>,
    /// The next free per-second slot, when it lies ahead.
    pub next_slot_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A marketplace's circuit and the jobs waiting on it or on its limits.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct MarketplaceState {
    pub marketplace: String,
    /// closed, open or half_open.
    pub circuit: String,
    /// Consecutive unavailable answers counted.
    pub failures: i32,
    pub opened_at: Option<chrono::DateTime<chrono::Utc>>,
    /// While open: when the next probe request may go out.
    pub next_probe_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    /// Jobs snoozed on a rate limit of this marketplace, waiting for budget.
    pub jobs_waiting_on_limit: i64,
    /// Jobs snoozed on this marketplace's open circuit.
    pub jobs_waiting_on_circuit: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct LimitsView {
    pub keys: Vec<KeyState>,
    pub marketplaces: Vec<MarketplaceState>,
}

/// The budgets, circuits and waiting jobs, read from the shared rows.
pub async fn view(pool: &PgPool) -> Result<LimitsView, sqlx::Error> {
    let keys = sqlx::query_as(
        "SELECT r.key, r.marketplace, r.per_second, r.per_window AS window_limit, r.window_ms,
                coalesce(u.used, 0) AS used,
                CASE WHEN r.per_window > 0 THEN greatest(r.per_window - coalesce(u.used, 0), 0) END AS remaining,
                CASE WHEN u.oldest IS NOT NULL
                     THEN to_timestamp(((u.oldest + 25) * greatest(r.window_ms / 24, 1))::double precision / 1000) END AS resets_at,
                CASE WHEN r.blocked_until > clock_timestamp() THEN r.blocked_until END AS blocked_until,
                CASE WHEN r.blocked_until > clock_timestamp() THEN r.blocked_reason END AS blocked_reason,
                CASE WHEN r.tat > clock_timestamp() THEN r.tat END AS next_slot_at
           FROM rate_limits r
           LEFT JOIN LATERAL (
                SELECT sum(b.n)::bigint AS used, min(b.bucket) AS oldest FROM rate_limit_buckets b
                 WHERE b.key = r.key AND r.window_ms > 0
                   AND b.bucket >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint / greatest(r.window_ms / 24, 1) - 24
           ) u ON true
          ORDER BY r.key",
    )
    .fetch_all(pool)
    .await?;
    let marketplaces = sqlx::query_as(
        "WITH waiting AS (
             SELECT split_part(last_error->>'message', ' ', 1) AS marketplace, last_error->>'class' AS class,
                    count(*) AS n
               FROM jobs
              WHERE state = 'available' AND run_at > now()
                AND last_error->>'class' IN ('rate_limited', 'circuit_open')
              GROUP BY 1, 2)
         SELECT m.marketplace, coalesce(c.state, 'closed') AS circuit, coalesce(c.failures, 0) AS failures,
                c.opened_at, CASE WHEN c.state <> 'closed' THEN c.next_probe_at END AS next_probe_at, c.last_error,
                coalesce((SELECT n FROM waiting w WHERE w.marketplace = m.marketplace AND w.class = 'rate_limited'), 0) AS jobs_waiting_on_limit,
                coalesce((SELECT n FROM waiting w WHERE w.marketplace = m.marketplace AND w.class = 'circuit_open'), 0) AS jobs_waiting_on_circuit
           FROM unnest(ARRAY['ebay', 'etsy', 'vinted']) AS m(marketplace)
           LEFT JOIN circuit_breakers c ON c.marketplace = m.marketplace
          ORDER BY m.marketplace",
    )
    .fetch_all(pool)
    .await?;
    Ok(LimitsView { keys, marketplaces })
}

/// eBay's API family of a path (daily limits are per API).
fn ebay_api(path: &str) -> &str {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some("sell" | "commerce" | "buy"), Some(api)) => api,
        (Some("identity"), _) => "identity",
        _ => "other",
    }
}

/// Every marketplace request passes the limiter ([`marketplaces::http::send`]).
impl Gate for Limits {
    fn admit<'a>(
        &'a self,
        m: Marketplace,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Ticket, MarketplaceError>> {
        Box::pin(async move {
            let adm = Limits::admit(self, m, path).await?;
            Ok(Ticket(Box::new(adm)))
        })
    }

    fn report<'a>(
        &'a self,
        ticket: &'a Ticket,
        seen: &'a Result<HeaderMap, MarketplaceError>,
    ) -> BoxFuture<'a, Option<MarketplaceError>> {
        Box::pin(async move {
            // Every ticket this gate reads is one it issued.
            let adm = ticket.0.downcast_ref::<Admission>()?;
            Limits::report(self, adm, seen).await
        })
    }

    fn jittered(&self, d: Duration) -> Duration {
        Limits::jittered(self, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    fn limits() -> Limits {
        let s = Settings::defaults();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/none")
            .expect("lazy pool");
        Limits::new(
            pool,
            &s.limits,
            &s.marketplaces.etsy.keystring,
            &s.marketplaces.ebay.client_id,
        )
    }

    #[tokio::test]
    async fn keys_follow_marketplace_rules() {
        let l = limits();
        let etsy = l.budgets(Marketplace::Etsy, "/v3/application/shops/1/listings", None);
        assert_eq!(etsy.len(), 1);
        assert_eq!(etsy[0].key, "etsy:app:1aa2bb33cc44dd55ee66ff77");
        assert!((etsy[0].per_second - 9.2).abs() < 1e-9);
        assert_eq!(etsy[0].per_window, 10_000);
        assert!(
            l.budgets(Marketplace::Etsy, "/v3/public/oauth/token", None)
                .is_empty()
        );
        let ebay = l.budgets(Marketplace::Ebay, "/sell/inventory/v1/offer", None);
        assert_eq!(
            ebay[0].key,
            "ebay:app:StoflowS-Sim-PRD-5a1b2c3d4-0e1f2a3b:inventory"
        );
        assert_eq!(ebay[0].per_window, 2_000_000);
        assert_eq!(ebay_api("/identity/v1/oauth2/token"), "identity");
        assert_eq!(ebay_api("/sell/fulfillment/v1/order"), "fulfillment");
        let v = l.budgets(Marketplace::Vinted, "/api/v2/item_upload/items", Some(7));
        assert_eq!(v[0].key, "vinted:seller:7");
        assert_eq!(v[0].window_ms, 3_600_000);
    }

    #[tokio::test]
    async fn seller_budget_comes_first_when_configured() {
        let mut s = Settings::defaults();
        s.limits.etsy.seller_per_second = 2.0;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/none")
            .expect("lazy pool");
        let l = Limits::new(
            pool,
            &s.limits,
            &s.marketplaces.etsy.keystring,
            &s.marketplaces.ebay.client_id,
        );
        let b = l.budgets(Marketplace::Etsy, "/v3/application/x", Some(3));
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].key, "etsy:seller:3");
        assert!(b[1].key.starts_with("etsy:app:"));
    }

    #[tokio::test]
    async fn jitter_only_adds_and_is_bounded() {
        let l = limits();
        for _ in 0..200 {
            let d = l.jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(11),
                "{d:?}"
            );
            let d = l.jittered(Duration::from_secs(3600));
            assert!(
                d >= Duration::from_secs(3600) && d <= Duration::from_secs(3960),
                "{d:?}"
            );
        }
    }
}
