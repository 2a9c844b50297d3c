//! Fault injection, set through `POST /_admin/faults`: the next N requests fail with a chosen
//! status, get a 429 with a chosen retry-after, or lose their connection; every request can be
//! delayed. Each simulator renders failures in its marketplace's own error shape.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer the next N matching requests with `fail_status`.
    pub fail_next: u32,
    /// Status for `fail_next` (default 500).
    pub fail_status: Option<u16>,
    /// eBay only: the errorId in the injected error (default 25001; 25025 is the retryable
    /// "concurrent access" error).
    pub error_id: Option<u64>,
    /// Close the connection without a response for the next N matching requests.
    pub drop_next: u32,
    /// Answer the next N matching requests with 429 and `retry_after`.
    pub throttle_next: u32,
    pub retry_after: Option<u64>,
    /// Delay added before every matching request is handled.
    pub latency_ms: u64,
    /// Only requests whose path starts with this prefix are affected.
    pub path_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Drop,
    Fail { status: u16, error_id: Option<u64> },
    Throttle { retry_after: u64 },
}

impl Faults {
    /// Decides what happens to one request, consuming one unit of the matching fault.
    /// Drops come first, then failures, then throttling, so combined settings are predictable.
    pub fn next(&mut self, path: &str) -> (u64, Option<Injected>) {
        if self
            .path_prefix
            .as_deref()
            .is_some_and(|p| !path.starts_with(p))
        {
            return (0, None);
        }
        let injected = if self.drop_next > 0 {
            self.drop_next -= 1;
            Some(Injected::Drop)
        } else if self.fail_next > 0 {
            self.fail_next -= 1;
            Some(Injected::Fail {
                status: self.fail_status.unwrap_or(500),
                error_id: self.error_id,
            })
        } else if self.throttle_next > 0 {
            self.throttle_next -= 1;
            Some(Injected::Throttle {
                retry_after: self.retry_after.unwrap_or(1),
            })
        } else {
            None
        };
        (self.latency_ms, injected)
    }
}
