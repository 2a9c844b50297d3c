//! Stoflow's business on the queue engine (`engine`): the seller domain (catalogue, accounts,
//! listings, orders, the browser extension's tasks, auth, secrets, audit), the marketplace
//! clients and the job kinds, with the settings every Stoflow process shares.
//!
//! # Layout
//! - [`kinds`]: every kind, one file each, listed once in `job_kinds!`.
//! - [`context`]: what every handler reaches. [`config`]: layered settings.
//! - [`limits`]: the marketplace clients' (crate `marketplaces`) fleet-wide budgets.
//! - [`db`]: pools and the migrator over the engine's tables and ours.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod context;
pub mod dashboard;
pub mod db;
pub mod extension;
pub mod handlers;
pub mod images;
pub mod kinds;
pub mod limits;
pub mod listings;
pub mod money;
pub mod orders;
pub mod plugin;
pub mod publishing;
pub mod secrets;
pub mod seller_settings;
pub mod vinted_sales;
pub mod webhooks;

pub use config::Settings;
pub use context::JobContext;

/// Logging and traces for a Stoflow process named `service`, from the settings as far as they
/// load (a bad config is reported by the caller's own load, after logging is up).
pub fn init_telemetry(service: &'static str) -> engine::telemetry::Telemetry {
    let settings = Settings::load(kinds::ALL_KINDS).ok();
    let json = match std::env::var("STOFLOW_LOG_FORMAT") {
        Ok(v) => v == "json",
        Err(_) => settings.as_ref().is_some_and(|s| s.log.format == "json"),
    };
    let otlp = settings.map(|s| s.telemetry.otlp_endpoint);
    engine::telemetry::init(service, json, otlp.as_deref())
}

/// This process's counters and histograms: the engine's, the limiter's and the marketplace
/// clients' families (each registry declares its own once), then process health. OpenMetrics
/// text without the closing `# EOF` (`engine::metrics::finish`), so gauges may follow.
pub fn render_metrics() -> String {
    let mut out = engine::metrics::global().render();
    out.push_str(&limits::metrics().render());
    out.push_str(&marketplaces::http::metrics().render());
    engine::metrics::render_process(&mut out);
    out
}
