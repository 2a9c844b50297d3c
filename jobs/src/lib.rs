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

pub mod backend;
pub mod catalogue;
pub mod config;
pub mod db;
pub mod domain;
pub mod job;
pub mod kinds;
pub mod marketplace;
pub mod queue;
pub mod runtime;
pub mod telemetry;

pub use config::Settings;
pub use job::{Job, JobContext, JobError, Kind, Policy, RunInfo};

/// Resolves on SIGTERM (process managers) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
