//! Stoflow Jobs core: job kinds and their handlers, the error taxonomy, the Postgres queue that
//! apalis-core workers run on, and the settings every process shares.
//!
//! # Layout
//! - [`job`]: the `Job` trait, policies, `JobError` (retry / snooze / permanent).
//! - [`kinds`]: every kind, one file each, listed once in `job_kinds!`.
//! - [`queue`]: enqueue, read, retry, cancel, stats, retention, wake-up notifier.
//! - [`backend`]: the apalis-core `Backend` over Postgres and its ack middleware.
//! - [`runtime`]: per-process lease/heartbeat, crash rescue, LISTEN, batched acks.
//! - [`db`]: pool and migrations. [`config`]: layered settings.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod catalogue;
pub mod coalesce;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod domain;
pub mod extension;
pub mod images;
pub mod job;
pub mod kinds;
pub mod limits;
pub mod listings;
pub mod marketplace;
pub mod metrics;
pub mod money;
pub mod orders;
pub mod plugin;
pub mod publishing;
pub mod queue;
pub mod runtime;
pub mod secrets;
pub mod seller_settings;
pub mod telemetry;
pub mod vinted_sales;
pub mod webhooks;

pub use config::Settings;
pub use job::{Job, JobContext, JobError, Kind, Policy, RunInfo};

/// Resolves on SIGTERM (process managers) or SIGINT (Ctrl-C). The handlers are installed when
/// this is called, not when the future is first polled, so call it first thing: a signal that
/// arrives during start-up is then kept for the shutdown path instead of killing the process.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
