//! The simulators' clock: real time plus an offset that tests move forward through the admin
//! API, so token expiry, order dates and Etsy's year-dependent `when_made` values can be
//! exercised without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::seconds(self.offset_secs.load(Ordering::Relaxed))
    }

    /// Moves the clock forward (or back, with a negative value) and returns the new time.
    pub fn advance(&self, secs: i64) -> DateTime<Utc> {
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
        self.now()
    }
}

/// eBay and Etsy both write timestamps with milliseconds and a `Z`.
pub fn iso_ms(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
