//! Typed, layered settings shared by the API, the worker and the scheduler.
//!
//! Layers, later wins: `config.default.toml` (embedded, every key commented) → the file named by
//! `STOFLOW_CONFIG` (default `./stoflow.toml` when present) → `STOFLOW_<SECTION>__<KEY>` env vars
//! → `DATABASE_URL`. [`Settings::load`] validates the result so a bad value stops the process at
//! boot with a message naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use crate::auth::AuthSettings;
pub use crate::images::ImageSettings;
pub use crate::limits::{CircuitSettings, EbayLimits, EtsyLimits, LimitSettings, VintedLimits};
pub use crate::secrets::SecuritySettings;
pub use engine::settings::{
    DatabaseSettings, LogSettings, PolicyOverride, RetentionSettings, Secret, TelemetrySettings,
    WorkerSettings,
};
pub use marketplaces::ebay::EbaySettings;
pub use marketplaces::etsy::EtsySettings;

const DEFAULTS: &str = include_str!("../config.default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration: {key}: {message}")]
    Invalid { key: String, message: String },
}

impl From<engine::settings::Invalid> for ConfigError {
    fn from(e: engine::settings::Invalid) -> Self {
        Self::Invalid {
            key: e.key,
            message: e.message,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub api: ApiSettings,
    pub worker: WorkerSettings,
    pub retention: RetentionSettings,
    pub scheduler: SchedulerSettings,
    pub marketplaces: MarketplaceSettings,
    pub security: SecuritySettings,
    pub plugin: PluginSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub currency: CurrencySettings,
    #[serde(default)]
    pub kinds: BTreeMap<String, PolicyOverride>,
}

/// Exchange rates for sellers who chose to convert prices into a shop's currency.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencySettings {
    /// `FROM_TO` → units of TO per unit of FROM, e.g. `EUR_USD = 1.08` (the inverse direction
    /// is derived when only one is given). Keys are read case-insensitively (env vars arrive
    /// lower-cased).
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub bind: String,
    pub body_limit_bytes: usize,
    pub batch_max: usize,
    pub list_max: u32,
    /// Origins allowed by CORS ("*" for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Requests per second each user may make (sustained), and the burst above it.
    pub user_rate_per_s: u32,
    pub user_rate_burst: u32,
    /// How long a request waits for a database connection before it answers 503.
    pub db_acquire_timeout_ms: u64,
    /// A request's head must arrive within this (from the connection's start or the request's
    /// first byte), its body within `body_timeout_ms` after the head; an idle keep-alive
    /// connection is closed after `idle_timeout_ms`.
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// Open connections one client address may hold.
    pub max_connections_per_client: usize,
    /// Login attempts one client address may make per minute (any e-mail).
    pub login_per_client_per_min: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    pub prune_cron: String,
    /// New Etsy receipts, per connected Etsy account.
    pub etsy_receipts_cron: String,
    /// Updated Etsy listings and low stock, per connected Etsy account.
    pub etsy_listings_cron: String,
    /// eBay order import, per connected eBay account.
    pub ebay_orders_cron: String,
    /// Vinted sales read by the extension (a `sync_sales` plugin task), per connected Vinted account.
    pub vinted_sales_cron: String,
    /// Share (0–1] of the Etsy app's daily calls (`limits.etsy.per_day`) polling may spend.
    pub etsy_poll_share: f64,
    /// Etsy shops with nothing live are polled for receipts at most this often.
    pub etsy_idle_poll_minutes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketplaceSettings {
    pub ebay: EbaySettings,
    pub etsy: EtsySettings,
    pub images: ImageSettings,
    pub vinted: VintedSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VintedSettings {
    pub catalog_id: u64,
    pub package_size_id: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    pub pickup_timeout_ms: u64,
    pub lease_timeout_ms: u64,
    pub max_attempts: i32,
    /// After a failed attempt a task waits before its next lease: exponential from this base,
    /// doubled per attempt up to the cap, with jitter (half fixed, half random).
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Wardrobe and sold-order pages a Vinted sales sync reads at most (Vinted blocks bursts).
    pub sales_max_pages: u32,
}

impl PluginSettings {
    pub fn pickup_timeout(&self) -> Duration {
        Duration::from_millis(self.pickup_timeout_ms)
    }
    pub fn lease_timeout(&self) -> Duration {
        Duration::from_millis(self.lease_timeout_ms)
    }
}

/// Why a start without real keys is refused, and what to set.
const DEV_KEYS_REFUSED: &str = "the published development keys are refused outside development: \
set STOFLOW_SECURITY__TOKEN_KEYS and STOFLOW_SECURITY__ACTIVE_TOKEN_KEY (token encryption) and \
STOFLOW_AUTH__SIGNING_KEYS and STOFLOW_AUTH__ACTIVE_SIGNING_KEY (access tokens) to your own keys \
(README, \"Production settings\"), or STOFLOW_ENV=development for local development only";

impl Settings {
    /// Loads the layers from the process environment and validates them (the kind names in
    /// `worker.kinds` and `kinds.*` too, against `known_kinds`: `jobs::kinds::ALL_KINDS`).
    pub fn load(known_kinds: &[&str]) -> Result<Self, ConfigError> {
        let file = std::env::var("STOFLOW_CONFIG").unwrap_or_else(|_| "stoflow.toml".into());
        let mut fig = Figment::new()
            .merge(Toml::string(DEFAULTS))
            .merge(Toml::file(file))
            .merge(
                Env::prefixed("STOFLOW_")
                    .split("__")
                    // Not settings: read by the tools themselves (worker create-user, stoflow-dev)
                    // or before settings load (LOG_FORMAT: the documented shorthand for log.format).
                    .ignore(&[
                        "CONFIG",
                        "ENV",
                        "NEW_USER_PASSWORD",
                        "DEV_NO_SIM",
                        "LOG_FORMAT",
                    ]),
            );
        if let Ok(env) = std::env::var("STOFLOW_ENV") {
            fig = fig.merge(("security.environment", env));
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            fig = fig.merge(("database.url", url));
        }
        let s = Self::from_figment(fig)?;
        s.engine().check_kinds(known_kinds)?;
        Ok(s)
    }

    /// The defaults alone (tests and tools start from these).
    /// The embedded defaults in development mode (tests, tools): production refuses their keys.
    pub fn defaults() -> Self {
        Self::from_figment(
            Figment::new()
                .merge(Toml::string(DEFAULTS))
                .merge(("security.environment", "development")),
        )
        .expect("embedded defaults are valid")
    }

    /// A setting's published development value, by its key in the embedded defaults.
    fn published<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
        Figment::new()
            .merge(Toml::string(DEFAULTS))
            .extract_inner(key)
            .ok()
    }

    fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let s: Settings = fig.extract().map_err(Box::new)?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &str, message: &str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        }
        self.engine().validate()?;
        for (pair, rate) in &self.currency.rates {
            let ok = pair.len() == 7
                && pair.as_bytes()[3] == b'_'
                && pair
                    .chars()
                    .filter(|c| *c != '_')
                    .all(|c| c.is_ascii_alphabetic());
            if !(ok && rate.is_finite() && *rate > 0.0) {
                return bad(
                    &format!("currency.rates.{pair}"),
                    "must be FROM_TO (ISO 4217 codes, e.g. EUR_USD) with a rate > 0",
                );
            }
        }
        if self.api.batch_max == 0 || self.api.list_max == 0 {
            return bad("api.batch_max/list_max", "must be > 0");
        }
        if let Err(e) = crate::secrets::TokenCipher::new(&self.security) {
            return bad("security.token_keys", &e.to_string());
        }
        if self.plugin.pickup_timeout_ms == 0 || self.plugin.lease_timeout_ms < 1000 {
            return bad(
                "plugin.pickup_timeout_ms/lease_timeout_ms",
                "pickup must be > 0 and a lease at least 1000 ms",
            );
        }
        if self.plugin.backoff_base_ms == 0
            || self.plugin.backoff_cap_ms < self.plugin.backoff_base_ms
        {
            return bad(
                "plugin.backoff_base_ms/backoff_cap_ms",
                "base must be > 0 and the cap at least the base",
            );
        }
        if self.plugin.sales_max_pages < 1 {
            return bad("plugin.sales_max_pages", "must be >= 1");
        }
        for h in &self.marketplaces.images.allow_hosts {
            if crate::images::parse_host_port(h).is_none() {
                return bad(
                    "marketplaces.images.allow_hosts",
                    &format!("{h:?} is not host:port"),
                );
            }
        }
        if self.plugin.max_attempts < 1 {
            return bad("plugin.max_attempts", "must be >= 1");
        }
        let l = &self.limits;
        if !(l.utilisation > 0.0 && l.utilisation <= 1.0) {
            return bad("limits.utilisation", "must be within (0, 1]");
        }
        if l.day_window_ms < 24 {
            return bad("limits.day_window_ms", "must be >= 24");
        }
        if l.circuit.failure_threshold == 0 || l.circuit.open_ms == 0 {
            return bad(
                "limits.circuit",
                "failure_threshold and open_ms must be > 0",
            );
        }
        if l.circuit.max_open_ms < l.circuit.open_ms {
            return bad(
                "limits.circuit.max_open_ms",
                "must be >= limits.circuit.open_ms",
            );
        }
        if l.etsy.per_second < 0.0 || l.etsy.seller_per_second < 0.0 || l.ebay.per_second < 0.0 {
            return bad("limits.*.per_second", "must be >= 0");
        }
        let share = self.scheduler.etsy_poll_share;
        if !(share > 0.0 && share <= 1.0) {
            return bad("scheduler.etsy_poll_share", "must be in (0, 1]");
        }
        if let Err(e) = crate::auth::Signer::new(&self.auth) {
            return bad("auth.signing_keys", &e);
        }
        if self.auth.access_ttl_s == 0 || self.auth.refresh_ttl_s <= self.auth.access_ttl_s {
            return bad(
                "auth.access_ttl_s/refresh_ttl_s",
                "must be > 0, and refresh tokens must outlive access tokens",
            );
        }
        if self.api.user_rate_per_s == 0 || self.api.user_rate_burst == 0 {
            return bad("api.user_rate_per_s/user_rate_burst", "must be > 0");
        }
        if !matches!(
            self.security.environment.as_str(),
            "development" | "production"
        ) {
            return bad(
                "security.environment",
                &format!(
                    "{:?}: expected \"development\" or \"production\"",
                    self.security.environment
                ),
            );
        }
        Ok(())
    }

