//! What the engine reads: the database, the worker process, retention, logs, traces and per-kind
//! policy overrides. An application embeds these sections in its own settings (Stoflow's
//! `[database]`, `[worker]`, `[retention]`, `[log]`, `[telemetry]`, `[kinds.*]`) and hands the
//! engine a [`Settings`] built from them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A setting the engine refuses, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {key}: {message}")]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: &str) -> Result<(), Invalid> {
    Err(Invalid {
        key: key.into(),
        message: message.into(),
    })
}

/// A string that never prints (database URLs carry passwords).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Everything the engine reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    pub retention: RetentionSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub kinds: BTreeMap<String, PolicyOverride>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// The kinds this process consumes; empty: every kind registered.
    pub kinds: Vec<String>,
    pub heartbeat_ms: u64,
    pub lease_timeout_ms: u64,
    pub poll_interval_ms: u64,
    pub claim_batch: usize,
    pub ack_batch: usize,
    pub shutdown_timeout_ms: u64,
    pub metrics_bind: String,
}

impl WorkerSettings {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
    pub fn lease_timeout(&self) -> Duration {
        Duration::from_millis(self.lease_timeout_ms)
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub done_hours: u32,
    pub dead_hours: u32,
    pub cancelled_hours: u32,
    pub prune_batch: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// "text" or "json" (one JSON object per line).
    pub format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP base URL traces are exported to (`/v1/traces` is appended); empty: no export
    /// unless the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub otlp_endpoint: String,
}

/// Per-kind override of a kind's declared [`crate::Policy`]; unset fields keep the declaration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    pub concurrency: Option<usize>,
    pub max_attempts: Option<i32>,
    pub timeout_ms: Option<u64>,
    pub backoff_base_ms: Option<u64>,
    /// Growth per attempt of the backoff ceiling (2 = doubling).
    pub backoff_factor: Option<f64>,
    pub backoff_cap_ms: Option<u64>,
}

impl Settings {
    /// The engine's defaults on the database at `url` (Stoflow's `config.default.toml` holds the
    /// same values): 5 s heartbeats, 30 s leases, 500 ms polls as a fallback to LISTEN, claims
    /// and acks of up to 1,000 rows, 30 s to finish in-flight jobs at shutdown, finished jobs kept
    /// a week (dead ones 30 days), no metrics listener, text logs, no trace export.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            database: DatabaseSettings {
                url: Secret::new(url),
                max_connections: 16,
            },
            worker: WorkerSettings {
                kinds: vec![],
                heartbeat_ms: 5_000,
                lease_timeout_ms: 30_000,
                poll_interval_ms: 500,
                claim_batch: 1_000,
                ack_batch: 1_000,
                shutdown_timeout_ms: 30_000,
                metrics_bind: String::new(),
            },
            retention: RetentionSettings {
                done_hours: 168,
                dead_hours: 720,
                cancelled_hours: 168,
                prune_batch: 10_000,
            },
            log: LogSettings {
                format: "text".into(),
            },
            telemetry: TelemetrySettings {
                otlp_endpoint: String::new(),
            },
            kinds: BTreeMap::new(),
        }
    }

    /// Checks every value the engine reads (kind names apart: [`Settings::check_kinds`]).
    pub fn validate(&self) -> Result<(), Invalid> {
        let w = &self.worker;
        if w.heartbeat_ms == 0 {
            return bad("worker.heartbeat_ms", "must be > 0");
        }
        if w.lease_timeout_ms < 2 * w.heartbeat_ms {
            return bad(
                "worker.lease_timeout_ms",
                "must be at least twice worker.heartbeat_ms, or live workers would be declared dead",
            );
        }
        if w.poll_interval_ms == 0 {
            return bad("worker.poll_interval_ms", "must be > 0");
        }
        if w.claim_batch == 0 || w.ack_batch == 0 {
            return bad("worker.claim_batch/ack_batch", "must be > 0");
        }
        for (k, o) in &self.kinds {
            if o.concurrency == Some(0) {
                return bad(&format!("kinds.{k}.concurrency"), "must be > 0");
            }
            if o.max_attempts.is_some_and(|m| m < 1) {
                return bad(&format!("kinds.{k}.max_attempts"), "must be >= 1");
            }
            if o.timeout_ms == Some(0) {
                return bad(&format!("kinds.{k}.timeout_ms"), "must be > 0");
            }
            if o.backoff_factor.is_some_and(|f| !(1.0..=10.0).contains(&f)) {
                return bad(
                    &format!("kinds.{k}.backoff_factor"),
                    "must be within 1..=10",
                );
            }
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return bad("log.format", "must be \"text\" or \"json\"");
        }
        let otlp = &self.telemetry.otlp_endpoint;
        if !otlp.is_empty() && !otlp.starts_with("http://") && !otlp.starts_with("https://") {
            return bad(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            );
        }
        if self.database.max_connections < 2 {
            return bad("database.max_connections", "must be >= 2");
        }
        Ok(())
    }

    /// Every kind named in `worker.kinds` or `kinds.*` is one of `known_kinds` (the kinds the
    /// application declares): a typo would otherwise consume nothing or override nothing.
    pub fn check_kinds(&self, known_kinds: &[&str]) -> Result<(), Invalid> {
        for k in &self.worker.kinds {
            if !known_kinds.contains(&k.as_str()) {
                return bad(
                    "worker.kinds",
                    &format!("unknown kind {k:?}; known: {known_kinds:?}"),
                );
            }
        }
        for k in self.kinds.keys() {
            if !known_kinds.contains(&k.as_str()) {
                return bad(
                    &format!("kinds.{k}"),
                    &format!("unknown kind; known: {known_kinds:?}"),
                );
            }
        }
        Ok(())
    }

    /// The database URL, or an error telling the user how to get one.
    pub fn database_url(&self) -> Result<&str, Invalid> {
        if self.database.url.is_empty() {
            return Err(Invalid {
                key: "database.url".into(),
                message: "not set: export DATABASE_URL (a postgres:// URL)".into(),
            });
        }
        Ok(self.database.url.expose())
    }

    /// Whether this process consumes `kind`.
    pub fn consumes(&self, kind: &str) -> bool {
        self.worker.kinds.is_empty() || self.worker.kinds.iter().any(|k| k == kind)
    }
}
