//! What a job kind is: its stable name, its policy, its handler, and the three outcomes a handler
//! can ask for (River's retry / snooze / cancel, Oban's `{:error, _}` / `{:snooze, _}` / `{:cancel, _}`).

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::settings::PolicyOverride;

/// The stable wire name of a kind, written once per kind (Stoflow: only by its `job_kinds!`).
pub trait Kind {
    const KIND: &'static str;
}

/// How the queue treats a kind. Declared with the kind; `[kinds.<kind>]` in config may override.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Runs (counting the first) before a failing job is dead.
    pub max_attempts: i32,
    /// A run longer than this is a retryable failure.
    pub timeout: Duration,
    /// Jobs of this kind one worker process runs at once.
    pub concurrency: usize,
    /// Full-jitter exponential backoff: delay ∈ [0, min(cap, base · factor^(attempt-1))].
    pub backoff_base: Duration,
    pub backoff_factor: f64,
    pub backoff_cap: Duration,
}

impl Policy {
    pub const fn new(max_attempts: i32, timeout_s: u64, concurrency: usize) -> Self {
        Self {
            max_attempts,
            timeout: Duration::from_secs(timeout_s),
            concurrency,
            backoff_base: Duration::from_secs(1),
            backoff_factor: 2.0,
            backoff_cap: Duration::from_secs(3600),
        }
    }

    pub const fn backoff(mut self, base_ms: u64, cap_s: u64) -> Self {
        self.backoff_base = Duration::from_millis(base_ms);
        self.backoff_cap = Duration::from_secs(cap_s);
        self
    }

    /// This policy with the config overrides for `kind` (`[kinds.<kind>]`) applied.
    pub fn resolved(
        self,
        kind: &str,
        overrides: &std::collections::BTreeMap<String, PolicyOverride>,
    ) -> Self {
        let Some(o) = overrides.get(kind) else {
            return self;
        };
        Self {
            max_attempts: o.max_attempts.unwrap_or(self.max_attempts),
            timeout: o
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(self.timeout),
            concurrency: o.concurrency.unwrap_or(self.concurrency),
            backoff_base: o
                .backoff_base_ms
                .map(Duration::from_millis)
                .unwrap_or(self.backoff_base),
            backoff_factor: o.backoff_factor.unwrap_or(self.backoff_factor),
            backoff_cap: o
                .backoff_cap_ms
                .map(Duration::from_millis)
                .unwrap_or(self.backoff_cap),
        }
    }

    /// Delay before the run after failed attempt `attempt` (1-based), with full jitter.
    pub fn backoff_after(&self, attempt: i32) -> Duration {
        let exp = (attempt.max(1) - 1).min(60);
        let grown = self.backoff_base.as_secs_f64() * self.backoff_factor.max(1.0).powi(exp);
        let ceiling = Duration::try_from_secs_f64(grown)
            .unwrap_or(Duration::MAX)
            .min(self.backoff_cap);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(if ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=ms)
        })
    }
}

/// What a handler tells the queue when it does not succeed. `class` names the cause for people
/// (dashboard, `last_error.class`); the variant decides what the queue does.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Transient: run again after backoff; consumes an attempt; dead once attempts run out.
    #[error("{message}")]
    Retry {
        class: Cow<'static, str>,
        message: String,
    },
    /// Not now: run again after `after`, without consuming an attempt (rate limits, locks).
    #[error("{message}")]
    Snooze {
        after: Duration,
        class: Cow<'static, str>,
        message: String,
    },
    /// Will never succeed: dead at once, reason kept.
    #[error("{message}")]
    Permanent {
        class: Cow<'static, str>,
        message: String,
    },
}

impl JobError {
    pub fn retry(message: impl std::fmt::Display) -> Self {
        Self::Retry {
            class: "retryable".into(),
            message: message.to_string(),
        }
    }
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Self::Permanent {
            class: "permanent".into(),
            message: message.to_string(),
        }
    }
    pub fn snooze(after: Duration, message: impl std::fmt::Display) -> Self {
        Self::Snooze {
            after,
            class: "snoozed".into(),
            message: message.to_string(),
        }
    }
}

/// Our own database failing is transient.
impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        Self::Retry {
            class: "database".into(),
            message: e.to_string(),
        }
    }
}

/// What a kind's handlers reach (a pool, clients, settings): the application's own type,
/// handed to [`crate::backend::register`] once per kind and cloned into every run.
pub trait Context: Clone + Send + Sync + 'static {
    /// Wraps every run of a job, e.g. to set task-local state the handler's calls read. The
    /// default runs it as it is.
    fn scope<F>(&self, run: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send,
    {
        run
    }
}

/// Facts about the run in progress, for handlers that need them.
#[derive(Debug, Clone, Copy)]
pub struct RunInfo {
    pub job_id: i64,
    pub attempt: i32,
    pub max_attempts: i32,
    /// Times this job asked to be run later so far.
    pub snoozes: i32,
}

/// A job kind: its arguments are `Self`; `run` is its handler.
pub trait Job: Kind + Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    const POLICY: Policy;

    /// What the handler reaches.
    type Context: Context;

    /// Checks beyond the schema, run by the API before anything is enqueued.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    fn run(
        self,
        ctx: Self::Context,
        run: RunInfo,
    ) -> impl Future<Output = Result<Value, JobError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_ceiling_and_the_cap() {
        let p = Policy::new(10, 1, 1).backoff(100, 1);
        for attempt in 1..=8 {
            let ceiling = (100u64 << (attempt - 1)).min(1000);
            let mut seen_max = 0;
            for _ in 0..200 {
                let d = p.backoff_after(attempt).as_millis() as u64;
                assert!(d <= ceiling, "attempt {attempt}: {d} > {ceiling}");
                seen_max = seen_max.max(d);
            }
            // Full jitter spreads over the whole range, not just near zero.
            assert!(seen_max > ceiling / 2, "attempt {attempt}: max {seen_max}");
        }
    }

    #[test]
    fn backoff_factor_and_cap_come_from_config() {
        let mut kinds = std::collections::BTreeMap::new();
        kinds.insert(
            "noop".into(),
            PolicyOverride {
                backoff_base_ms: Some(100),
                backoff_factor: Some(3.0),
                backoff_cap_ms: Some(2_000),
                max_attempts: Some(4),
                ..Default::default()
            },
        );
        let p = Policy::new(10, 1, 1).resolved("noop", &kinds);
        assert_eq!(p.max_attempts, 4);
        for (attempt, ceiling) in [(1, 100), (2, 300), (3, 900), (4, 2_000), (9, 2_000)] {
            let max = (0..300)
                .map(|_| p.backoff_after(attempt).as_millis() as u64)
                .max()
                .unwrap();
            assert!(
                max <= ceiling && max > ceiling / 2,
                "attempt {attempt}: {max} vs {ceiling}"
            );
        }
    }
}