    /// Refuses, outside development, the keys `config.default.toml` publishes. Called by the
    /// processes that sign or seal with them (api, worker, scheduler, migrate); tools that do
    /// not (create-user) and settings read by tests skip it.
    pub fn check_keys(&self) -> Result<(), ConfigError> {
        let bad = |key: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: DEV_KEYS_REFUSED.into(),
            })
        };
        if self.security.environment == "development" {
            return Ok(());
        }
        let token_keys: Vec<Secret> = Self::published("security.token_keys").unwrap_or_default();
        let signing_keys: Vec<Secret> = Self::published("auth.signing_keys").unwrap_or_default();
        if self
            .security
            .token_keys
            .iter()
            .any(|k| token_keys.contains(k))
        {
            return bad("security.token_keys");
        }
        if self
            .auth
            .signing_keys
            .iter()
            .any(|k| signing_keys.contains(k))
        {
            return bad("auth.signing_keys");
        }
        // Whoever knows a published webhook secret could forge sales and account deletions.
        for (key, value) in [
            (
                "marketplaces.etsy.webhook_secret",
                &self.marketplaces.etsy.webhook_secret,
            ),
            (
                "marketplaces.ebay.notification_verification_token",
                &self.marketplaces.ebay.notification_verification_token,
            ),
        ] {
            if Self::published::<Secret>(key).as_ref() == Some(value) {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    message: "the published development value is refused outside development: set STOFLOW_MARKETPLACES__ETSY__WEBHOOK_SECRET (Etsy's signing secret) and STOFLOW_MARKETPLACES__EBAY__NOTIFICATION_VERIFICATION_TOKEN (yours, as registered with eBay)".into(),
                });
            }
        }
        Ok(())
    }

    /// The database URL, or an error telling the user how to get one.
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        if self.database.url.is_empty() {
            return Err(ConfigError::Invalid {
                key: "database.url".into(),
                message: "not set: export DATABASE_URL, or start the platform with ./run which starts a private Postgres".into(),
            });
        }
        Ok(self.database.url.expose())
    }

    /// Whether this process consumes `kind`.
    pub fn consumes(&self, kind: &str) -> bool {
        self.worker.kinds.is_empty() || self.worker.kinds.iter().any(|k| k == kind)
    }

    /// The engine's sections, for the queue runtime and the pools.
    pub fn engine(&self) -> engine::Settings {
        engine::Settings {
            database: self.database.clone(),
            worker: self.worker.clone(),
            retention: self.retention.clone(),
            log: self.log.clone(),
            telemetry: self.telemetry.clone(),
            kinds: self.kinds.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_secret_is_redacted() {
        let mut s = Settings::defaults();
        s.database.url = Secret::new("postgres://u:hunter2@h/db");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn lease_shorter_than_two_heartbeats_is_rejected() {
        let mut s = Settings::defaults();
        s.worker.lease_timeout_ms = s.worker.heartbeat_ms;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("worker.lease_timeout_ms"), "{e}");
    }

    #[test]
    fn production_refuses_the_development_keys() {
        let mut s = Settings::defaults();
        s.security.environment = "production".into();
        let e = s.check_keys().unwrap_err().to_string();
        assert!(e.contains("security.token_keys"), "{e}");
        s.security.token_keys = vec![Secret::new(
            "prod1:cHJvZHVjdGlvbi1rZXktMzItYnl0ZXMtbG9uZy4uLi4=",
        )];
        s.security.active_token_key = "prod1".into();
        let e = s.check_keys().unwrap_err().to_string();
        assert!(e.contains("auth.signing_keys"), "{e}");
        s.auth.signing_keys = vec![Secret::new(
            "jwt1:cHJvZHVjdGlvbi1qd3Qta2V5LTMyLWJ5dGVzLWxvbmcu",
        )];
        s.auth.active_signing_key = "jwt1".into();
        let e = s.check_keys().unwrap_err().to_string();
        assert!(e.contains("marketplaces.etsy.webhook_secret"), "{e}");
        s.marketplaces.etsy.webhook_secret = Secret::new("whsec_cHJvZHVjdGlvbi1zZWNyZXQ=");
        let e = s.check_keys().unwrap_err().to_string();
        assert!(e.contains("notification_verification_token"), "{e}");
        s.marketplaces.ebay.notification_verification_token =
            Secret::new("production-verification-token-0123456789abcdef");
        s.validate().unwrap();
        s.check_keys().unwrap();
    }

    #[test]
    fn unknown_kind_override_is_rejected() {
        let mut s = Settings::defaults();
        s.kinds.insert("nope".into(), PolicyOverride::default());
        let e = s.engine().check_kinds(&["noop"]).unwrap_err().to_string();
        assert!(e.contains("kinds.nope"), "{e}");
    }

    #[test]
    fn an_otlp_endpoint_without_a_scheme_is_rejected() {
        let mut s = Settings::defaults();
        s.telemetry.otlp_endpoint = "localhost:4318".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("telemetry.otlp_endpoint"), "{e}");
        s.telemetry.otlp_endpoint = "http://localhost:4318".into();
        s.validate().unwrap();
    }

    /// `engine::Settings::new` writes the engine's defaults a second time (for users of the
    /// engine alone): they must stay the ones `config.default.toml` publishes. Only
    /// `metrics_bind` differs on purpose (the engine alone serves no metrics by default).
    #[test]
    fn the_engines_own_defaults_are_the_published_ones() {
        let ours = Settings::defaults().engine();
        let mut theirs = engine::Settings::new("");
        theirs.worker.metrics_bind = ours.worker.metrics_bind.clone();
        assert_eq!(format!("{:?}", theirs.worker), format!("{:?}", ours.worker));
        assert_eq!(
            format!("{:?}", theirs.retention),
            format!("{:?}", ours.retention)
        );
        assert_eq!(format!("{:?}", theirs.log), format!("{:?}", ours.log));
        assert_eq!(
            format!("{:?}", theirs.telemetry),
            format!("{:?}", ours.telemetry)
        );
        assert_eq!(
            theirs.database.max_connections,
            ours.database.max_connections
        );
        assert!(theirs.kinds.is_empty() && ours.kinds.is_empty());
    }
}
