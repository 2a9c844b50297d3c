//! A durable job queue on Postgres that apalis-core workers run on.
//!
//! Declare a kind (a serde type implementing [`Job`], named once with [`Kind`]), insert it with
//! [`queue::insert`], and run a worker process: a [`runtime::Runtime`] (lease, heartbeat, crash
//! rescue, LISTEN, batched acks) and one [`backend::register`] per kind on an apalis
//! `Monitor`. The engine knows nothing of what the jobs do: a job's owner is an opaque id, its
//! handler gets the context the application hands [`backend::register`].
//!
//! # Layout
//! - [`job`]: the `Job` trait, policies, `JobError` (retry / snooze / permanent).
//! - [`queue`]: enqueue, read, retry, cancel, stats, retention, wake-up notifier.
//! - [`backend`]: the apalis-core `Backend` over Postgres and its ack middleware.
//! - [`runtime`]: per-process lease/heartbeat, crash rescue, LISTEN, batched acks.
//! - [`coalesce`]: many concurrent single enqueues folded into one INSERT.
//! - [`db`]: pool and the engine's migrations. [`settings`]: what the engine reads.
//! - [`metrics`]: Prometheus counters and histograms. [`telemetry`]: logs and OTLP traces.

pub mod backend;
pub mod coalesce;
pub mod db;
pub mod job;
pub mod metrics;
pub mod queue;
pub mod runtime;
pub mod settings;
pub mod telemetry;

pub use job::{Context, Job, JobError, Kind, Policy, RunInfo};
pub use settings::Settings;

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
