//! Per-key request budgets kept in this process: each user's requests, and logins per client
//! address and per (e-mail, address), against password guessing.

use std::num::NonZeroU32;
use std::time::Instant;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Per-key request budgets (users after login; e-mails at login, against password guessing).
pub struct Limiters {
    pub users: DefaultKeyedRateLimiter<i64>,
    /// Login attempts per client address, whatever the e-mail (one client trying many e-mails).
    pub login_clients: DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Failed logins per (e-mail, client address).
    pub login_failures: LoginFailures,
}

impl Limiters {
    pub fn new(per_s: u32, burst: u32, logins_per_client_per_min: u32) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("max(1) is non-zero");
        let per_client = nz(logins_per_client_per_min);
        Self {
            users: RateLimiter::keyed(Quota::per_second(nz(per_s)).allow_burst(nz(burst))),
            login_clients: RateLimiter::keyed(
                Quota::per_minute(per_client).allow_burst(per_client),
            ),
            login_failures: LoginFailures::default(),
        }
    }
}

/// Growing delays after failed logins, per (e-mail, client address): an attacker's failures hold
/// up the attacker's address only, never the owner typing the right password elsewhere (a lock
/// per e-mail let anyone lock any seller out).
#[derive(Default)]
pub struct LoginFailures {
    seen: std::sync::Mutex<std::collections::HashMap<(String, std::net::IpAddr), (u32, Instant)>>,
}

impl LoginFailures {
    /// Failures allowed before delays start.
    const FREE: u32 = 5;
    const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(900);
    /// Entries kept at most; the oldest quiet ones go first.
    const KEEP: usize = 100_000;

    fn wait_after(failures: u32) -> std::time::Duration {
        if failures < Self::FREE {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_secs(1u64 << (failures - Self::FREE).min(10)).min(Self::MAX_WAIT)
    }

    /// How long this pair must still wait before its next attempt (zero: go ahead).
    pub fn wait(&self, email: &str, ip: std::net::IpAddr) -> std::time::Duration {
        let seen = self.seen.lock().expect("login failures lock");
        match seen.get(&(email.to_string(), ip)) {
            Some((n, last)) => Self::wait_after(*n).saturating_sub(last.elapsed()),
            None => std::time::Duration::ZERO,
        }
    }

    pub fn failed(&self, email: &str, ip: std::net::IpAddr) {
        let mut seen = self.seen.lock().expect("login failures lock");
        if seen.len() >= Self::KEEP {
            let hour = std::time::Duration::from_secs(3600);
            seen.retain(|_, (_, last)| last.elapsed() < hour);
        }
        let e = seen
            .entry((email.to_string(), ip))
            .or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now();
    }

    pub fn succeeded(&self, email: &str, ip: std::net::IpAddr) {
        self.seen
            .lock()
            .expect("login failures lock")
            .remove(&(email.to_string(), ip));
    }
}
