//! `noop`: the diagnostic kind for health checks, tests and benchmarks. It can sleep and fail on
//! purpose in each way the queue must handle, so every queue path can be exercised without a
//! marketplace.

use serde::{Deserialize, Serialize};

use super::owned::{Owned, Owns};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum NoopFailure {
    #[default]
    None,
    /// A transient error: backoff, then run again.
    Retryable,
    /// A permanent error: dead at once.
    Permanent,
    /// A panic in the handler.
    Panic,
    /// Ask to be run again later without consuming an attempt.
    Snooze,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct Noop {
    /// Sleep this long before finishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(validator(maximum(value = "3600000"))))]
    pub sleep_ms: Option<u64>,
    /// How to fail, if at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<NoopFailure>,
    /// Fail only on attempts 1..=fail_attempts (snooze: on the first fail_attempts runs), then
    /// succeed. Unset: fail every time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(validator(maximum(value = "1000"))))]
    pub fail_attempts: Option<i32>,
    /// Calls Etsy's `openapi-ping` this many times (through the fleet-wide limiter) before
    /// finishing: load for rate-limit tests and benchmarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(validator(maximum(value = "100"))))]
    pub etsy_pings: Option<u32>,
    /// With `fail = snooze`: how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(validator(maximum(value = "86400000"))))]
    pub snooze_ms: Option<u64>,
}

impl Owns for Noop {
    const IDS: &'static [(&'static str, Owned)] = &[];
}
