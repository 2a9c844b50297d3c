//! Sliding-window counters: Etsy's per-second and per-day limits per app key, and eBay's
//! daily call quota. The second window uses real time (clients really wait); the day window
//! uses the simulator clock so tests can jump past it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub per_second: u32,
    pub remaining_second: u32,
    pub per_day: u32,
    pub remaining_day: u32,
    /// Seconds until a request would be accepted again; 0 when allowed.
    pub retry_after: u64,
}

#[derive(Debug)]
pub struct Window {
    pub per_second: u32,
    pub per_day: u32,
    /// Length of the "day" window (a day; tests shorten it to see a quota come back).
    day_len: chrono::Duration,
    second: VecDeque<Instant>,
    day: VecDeque<DateTime<Utc>>,
}

impl Window {
    pub fn new(per_second: u32, per_day: u32) -> Self {
        Self {
            per_second,
            per_day,
            day_len: chrono::Duration::days(1),
            second: VecDeque::new(),
            day: VecDeque::new(),
        }
    }

    /// The same limits with a shorter (or longer) day window.
    pub fn with_day_secs(mut self, secs: u64) -> Self {
        self.day_len = chrono::Duration::seconds(secs.max(1) as i64);
        self
    }

    /// Counts one request if both windows have room. Per-second is checked first, as Etsy does.
    pub fn take(&mut self, now: DateTime<Utc>) -> Verdict {
        let real = Instant::now();
        while self
            .second
            .front()
            .is_some_and(|t| real.duration_since(*t) >= Duration::from_secs(1))
        {
            self.second.pop_front();
        }
        while self.day.front().is_some_and(|t| now - *t >= self.day_len) {
            self.day.pop_front();
        }
        let used_s = self.second.len() as u32;
        let used_d = self.day.len() as u32;
        let mut v = Verdict {
            allowed: false,
            per_second: self.per_second,
            remaining_second: self.per_second.saturating_sub(used_s),
            per_day: self.per_day,
            remaining_day: self.per_day.saturating_sub(used_d),
            retry_after: 0,
        };
        if used_s >= self.per_second {
            v.retry_after = 1;
            return v;
        }
        if used_d >= self.per_day {
            let oldest = self.day.front().copied().unwrap_or(now);
            let wait = (oldest + self.day_len - now).num_seconds();
            v.retry_after = wait.max(1) as u64;
            return v;
        }
        self.second.push_back(real);
        self.day.push_back(now);
        v.allowed = true;
        v.remaining_second -= 1;
        v.remaining_day -= 1;
        v
    }
}

/// eBay's quota: a number of calls per calendar day (UTC here), after which every call gets
/// 429 errorId 2001 until the day turns.
#[derive(Debug)]
pub struct DailyQuota {
    pub limit: u64,
    day: chrono::NaiveDate,
    used: u64,
}

impl DailyQuota {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            day: chrono::NaiveDate::MIN,
            used: 0,
        }
    }

    pub fn take(&mut self, now: DateTime<Utc>) -> bool {
        if now.date_naive() != self.day {
            self.day = now.date_naive();
            self.used = 0;
        }
        if self.used >= self.limit {
            return false;
        }
        self.used += 1;
        true
    }

    pub fn reset(&mut self, limit: u64) {
        self.limit = limit;
        self.used = 0;
    }
}
